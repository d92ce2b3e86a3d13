"""Refund cancelled items, and shipping too when the whole order is cancelled."""

from __future__ import annotations

from ordermesh.events import Event
from ordermesh.models import Order, RefundLine

from ..plugin import HandlerContext, handler

__all__ = ["refund_cancelled_items", "refund_lines"]

REFUND_EVENTS = (
    "order.cancelled",
    "order.updated",
    "order.status_changed",
    "order.snapshot",
    "order.reconciled",
    "order_item.status_changed",
)


def refund_lines(order: Order, *, shipping_refunded: bool) -> list[RefundLine]:
    """Return the refund lines the order's current state calls for.

    Each cancelled item gets its unit price times quantity less what was refunded already.
    A cancelled order also gets its shipping refunded once, on a line carrying the id of the
    order's first item, as ``AddRefundModel`` requires an item id on every line.
    """
    lines = [
        RefundLine(item_id=item.id, amount=item.refundable_amount, reason="Item cancelled")
        for item in order.items
        if item.status == "Cancelled" and item.refundable_amount > 0
    ]
    if (
        order.status == "Cancelled"
        and order.shipping_price > 0
        and order.items
        and not shipping_refunded
    ):
        lines.append(
            RefundLine(
                item_id=order.items[0].id,
                is_shipping_refund=True,
                amount=order.shipping_price,
                reason="Order cancelled",
            )
        )
    return lines


@handler(*REFUND_EVENTS, snapshot=True)
def refund_cancelled_items(event: Event, ctx: HandlerContext) -> None:
    """Add one refund request for what is cancelled and not yet refunded."""
    order_id = event.order_id
    if order_id is None:
        return
    order = ctx.api.get_order(order_id)
    lines = refund_lines(order, shipping_refunded=ctx.recalls(f"shipping:{order_id}"))
    if not lines:
        return

    refund_id = ctx.api.add_refund(order_id, lines, idempotency_key=ctx.idempotency_key("refund"))
    if any(line.is_shipping_refund for line in lines):
        ctx.remember(f"shipping:{order_id}")
    ctx.log.info("Added refund request %s with %d line(s).", refund_id, len(lines))
