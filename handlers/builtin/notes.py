"""Note on hold: add a note to an order put on customer care hold, with the reason."""

from __future__ import annotations

from ordermesh.events import Event

from ..plugin import HandlerContext, handler

__all__ = ["hold_note_text", "note_on_hold"]


def hold_note_text(reason: str | None) -> str:
    """Return the text of the note for an order on hold."""
    if reason:
        return f"Order is on customer care hold: {reason}"
    return "Order is on customer care hold (no reason given)."


@handler("order.customer_care_hold")
def note_on_hold(event: Event, ctx: HandlerContext) -> None:
    """Add a note to the order saying it is on customer care hold and why."""
    order_id = event.order_id
    if order_id is None:
        return
    reason = event.data.get("reason")
    text = hold_note_text(reason if isinstance(reason, str) else None)
    note_id = ctx.api.create_note(order_id, text, idempotency_key=ctx.idempotency_key("note"))
    ctx.log.info("Added note %s about the hold.", note_id)
