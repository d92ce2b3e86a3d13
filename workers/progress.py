"""The newest event each snapshot handler has processed per order.

A handler declared with ``snapshot=True`` reads the order's current state, so once it has
processed an event of an order, an older event of that order has nothing left to tell it.
"""

from __future__ import annotations

from datetime import datetime

from redis import Redis

__all__ = ["Progress"]

# KEYS: the watermark. ARGV: the event's createdAt in milliseconds, TTL in seconds.
# Raises the watermark, never lowers it.
_ADVANCE_SCRIPT = """
local current = tonumber(redis.call("get", KEYS[1]) or "-1")
if tonumber(ARGV[1]) > current then
    redis.call("set", KEYS[1], ARGV[1], "EX", ARGV[2])
else
    redis.call("expire", KEYS[1], ARGV[2])
end
"""


def _millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class Progress:
    """Per (handler, order): the ``createdAt`` of the newest event the handler processed."""

    def __init__(self, redis: Redis, *, namespace: str, ttl_seconds: int) -> None:
        self._redis = redis
        self._namespace = namespace
        self._ttl = ttl_seconds
        self._advance = redis.register_script(_ADVANCE_SCRIPT)

    def advance(self, handler_name: str, order_id: str, created_at: datetime) -> None:
        """Record that the handler processed an event of the order created at that time."""
        key = self._key(handler_name, order_id)
        self._advance(keys=[key], args=[_millis(created_at), self._ttl])

    def is_stale(self, handler_name: str, order_id: str, created_at: datetime) -> bool:
        """Return True if the handler already processed a newer event of the order."""
        newest = self._redis.get(self._key(handler_name, order_id))
        return newest is not None and int(str(newest)) > _millis(created_at)

    def _key(self, handler_name: str, order_id: str) -> str:
        return f"{self._namespace}:processed:{handler_name}:{order_id}"
