"""Ship when ready: one shipment per order and vendor once all its live items are ready."""

from __future__ import annotations

from collections import defaultdict

from omhooks.errors import ConflictError
from ordermesh.events import Event
from ordermesh.models import Item, Order, Shipment

from ..plugin import HandlerContext, handler

__all__ = ["items_to_ship", "ship_when_ready"]

ORDER_EVENTS = (
    "order.created",
    "order.updated",
    "order.status_changed",
    "order.snapshot",
    "order.reconciled",
    "order_item.status_changed",
)


def items_to_ship(
    order: Order, shipments: list[Shipment]
) -> dict[tuple[str, str | None], list[Item]]:
    """Return, per (vendor, facility), the items that make a shipment now.

    A vendor ships when every one of its items that is neither cancelled nor already in a
    shipment is ``ReadyToShip``. A vendor whose items are all cancelled or shipped gets none.
    """
    in_shipment = {item_id for shipment in shipments for item_id in shipment.order_item_ids}
    by_vendor: dict[str | None, list[Item]] = defaultdict(list)
    for item in order.items:
        if item.status != "Cancelled" and item.id not in in_shipment:
            by_vendor[item.vendor_id].append(item)

    ready: dict[tuple[str, str | None], list[Item]] = {}
    for vendor_id, items in by_vendor.items():
        if vendor_id is None or any(item.status != "ReadyToShip" for item in items):
            continue
        for item in items:
            ready.setdefault((vendor_id, item.facility_id), []).append(item)
    return ready


@handler(*ORDER_EVENTS, snapshot=True)
def ship_when_ready(event: Event, ctx: HandlerContext) -> None:
    """Create the shipments that the order's current state calls for.

    It reads the order and its shipments from the API rather than the event, because an
    event can be stale; the worker holds the order's lock, so two runs cannot race.
    """
    order_id = event.order_id
    if order_id is None:
        return
    order = ctx.api.get_order(order_id)
    shipments = ctx.api.list_shipments(order_id)

    for (vendor_id, facility_id), items in items_to_ship(order, shipments).items():
        item_ids = [item.id for item in items]
        try:
            shipment_id = ctx.api.create_shipment(
                order_id,
                vendor_id,
                item_ids,
                facility_id,
                idempotency_key=ctx.idempotency_key(f"shipment:{vendor_id}:{facility_id}"),
            )
        except ConflictError:
            ctx.log.info(
                "Vendor %s of the order already has a shipment for these items.", vendor_id
            )
            continue
        ctx.log.info(
            "Created shipment %s for vendor %s with items %s.", shipment_id, vendor_id, item_ids
        )
