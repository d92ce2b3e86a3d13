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
from redis.exceptions import NoScriptError
from redis.typing import EncodableT

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

# The enqueue-once script's keys and arguments for each event.
_KEYS_PER_EVENT = 4
_ARGS_PER_EVENT = 4

# ENQUEUE_ONCE_SCRIPT, unchanged, as a Lua function run once per event. KEYS and ARGV hold the
# events' keys and arguments one event after another. The reply is one string, with the
# script's integer reply for each event in order, joined by commas.
BATCH_SCRIPT = f"""
local function enqueue_once(KEYS, ARGV)
{ENQUEUE_ONCE_SCRIPT}
end
local replies = {{}}
for event = 0, #KEYS / {_KEYS_PER_EVENT} - 1 do
    local keys, args = {{}}, {{}}
    for i = 1, {_KEYS_PER_EVENT} do
        keys[i] = KEYS[event * {_KEYS_PER_EVENT} + i]
    end
    for i = 1, {_ARGS_PER_EVENT} do
        args[i] = ARGV[event * {_ARGS_PER_EVENT} + i]
    end
    replies[event + 1] = string.format("%d", enqueue_once(keys, args))
end
return table.concat(replies, ",")
"""

# An event's keys, its arguments, and the future that its reply resolves.
_Put = tuple[list[EncodableT], list[EncodableT], "asyncio.Future[int]"]

# The maximum number of puts in one batch. Under load a batch has about one put per open
# connection.
_MAX_BATCH = 256


class EventQueue:
    """The dispatch queue as the receiver sees it: ``put`` queues an event unless it was seen.

    One instance serves one event loop. ``aclose`` waits for the puts in progress.
    """

    def __init__(self, redis: Redis, *, namespace: str, dedup_ttl_seconds: int) -> None:
        self._redis = redis
        self._namespace = namespace
        self._dedup_ttl = dedup_ttl_seconds
        self._sha = redis.register_script(BATCH_SCRIPT).sha
        self._messages_key, self._list_key = queue_keys(namespace, DISPATCH_QUEUE)
        self._waiting: list[_Put] = []
        self._sender: asyncio.Task[None] | None = None

    async def put(self, event_id: str, body: bytes, meta: dict[str, Any]) -> bool:
        """Queue the event and return True, or return False if it was already queued.

        ``body`` is stored as given. Raises the redis client's errors when Redis cannot be
        reached or rejects the script. Nothing is marked as seen then, so the sender's retry is
        queued normally.
        """
        meta = {**meta, "received_at": int(time.time() * 1000)}
        message_id, data = encode_message(DISPATCH_QUEUE, DISPATCH_ACTOR, (event_id, meta))
        keys: list[EncodableT] = [
            seen_key(self._namespace, event_id),
            self._messages_key,
            self._list_key,
            body_key(self._namespace, event_id),
        ]
        args: list[EncodableT] = [self._dedup_ttl, message_id, data, body]
        reply: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.append((keys, args, reply))
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
            for _, _, reply in self._waiting:
                reply.cancel()
            self._waiting.clear()

    async def _send(self, batch: list[_Put]) -> None:
        """Run the batch's scripts in one call and resolve each put with its own reply."""
        try:
            replies = await self._run_batch(batch)
        except Exception as exc:
            for _, _, reply in batch:
                if not reply.done():
                    reply.set_exception(exc)
            return
        except BaseException:
            for _, _, reply in batch:
                reply.cancel()
            raise
        for (_, _, reply), outcome in zip(batch, replies, strict=True):
            # A put is done already when its request was cancelled, e.g. its client went away.
            if not reply.done():
                reply.set_result(outcome)

    async def _run_batch(self, batch: list[_Put]) -> list[int]:
        """Return the enqueue-once script's reply for each event of the batch, in order."""
        keys = [key for event_keys, _, _ in batch for key in event_keys]
        args = [arg for _, event_args, _ in batch for arg in event_args]
        try:
            reply = await self._redis.evalsha(self._sha, len(keys), *keys, *args)
        except NoScriptError:
            # Redis lost its script cache (a restart or SCRIPT FLUSH), so the batch did not
            # run. Load the script and run it again.
            await self._redis.script_load(BATCH_SCRIPT)
            reply = await self._redis.evalsha(self._sha, len(keys), *keys, *args)
        text = reply.decode() if isinstance(reply, bytes) else str(reply)
        return [int(value) for value in text.split(",")]
