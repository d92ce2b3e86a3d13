"""Put an accepted event on the dispatch queue once, in one atomic round trip to Redis.

Concurrent puts share their round trips. While one batch is on its way to Redis, the puts that
arrive wait, and the next batch sends them all in one call of ``BATCH_SCRIPT``. That script runs
the enqueue-once script (mark seen, store the body, queue) for each event of the batch in turn,
and the whole batch runs atomically. Each put returns only after Redis has replied to the batch
that carried it. So a delivery gets its response only once its event is queued, and a lone
delivery does not wait for others.

An error inside the script (Redis out of memory, a key of the wrong type) stops the batch, and
every put of the batch raises it. Redis does not undo the writes a script made before its
error, so the events before the failing one are queued and their senders' retries get 200
(duplicate). The failing event and those after it are not marked as seen, because the
enqueue-once script marks an event last, so their retries queue them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from redis.asyncio import Redis

from workers.queues import (
    DISPATCH_ACTOR,
    DISPATCH_QUEUE,
    ENQUEUE_ONCE_SCRIPT,
    arrived_key,
    body_key,
    encode_message,
    queue_keys,
    seen_key,
)

__all__ = ["EventQueue"]

# The arguments of BATCH_SCRIPT before the events', and each event's.
_SHARED_ARGS = 4
_ARGS_PER_EVENT = 6

# ENQUEUE_ONCE_SCRIPT, unchanged, as a Lua function run once per event. KEYS are the queue's
# message hash and list. ARGV starts with the prefixes of the seen markers', the bodies' and
# the arrived sets' keys and the TTL, followed by each event's id, message id, message, body,
# ordering key ("" for none) and createdAt in seconds. The reply is one string, with the
# script's integer reply for each event in order, joined by commas.
# The script builds each event's keys from the prefixes, its id and its ordering key, so that
# redis-py packs fewer arguments per event (4.3 µs per event with 8, 1.4 µs with 4, all bytes).
# Redis Cluster needs every key in KEYS, but Dramatiq's Redis broker, which builds its keys in
# its own scripts, does not run on Redis Cluster either.
BATCH_SCRIPT = f"""
local function enqueue_once(KEYS, ARGV)
{ENQUEUE_ONCE_SCRIPT}
end
local seen_prefix, body_prefix, arrived_prefix, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local replies = {{}}
for event = 0, (#ARGV - {_SHARED_ARGS}) / {_ARGS_PER_EVENT} - 1 do
    local first = {_SHARED_ARGS} + event * {_ARGS_PER_EVENT}
    local event_id = ARGV[first + 1]
    local arrived = ""
    if ARGV[first + 5] ~= "" then
        arrived = arrived_prefix .. ARGV[first + 5]
    end
    local keys = {{seen_prefix .. event_id, KEYS[1], KEYS[2], body_prefix .. event_id, arrived}}
    local args = {{ttl, ARGV[first + 2], ARGV[first + 3], ARGV[first + 4], event_id,
        ARGV[first + 6]}}
    replies[event + 1] = string.format("%d", enqueue_once(keys, args))
end
return table.concat(replies, ",")
"""

# An event's arguments and the future that its reply resolves.
_Put = tuple[list[bytes], "asyncio.Future[int]"]

# The maximum number of puts in one batch. Under load a batch has about one put per open
# connection.
_MAX_BATCH = 256


class EventQueue:
    """The dispatch queue as the receiver sees it: ``put`` queues an event unless it was seen.

    One instance serves one event loop. ``aclose`` waits for the puts in progress.
    """

    def __init__(self, redis: Redis, *, namespace: str, dedup_ttl_seconds: int) -> None:
        self._redis = redis
        # redis-py's script object runs the script by its SHA and loads it again when Redis has
        # lost its script cache (a restart or SCRIPT FLUSH).
        self._script = redis.register_script(BATCH_SCRIPT)
        # The keys and shared arguments of every batch: the key prefixes are the keys of the
        # empty event id.
        self._keys = list(queue_keys(namespace, DISPATCH_QUEUE))
        self._shared_args = [
            seen_key(namespace, "").encode(),
            body_key(namespace, "").encode(),
            arrived_key(namespace, "").encode(),
            str(dedup_ttl_seconds).encode(),
        ]
        self._waiting: list[_Put] = []
        self._sender: asyncio.Task[None] | None = None

    async def put(
        self,
        event_id: str,
        body: bytes,
        meta: dict[str, Any],
        *,
        ordering_key: str | None = None,
    ) -> bool:
        """Queue the event and return True, or return False if it was already queued.

        ``body`` is stored as given. With ``ordering_key``, the event is also added to the key's
        arrived set (``workers.queues.arrived_key``) by ``meta["created_at"]``. Raises the redis
        client's errors when Redis cannot be reached or rejects the script. Nothing is marked as
        seen then, so the sender's retry is queued normally.
        """
        meta = {**meta, "received_at": int(time.time() * 1000)}
        message_id, data = encode_message(DISPATCH_QUEUE, DISPATCH_ACTOR, (event_id, meta))
        args = [event_id.encode(), message_id.encode(), data, body, b"", b""]
        if ordering_key is not None:
            args[4] = ordering_key.encode()
            args[5] = repr(float(meta["created_at"])).encode()
        reply: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.append((args, reply))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send_waiting())
        return bool(await reply)

    async def ping(self) -> bool:
        """Return True when Redis answers."""
        return bool(await self._redis.ping())

    async def aclose(self) -> None:
        """Wait until the puts already made have their replies."""
        if self._sender is not None:
            await asyncio.shield(self._sender)

    async def _send_waiting(self) -> None:
        """Send the waiting puts, one batch at a time, until none is left."""
        try:
            while self._waiting:
                batch = self._waiting[:_MAX_BATCH]
                del self._waiting[:_MAX_BATCH]
                await self._send(batch)
        finally:
            self._sender = None
            # Only a cancellation of this task (the loop shutting down) leaves puts waiting.
            for _, reply in self._waiting:
                reply.cancel()
            self._waiting.clear()

    async def _send(self, batch: list[_Put]) -> None:
        """Run the batch's scripts in one call and resolve each put with its own reply."""
        try:
            replies = await self._run_batch(batch)
        except Exception as exc:
            for _, reply in batch:
                if not reply.done():
                    reply.set_exception(exc)
            return
        except BaseException:
            for _, reply in batch:
                reply.cancel()
            raise
        for (_, reply), outcome in zip(batch, replies, strict=True):
            # A put is done already when its request was cancelled, e.g. its client went away.
            if not reply.done():
                reply.set_result(outcome)

    async def _run_batch(self, batch: list[_Put]) -> list[int]:
        """Return the enqueue-once script's reply for each event of the batch, in order."""
        args = [*self._shared_args, *(arg for event_args, _ in batch for arg in event_args)]
        reply = await self._script(keys=self._keys, args=args)
        text = reply.decode() if isinstance(reply, bytes) else str(reply)
        return [int(value) for value in text.split(",")]
