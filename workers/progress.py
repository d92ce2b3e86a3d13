"""The newest event each snapshot handler has processed per order.

A handler declared with ``snapshot=True`` reads the order's current state, so once it has
processed an event of an order, an older event of that order has nothing left to tell it.
"""

from __future__ import annotations

from datetime import datetime

from redis import Redis

from .order_changes import RAISE_SCRIPT, millis

__all__ = ["Progress"]


class Progress:
    """Per (handler, order): the ``createdAt`` of the newest event the handler processed.

    Handler runs read and raise it within their start and finish scripts (``workers.runs``);
    the methods here serve replay and tests.
    """

    def __init__(self, redis: Redis, *, namespace: str, ttl_seconds: int) -> None:
        self._redis = redis
        self._namespace = namespace
        self.ttl_seconds = ttl_seconds
        self._advance = redis.register_script(RAISE_SCRIPT)

    def advance(self, handler_name: str, order_id: str, created_at: datetime) -> None:
        """Record that the handler processed an event of the order created at that time."""
        key = self.key(handler_name, order_id)
        self._advance(keys=[key], args=[millis(created_at), self.ttl_seconds])

    def is_stale(self, handler_name: str, order_id: str, created_at: datetime) -> bool:
        """Return True if the handler already processed a newer event of the order."""
        newest = self._redis.get(self.key(handler_name, order_id))
        return newest is not None and int(str(newest)) > millis(created_at)

    def key(self, handler_name: str, order_id: str) -> str:
        """Return the key of the handler's progress on the order."""
        return f"{self._namespace}:processed:{handler_name}:{order_id}"
