"""The dispatch step's writes to Redis: one script per event, whatever the number of handlers.

For each subscribed handler the script marks the event as queued for it, adds the event to
the handler's pending set of its ordering key, and queues the handler's message. It takes the
event off its ordering key's arrived set, where the receiver put it, in the same step, so a
newer event's run always finds this event in one of the two sets until its runs are done. The
same script records the event in the journal and the order change it carries for
reconciliation.
Being one script, it either does all of it or nothing, and a dispatch that runs again (after
a crash before its acknowledgement) queues no handler twice.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from redis import Redis
from redis.typing import EncodableT

from handlers.plugin import Handler, RetryPolicy
from omhooks.settings import Settings

from .journal import Journal
from .order_changes import RAISE_FUNCTION, known_change_key
from .ordering import Ordering
from .queues import (
    HANDLER_ACTOR,
    arrived_key,
    encode_message,
    handler_queue,
    queue_keys,
    seen_key,
)

__all__ = ["Fanout"]

# KEYS: journal entry, journalled event ids, order's known change ("" for none), arrived set
# of the ordering key ("" for none), then four per handler: queued marker, queue's message
# hash, queue's list, pending set ("" for none).
# ARGV: event id, type, order id, now in s, journal TTL, dedup TTL, createdAt in s, changed at
# in ms ("" for none), then three per handler: journal field, message id, message.
# Returns how many handlers got a message now; the others had one already.
_SCRIPT = (
    RAISE_FUNCTION
    + """
local now = tonumber(ARGV[4])
local journal_ttl = ARGV[5]
local dedup_ttl = ARGV[6]
redis.call("hset", KEYS[1], "type", ARGV[2], "order_id", ARGV[3], "dispatched_at", ARGV[4])
local queued = 0
for first = 5, #KEYS, 4 do
    local arg = 9 + (first - 5) / 4 * 3
    -- The marker goes last, so a script stopped by an error leaves the handler unmarked.
    if redis.call("exists", KEYS[first]) == 0 then
        if KEYS[first + 3] ~= "" then
            redis.call("zadd", KEYS[first + 3], ARGV[7], ARGV[1])
            redis.call("expire", KEYS[first + 3], dedup_ttl)
        end
        redis.call("hset", KEYS[first + 1], ARGV[arg + 1], ARGV[arg + 2])
        redis.call("rpush", KEYS[first + 2], ARGV[arg + 1])
        redis.call("hset", KEYS[1], ARGV[arg], "queued")
        redis.call("set", KEYS[first], ARGV[arg + 1], "EX", dedup_ttl)
        queued = queued + 1
    end
end
redis.call("expire", KEYS[1], journal_ttl)
redis.call("zadd", KEYS[2], now, ARGV[1])
redis.call("zremrangebyscore", KEYS[2], 0, now - tonumber(journal_ttl))
if KEYS[3] ~= "" and ARGV[8] ~= "" then
    raise(KEYS[3], ARGV[8], dedup_ttl)
end
if KEYS[4] ~= "" then
    redis.call("zrem", KEYS[4], ARGV[1])
end
return queued
"""
)


class Fanout:
    """Queue an event's message for each handler subscribed to it, in one round trip."""

    def __init__(
        self,
        redis: Redis,
        *,
        settings: Settings,
        journal: Journal,
        ordering: Ordering,
        default_policy: RetryPolicy,
    ) -> None:
        self._namespace = settings.namespace
        self._dedup_ttl = settings.dedup_ttl_seconds
        self._journal = journal
        self._ordering = ordering
        self._default_policy = default_policy
        self._script = redis.register_script(_SCRIPT)

    def send(
        self,
        event_id: str,
        *,
        event_type: str,
        order_id: str | None,
        created_at: float,
        changed_at_ms: int | None,
        ordering_key: str | None,
        handlers: Sequence[Handler],
        meta: dict[str, Any],
    ) -> int:
        """Queue the handlers' messages and return how many were not queued before.

        ``created_at`` is in seconds, ``changed_at_ms`` the newest change of the order that
        the event carries (None for none).
        """
        now = time.time()
        keys: list[str] = [
            self._journal.key(event_id),
            self._journal.events_key,
            known_change_key(self._namespace, order_id) if order_id is not None else "",
            arrived_key(self._namespace, ordering_key) if ordering_key is not None else "",
        ]
        args: list[EncodableT] = [
            event_id,
            event_type,
            order_id or "",
            repr(now),
            self._journal.ttl_seconds,
            self._dedup_ttl,
            repr(created_at),
            str(changed_at_ms) if changed_at_ms is not None else "",
        ]
        for handler in handlers:
            queue = handler_queue(handler.name)
            policy = handler.retry or self._default_policy
            message_id, data = encode_message(
                queue, HANDLER_ACTOR, (handler.name, event_id, meta), policy.message_options()
            )
            pending_key = ""
            if ordering_key is not None and not handler.snapshot:
                pending_key = self._ordering.pending_key(handler.name, ordering_key)
            keys += [
                seen_key(self._namespace, event_id, handler.name),
                *queue_keys(self._namespace, queue),
                pending_key,
            ]
            args += [f"handler:{handler.name}", message_id, data]
        return int(self._script(keys=keys, args=args))
