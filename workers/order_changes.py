"""The newest change of each order that a dispatched event carried, for reconciliation.

An event with an order snapshot carries the ``updatedAt`` of the order and of its items, and
an item event carries the item's. The dispatch step keeps the latest of these per order.
Reconciliation compares it with the orders ``GET /orders`` lists: an order changed after the
newest change any event carried is one whose webhook never arrived.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import TypeAdapter
from redis import Redis

from omhooks.settings import Settings
from ordermesh.events import Envelope, Event
from ordermesh.models import Order

__all__ = [
    "RAISE_FUNCTION",
    "RAISE_SCRIPT",
    "data_changed_at",
    "event_changed_at",
    "known_change_key",
    "known_changes",
    "millis",
    "order_changed_at",
    "record_known_change",
    "seconds",
]

logger = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)
# pydantic's parser of times, which the Order and Item models use too. It raises
# ValidationError, a ValueError, for a value that is not a time.
_TIMES = TypeAdapter(list[datetime | None])

# A Lua function for scripts that keep the latest of some times under a key: it raises the
# stored time (milliseconds) to ``value``, never lowers it, and renews the TTL either way.
RAISE_FUNCTION = """
local function raise(key, value, ttl)
    local current = tonumber(redis.call("get", key) or "-1")
    if tonumber(value) > current then
        redis.call("set", key, value, "EX", ttl)
    else
        redis.call("expire", key, ttl)
    end
end
"""

# KEYS: the key. ARGV: a time in milliseconds, TTL in seconds.
RAISE_SCRIPT = RAISE_FUNCTION + "raise(KEYS[1], ARGV[1], ARGV[2])\n"


def _utc(moment: datetime) -> datetime:
    """Return the time with its zone, taking a naive time as UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def seconds(moment: datetime) -> float:
    """Return a time as seconds since the Unix epoch; a naive time is taken as UTC."""
    return _utc(moment).timestamp()


def millis(moment: datetime) -> int:
    """Return a time as whole milliseconds since the Unix epoch; a naive time is taken as UTC."""
    # Integer arithmetic, because a float timestamp times 1000 can round .717 down to .716.
    return (_utc(moment) - _EPOCH) // _MILLISECOND


def _latest(moments: Iterable[datetime | None]) -> datetime | None:
    """Return the latest of the times given, skipping None; a naive time is UTC."""
    return max((_utc(moment) for moment in moments if moment is not None), default=None)


def order_changed_at(order: Order) -> datetime | None:
    """Return when the order last changed: the latest ``updatedAt`` of the order or its items.

    ``createdAt`` counts too, for an order that carries no ``updatedAt``. This is the time
    the sandbox sorts ``GET /orders`` by. Returns None when the order carries no time at all.
    """
    return _latest([order.updated_at, order.created_at, *(item.updated_at for item in order.items)])


def data_changed_at(data: Mapping[str, Any]) -> datetime | None:
    """Return the newest change of its order that an event's ``data`` carries, or None.

    From an order snapshot these are the times ``order_changed_at`` reads; from an item, its
    ``updatedAt``. Only these values are validated, not the whole order, and a value that is
    not a time raises ``ValueError``.
    """
    order = data.get("order")
    if isinstance(order, dict):
        times = [order.get("updatedAt"), order.get("createdAt")]
        items = order.get("items")
        if isinstance(items, list):
            times += [item.get("updatedAt") for item in items if isinstance(item, dict)]
        return _latest(_TIMES.validate_python(times))
    item = data.get("item")
    if isinstance(item, dict):
        return _latest(_TIMES.validate_python([item.get("updatedAt")]))
    return None


def event_changed_at(event: Envelope) -> datetime | None:
    """Return the newest change time an event carries for its order, or None.

    An invalid time is logged, and the event's change is not recorded.
    """
    try:
        return data_changed_at(event.data)
    except ValueError:
        logger.warning(
            "Event %r has an invalid time in its order or item; its change is not recorded.",
            event.id,
            extra={"event_id": event.id},
        )
        return None


def known_change_key(namespace: str, order_id: str) -> str:
    """Return the key of the newest change of the order that an event carried."""
    return f"{namespace}:reconcile:known:{order_id}"


def record_known_change(redis: Redis, settings: Settings, event: Event) -> None:
    """Record the order change an event carries, keeping the newest per order.

    An event without an order, or without any ``updatedAt``, records nothing. The record
    lives as long as the duplicate filter does (``OMHOOKS_DEDUP_TTL_SECONDS``).
    """
    order_id = event.order_id
    changed_at = event_changed_at(event)
    if order_id is None or changed_at is None:
        return
    key = known_change_key(settings.namespace, order_id)
    redis.register_script(RAISE_SCRIPT)(
        keys=[key], args=[millis(changed_at), settings.dedup_ttl_seconds]
    )


def known_changes(redis: Redis, namespace: str, order_ids: Sequence[str]) -> dict[str, int]:
    """Return, for each order with a record, its newest known change in milliseconds."""
    if not order_ids:
        return {}
    values = redis.mget([known_change_key(namespace, order_id) for order_id in order_ids])
    return {
        order_id: int(str(value))
        for order_id, value in zip(order_ids, values, strict=True)
        if value is not None
    }
