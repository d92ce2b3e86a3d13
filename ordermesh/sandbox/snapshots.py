"""The rules by which order and item snapshots become the sandbox's state.

Webhook events can arrive late and out of order, so a snapshot replaces the stored state only
when it is not older than it, compared by ``updatedAt``: per order for the order's own fields,
per item for each item. A snapshot without ``updatedAt`` always applies. Refunds made through the
API stay recorded, so an item's ``refundedAmount`` never goes down.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

from ordermesh.models import Item, Order

__all__ = ["later_time", "merge_item", "merge_order", "new_id", "utc_now"]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id(prefix: str) -> str:
    """Return a new id like ``evt_01JEZ8Q4M2W7T5Y3B9N6C1D0FA``: a ULID after the prefix.

    The first 10 characters encode the time in milliseconds, so ids sort by creation time.
    """
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = [_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5)]
    return prefix + "".join(chars)


def utc_now() -> datetime:
    """Return the current time in UTC."""
    return datetime.now(UTC)


def later_time(previous: datetime | None) -> datetime:
    """Return now, or just after ``previous`` when the clock is behind it.

    Stored snapshots may carry times ahead of the clock, and a change made through the API must
    still count as newer than the state it changed.
    """
    now = utc_now()
    if previous is None:
        return now
    return max(now, _as_utc(previous) + timedelta(milliseconds=1))


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def _is_older(incoming: datetime | None, stored: datetime | None) -> bool:
    if incoming is None or stored is None:
        return False
    return _as_utc(incoming) < _as_utc(stored)


def merge_item(stored: Item | None, incoming: Item) -> Item:
    """Return the item state after an item snapshot arrives.

    The stored item stays when the snapshot is older. Either way the result's
    ``refundedAmount`` is the larger of the two.
    """
    if stored is None:
        return incoming

    newest = stored if _is_older(incoming.updated_at, stored.updated_at) else incoming
    refunded = max(stored.refunded_amount, incoming.refunded_amount)
    return newest.model_copy(update={"refunded_amount": refunded})


def merge_order(stored: Order | None, incoming: Order) -> Order:
    """Return the order state after an order snapshot arrives.

    An older snapshot leaves the order's own fields as stored and adds its items to the stored
    ones. A snapshot that is not older sets the order's fields and its list of items, and a
    stored item missing from it is dropped. In both cases each item of the snapshot goes through
    ``merge_item``.
    """
    incoming = _with_order_id(incoming)
    if stored is None:
        return incoming

    stored_items = {item.id: item for item in stored.items}
    merged = [merge_item(stored_items.get(item.id), item) for item in incoming.items]
    if not _is_older(incoming.updated_at, stored.updated_at):
        return incoming.model_copy(update={"items": merged})

    merged_by_id = {item.id: item for item in merged}
    updated_stored = [merged_by_id.get(item.id, item) for item in stored.items]
    added = [item for item in merged if item.id not in stored_items]
    return stored.model_copy(update={"items": updated_stored + added})


def _with_order_id(order: Order) -> Order:
    items = [
        item if item.order_id else item.model_copy(update={"order_id": order.id})
        for item in order.items
    ]
    return order.model_copy(update={"items": items})
