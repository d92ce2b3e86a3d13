"""Send the tracking numbers of a shipped shipment to the shop, once per package."""

from __future__ import annotations

from functools import partial
from typing import Any

from handlers import HandlerContext, PermanentError, handler
from ordermesh.events import Event
from ordermesh.models import Package, Shipment

from .outbound import ServiceSettings, post_json

__all__ = ["sync_tracking_to_shop", "tracking_payload"]


def tracking_payload(shipment: Shipment, package: Package) -> dict[str, Any]:
    """Return what the shop's ``POST /orders/{orderId}/tracking`` takes for one package."""
    return {
        "orderId": shipment.order_id,
        "shipmentId": shipment.id,
        "packageId": package.id,
        "carrier": package.carrier,
        "trackingNumber": package.tracking_number,
    }


@handler("shipment.shipped", required_settings=("url",))
def sync_tracking_to_shop(event: Event, ctx: HandlerContext) -> None:
    """POST each package's carrier and tracking number to the shop at ``..._URL``.

    Each package is one ``ctx.once`` step, so when the shop fails on the second package, the
    retry sends only the second one.
    """
    shipment = event.shipment
    if shipment is None or not shipment.order_id:
        raise PermanentError(f"Event {event.id!r} carries no shipment with an order id.")
    shop = ServiceSettings.from_context(ctx)

    for index, package in enumerate(shipment.packages):
        if not package.tracking_number:
            ctx.log.info("Package %r has no tracking number yet; nothing sent.", package.id)
            continue
        step = f"tracking:{package.id or index}"
        send = partial(
            post_json,
            shop,
            f"/orders/{shipment.order_id}/tracking",
            tracking_payload(shipment, package),
            idempotency_key=ctx.idempotency_key(step),
        )
        answer = ctx.once(step, send)
        ctx.log.info("The shop recorded the tracking of package %r as %r.", package.id, answer)
