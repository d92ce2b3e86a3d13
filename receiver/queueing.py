"""Put an accepted event on the dispatch queue once, in one atomic round trip to Redis."""

from __future__ import annotations

import time
from typing import Any

from redis.asyncio import Redis

from workers.queues import (
    DISPATCH_ACTOR,
    DISPATCH_QUEUE,
    ENQUEUE_ONCE_SCRIPT,
    body_key,
    encode_message,
    queue_keys,
    seen_key,
)

__all__ = ["EventQueue"]


class EventQueue:
    """The dispatch queue as the receiver sees it: ``put`` queues an event unless it was seen."""

    def __init__(self, redis: Redis, *, namespace: str, dedup_ttl_seconds: int) -> None:
        self._redis = redis
        self._namespace = namespace
        self._dedup_ttl = dedup_ttl_seconds
        self._script = redis.register_script(ENQUEUE_ONCE_SCRIPT)
        self._messages_key, self._list_key = queue_keys(namespace, DISPATCH_QUEUE)

    async def put(self, event_id: str, body: str, meta: dict[str, Any]) -> bool:
        """Queue the event and return True, or return False if it was already queued.

        Raises the redis client's errors when Redis cannot be reached; nothing is marked as
        seen then, so the sender's retry is queued normally.
        """
        meta = {**meta, "received_at": int(time.time() * 1000)}
        message_id, data = encode_message(DISPATCH_QUEUE, DISPATCH_ACTOR, (event_id, meta))
        keys = [
            seen_key(self._namespace, event_id),
            self._messages_key,
            self._list_key,
            body_key(self._namespace, event_id),
        ]
        queued = await self._script(keys=keys, args=[self._dedup_ttl, message_id, data, body])
        return bool(queued)

    async def ping(self) -> bool:
        """Return True when Redis answers."""
        return bool(await self._redis.ping())
