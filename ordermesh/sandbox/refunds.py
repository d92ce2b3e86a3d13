"""The API's rules for refund requests (``AddRefundModel``), in exact decimal arithmetic."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from ordermesh.models import Order, Refund, RefundLine

from .responses import ApiFailure
from .snapshots import new_id
from .state import SandboxState
from .validation import invalid, pydantic_details, require_amount, require_object

__all__ = ["add_refund"]

REFUND_STATUS = "Pending"


def add_refund(state: SandboxState, order_id: str, body: Any) -> tuple[int, Any]:
    """Record a refund request and add each item line's amount to the item's ``refundedAmount``.

    A line with ``isShippingRefund`` refunds part of the order's shipping price instead, and
    still names an item of the order. Lines may not exceed what is left to refund.
    """
    lines = _parse_lines(order_id, require_object(body))

    with state.lock:
        order = state.order(order_id)
        by_item, shipping = _totals(lines)
        _check_refundable(state, order, lines, by_item, shipping)

        items = [
            item.model_copy(update={"refunded_amount": item.refunded_amount + by_item[item.id]})
            if item.id in by_item
            else item
            for item in order.items
        ]
        state.orders[order_id] = order.model_copy(update={"items": items})
        refunded_shipping = state.shipping_refunded.get(order_id, Decimal(0))
        state.shipping_refunded[order_id] = refunded_shipping + shipping

        refund = Refund(id=new_id("ref_"), order_id=order_id, refunds=lines, status=REFUND_STATUS)
        state.refunds[refund.id] = refund
        state.emit("refund.created", {"refund": refund})

    return 201, {"refundId": refund.id}


def _parse_lines(order_id: str, body: dict[str, Any]) -> list[RefundLine]:
    body_order_id = body.get("orderId")
    if body_order_id is None:
        raise invalid([{"field": "orderId", "message": "Field required."}])
    if body_order_id != order_id:
        message = f"The body's orderId {body_order_id!r} differs from the path's {order_id!r}."
        raise ApiFailure(422, "order_id_mismatch", message, details=[{"field": "orderId"}])

    entries = body.get("refunds")
    if not isinstance(entries, list) or not entries:
        raise invalid([{"field": "refunds", "message": "Must be a non-empty list."}])

    lines = []
    for index, entry in enumerate(entries):
        prefix = f"refunds.{index}."
        if not isinstance(entry, dict):
            raise invalid([{"field": prefix.rstrip("."), "message": "Must be an object."}])
        amount = require_amount(entry.get("amount"), prefix + "amount")
        try:
            lines.append(RefundLine.model_validate({**entry, "amount": amount}))
        except ValidationError as exc:
            raise invalid(pydantic_details(exc, prefix=prefix)) from exc
    return lines


def _totals(lines: list[RefundLine]) -> tuple[dict[str, Decimal], Decimal]:
    by_item: dict[str, Decimal] = defaultdict(Decimal)
    shipping = Decimal(0)
    for line in lines:
        if line.is_shipping_refund:
            shipping += line.amount
        else:
            by_item[line.item_id] += line.amount
    return by_item, shipping


def _check_refundable(
    state: SandboxState,
    order: Order,
    lines: list[RefundLine],
    by_item: dict[str, Decimal],
    shipping: Decimal,
) -> None:
    items = {item.id: item for item in order.items}
    unknown = sorted({line.item_id for line in lines if line.item_id not in items})
    if unknown:
        message = f"Items {', '.join(unknown)} do not belong to order {order.id!r}."
        details = [{"field": "refunds", "itemId": item_id} for item_id in unknown]
        raise ApiFailure(422, "item_not_in_order", message, details=details)

    for item_id, amount in by_item.items():
        refundable = items[item_id].refundable_amount
        if amount > refundable:
            message = f"Item {item_id!r} has {refundable} left to refund, less than {amount}."
            raise _exceeds(message, item_id, amount, refundable)

    shipping_left = order.shipping_price - state.shipping_refunded.get(order.id, Decimal(0))
    if shipping > shipping_left:
        message = f"Order {order.id!r} has {shipping_left} of shipping left to refund."
        raise _exceeds(message, None, shipping, shipping_left)


def _exceeds(
    message: str, item_id: str | None, requested: Decimal, refundable: Decimal
) -> ApiFailure:
    detail = {"itemId": item_id, "requested": requested, "refundable": refundable}
    return ApiFailure(422, "amount_exceeds_refundable", message, details=[detail])
