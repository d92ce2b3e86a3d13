"""Put an accepted event on the dispatch queue once, in one atomic round trip to Redis.

Concurrent puts share their round trips. While one batch of scripts is on its way to Redis,
the puts that arrive wait, and the next batch sends them all as one pipeline. Each event still
runs its own script (mark seen, store the body, queue: atomic), and each put returns only
after Redis has replied to its own script. So a delivery gets its response only once its event
is queued, and a lone delivery does not wait for others.
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

# The script's four keys and four arguments, and the future that its reply resolves.
_Put = tuple[list[EncodableT], "asyncio.Future[Any]"]

# The maximum number of puts in one pipeline. Under load a batch has about one put per open
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
        self._sha = redis.register_script(ENQUEUE_ONCE_SCRIPT).sha
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
        keys_and_args: list[EncodableT] = [
            seen_key(self._namespace, event_id),
            self._messages_key,
            self._list_key,
            body_key(self._namespace, event_id),
            self._dedup_ttl,
            message_id,
            data,
            body,
        ]
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((keys_and_args, reply))
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
        """Send the waiting puts, one pipeline at a time, until none is left."""
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
        """Run the batch's scripts in one pipeline and resolve each put with its own reply."""
        try:
            replies = await self._run_scripts([keys_and_args for keys_and_args, _ in batch])
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
            if reply.done():  # the request was cancelled, e.g. its client went away
                continue
            if isinstance(outcome, Exception):
                reply.set_exception(outcome)
            else:
                reply.set_result(outcome)

    async def _run_scripts(self, calls: list[list[EncodableT]]) -> list[Any]:
        """Return each script's reply, or the error Redis replied with for it."""
        replies = await self._pipeline(calls)
        missing = [index for index, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            # Redis lost its script cache (a restart or SCRIPT FLUSH), so those scripts did
            # not run: load the script and run them again.
            await self._redis.script_load(ENQUEUE_ONCE_SCRIPT)
            again = await self._pipeline([calls[index] for index in missing])
            for index, reply in zip(missing, again, strict=True):
                replies[index] = reply
        return replies

    async def _pipeline(self, calls: list[list[EncodableT]]) -> list[Any]:
        pipe = self._redis.pipeline(transaction=False)
        for keys_and_args in calls:
            pipe.evalsha(self._sha, 4, *keys_and_args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies
