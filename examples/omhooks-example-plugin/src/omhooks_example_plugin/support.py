"""Open a ticket in the support tool when an order is put on customer care hold."""

from __future__ import annotations

from functools import partial
from typing import Any

from handlers import HandlerContext, PermanentError, RetryPolicy, handler
from ordermesh.events import Event

from .outbound import ServiceSettings, post_json

__all__ = ["SUPPORT_RETRY", "flag_hold_in_support", "ticket_payload"]

# The support tool is the merchant's own and usually back within minutes, so the first retry
# comes after 1 to 2 s. With Dramatiq 2.2's backoff the 12 retries span about 16 to 27 minutes.
SUPPORT_RETRY = RetryPolicy(
    max_retries=12, min_backoff_seconds=1.0, max_backoff_seconds=300.0, time_limit_seconds=30.0
)


def ticket_payload(event: Event, order_id: str) -> dict[str, Any]:
    """Return the ticket the support tool's ``POST /tickets`` takes for an order on hold."""
    order = event.order
    shop_reference = order.external_id if order is not None and order.external_id else order_id
    reason = event.data.get("reason")
    return {
        "subject": f"Order {shop_reference} is on customer care hold",
        "orderId": order_id,
        "reason": reason if isinstance(reason, str) else None,
        "tags": ["ordermesh", "customer-care-hold"],
    }


@handler("order.customer_care_hold", retry=SUPPORT_RETRY, required_settings=("url",))
def flag_hold_in_support(event: Event, ctx: HandlerContext) -> None:
    """Open one support ticket per hold event in the support tool at ``..._URL``."""
    order_id = event.order_id
    if order_id is None:
        raise PermanentError(f"Event {event.id!r} names no order.")
    support = ServiceSettings.from_context(ctx)

    open_ticket = partial(
        post_json,
        support,
        "/tickets",
        ticket_payload(event, order_id),
        idempotency_key=ctx.idempotency_key("ticket"),
    )
    ticket = ctx.once("ticket", open_ticket)
    ctx.log.info("Opened support ticket %r for the hold.", ticket.get("id"))
