"""Typed events derived from the difference between two legacy snapshots of one order.

A legacy snapshot carries the whole order and no event type, so the receiver keeps the last
converted order of each order id in Redis and compares the next snapshot with it. Each derived
event id is a hash of the order id, the event type, the item id and the new value, so a
redelivery of a snapshot derives the same ids and the queue drops the repeats.
"""

from __future__ import annotations

import hashlib
from typing import Any

__all__ = [
    "CANCELLED_STATUS",
    "ORDER_CANCELLED",
    "STATUS_CHANGED",
    "TRACKING_ADDED",
    "derive_events",
    "derived_event_id",
    "last_snapshot_key",
]

STATUS_CHANGED = "order_item.status_changed"
TRACKING_ADDED = "order_item.tracking_added"
ORDER_CANCELLED = "order.cancelled"
CANCELLED_STATUS = "Cancelled"


def last_snapshot_key(namespace: str, order_id: str) -> str:
    """Return the Redis key of the last converted order received for ``order_id``."""
    return f"{namespace}:legacy:last:{order_id}"


def derived_event_id(order_id: str, event_type: str, item_id: str, value: str) -> str:
    """Return the id of a derived event: the same inputs always give the same id."""
    parts = "\n".join((order_id, event_type, item_id, value))
    return f"snapd_{hashlib.sha256(parts.encode()).hexdigest()[:32]}"


def derive_events(
    previous: dict[str, Any] | None, order: dict[str, Any], created_at: str
) -> list[dict[str, Any]]:
    """Return the envelopes of the changes from ``previous`` to ``order``, both converted orders.

    Without a previous order nothing is derived, because the earlier state is unknown. Items
    are matched by id, and an item that ``previous`` lacks derives no event.
    """
    if previous is None:
        return []
    order_id: str = order["id"]
    previous_items = {item["id"]: item for item in previous.get("items", [])}
    events: list[dict[str, Any]] = []
    for item in order.get("items", []):
        before = previous_items.get(item["id"])
        if before is None:
            continue
        status = item.get("status")
        if status is not None and status != before.get("status"):
            data = {"orderId": order_id, "item": item, "previousStatus": before.get("status")}
            events.append(
                _envelope(order_id, STATUS_CHANGED, item["id"], str(status), data, created_at)
            )
        tracking_number = item.get("trackingNumber")
        if tracking_number and not before.get("trackingNumber"):
            data = {"orderId": order_id, "item": item, "trackingNumber": tracking_number}
            events.append(
                _envelope(
                    order_id, TRACKING_ADDED, item["id"], str(tracking_number), data, created_at
                )
            )

    if _all_cancelled(order) and not _all_cancelled(previous):
        cancelled_ids = [item["id"] for item in order["items"]]
        data = {"order": order, "cancelledItemIds": cancelled_ids, "reason": "All items cancelled"}
        events.append(_envelope(order_id, ORDER_CANCELLED, "", CANCELLED_STATUS, data, created_at))
    return events


def _all_cancelled(order: dict[str, Any]) -> bool:
    """Return True when the order has items and every one of them is cancelled."""
    items = order.get("items", [])
    return bool(items) and all(item.get("status") == CANCELLED_STATUS for item in items)


def _envelope(
    order_id: str,
    event_type: str,
    item_id: str,
    value: str,
    data: dict[str, Any],
    created_at: str,
) -> dict[str, Any]:
    # NOTE: the id leaves out the previous value, so a change that repeats within
    # OMHOOKS_DEDUP_TTL_SECONDS (A to B, back to A, to B again) is dropped as a redelivery.
    return {
        "id": derived_event_id(order_id, event_type, item_id, value),
        "type": event_type,
        "createdAt": created_at,
        "data": data,
    }
