"""The journal of recent events and each handler's outcome, kept for a while in Redis."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from redis import Redis
from redis.typing import EncodableT, FieldT

from .queues import DISPATCH_QUEUE, handler_queue

__all__ = ["FINAL_OUTCOMES", "Journal", "JournalEntry", "pending_messages"]

FINAL_OUTCOMES = frozenset({"succeeded", "dead", "skipped"})
_HANDLER_FIELD = "handler:"
_READ_BATCH = 500


@dataclass(frozen=True)
class JournalEntry:
    """One journalled event: its type, order, dispatch time and each handler's latest outcome."""

    event_id: str
    event_type: str
    order_id: str | None
    dispatched_at: float
    outcomes: dict[str, str] = field(default_factory=dict)

    @property
    def is_final(self) -> bool:
        """True when every subscribed handler succeeded, was skipped or was dead-lettered."""
        return all(outcome in FINAL_OUTCOMES for outcome in self.outcomes.values())


class Journal:
    """Per event: its type, order, when it was dispatched, and each handler's latest outcome.

    The Redis client must decode responses (``decode_responses=True``).
    """

    def __init__(self, redis: Redis, *, namespace: str, ttl_seconds: int) -> None:
        self._redis = redis
        self._namespace = namespace
        self.ttl_seconds = ttl_seconds

    def record_event(
        self, event_id: str, event_type: str, order_id: str | None, handlers: Iterable[str]
    ) -> None:
        """Record a dispatched event with every subscribed handler as queued."""
        key = self.key(event_id)
        fields: dict[FieldT, EncodableT] = {
            "type": event_type,
            "order_id": order_id or "",
            "dispatched_at": time.time(),
        }
        fields.update({f"handler:{name}": "queued" for name in handlers})
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(key, mapping=fields)
        pipe.expire(key, self.ttl_seconds)
        pipe.zadd(self.events_key, {event_id: time.time()})
        pipe.zremrangebyscore(self.events_key, 0, time.time() - self.ttl_seconds)
        pipe.execute()

    def set_outcome(self, event_id: str, handler_name: str, outcome: str) -> None:
        """Record a handler's latest outcome for an event."""
        key = self.key(event_id)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(key, f"handler:{handler_name}", outcome)
        pipe.expire(key, self.ttl_seconds)
        pipe.execute()

    def outcomes(self, event_id: str) -> dict[str, str]:
        """Return each handler's latest outcome for an event."""
        raw = self._redis.hgetall(self.key(event_id))
        return _outcomes_of(raw)

    def event_ids(self) -> list[str]:
        """Return the ids of the recorded events, oldest first."""
        return [str(raw) for raw in self._redis.zrange(self.events_key, 0, -1)]

    def entry(self, event_id: str) -> JournalEntry | None:
        """Return the record of an event, or None if it was never dispatched or has expired."""
        return _entry_of(event_id, self._redis.hgetall(self.key(event_id)))

    def recent(self, limit: int | None = None) -> list[JournalEntry]:
        """Return the journalled events, newest dispatch first, at most ``limit`` of them.

        Events whose record expired are left out, so fewer than ``limit`` may come back.
        """
        if limit is not None and limit <= 0:
            return []
        stop = -1 if limit is None else limit - 1
        ids = [str(raw) for raw in self._redis.zrevrange(self.events_key, 0, stop)]
        entries: list[JournalEntry] = []
        for start in range(0, len(ids), _READ_BATCH):
            batch = ids[start : start + _READ_BATCH]
            pipe = self._redis.pipeline(transaction=False)
            for event_id in batch:
                pipe.hgetall(self.key(event_id))
            for event_id, raw in zip(batch, pipe.execute(), strict=True):
                entry = _entry_of(event_id, raw)
                if entry is not None:
                    entries.append(entry)
        return entries

    def key(self, event_id: str) -> str:
        """Return the key of an event's journal entry, a hash."""
        return f"{self._namespace}:event:{event_id}"

    @property
    def events_key(self) -> str:
        """The key of the sorted set of journalled event ids by dispatch time."""
        return f"{self._namespace}:events"


def _entry_of(event_id: str, raw: Mapping[Any, Any]) -> JournalEntry | None:
    if not raw:
        return None
    return JournalEntry(
        event_id=event_id,
        event_type=str(raw.get("type", "")),
        order_id=str(raw.get("order_id", "")) or None,
        dispatched_at=float(raw.get("dispatched_at", 0.0)),
        outcomes=_outcomes_of(raw),
    )


def _outcomes_of(raw: Mapping[Any, Any]) -> dict[str, str]:
    return {
        str(name).removeprefix(_HANDLER_FIELD): str(value)
        for name, value in raw.items()
        if str(name).startswith(_HANDLER_FIELD)
    }


# ARGV: the patterns of the queue lists, then the pattern of the unacknowledged-message sets.
# Counts in one script, so that a message moving between a list and a set (fetched, requeued,
# or put back on its queue by the delay consumer) is counted once, never missed between two
# separate reads. Uses SCAN with TYPE (Redis 6.0 or newer).
_PENDING_SCRIPT = """
local total = 0
local function add(pattern, kind, size)
    local cursor = "0"
    repeat
        local reply = redis.call("scan", cursor, "match", pattern, "count", 1000, "type", kind)
        cursor = reply[1]
        for _, key in ipairs(reply[2]) do
            total = total + redis.call(size, key)
        end
    until cursor == "0"
end
for index = 1, #ARGV - 1 do
    add(ARGV[index], "list", "llen")
end
add(ARGV[#ARGV], "set", "scard")
return total
"""


def pending_messages(redis: Redis, namespace: str) -> int:
    """Return how many messages are queued, delayed for a retry or being processed.

    Dramatiq's Redis broker keeps queued and delayed message ids in lists and the ones a
    worker fetched in ``__acks__`` sets until they are acknowledged, so their sizes add up
    to the work left. Dead-lettered messages are not counted. One script reads them all, which
    blocks Redis while it scans the keyspace: this is for tests, demos and drains, not metrics.
    """
    patterns = [
        f"{namespace}:{DISPATCH_QUEUE}*",
        f"{namespace}:{handler_queue('*')}",
        f"{namespace}:__acks__.*",
    ]
    return int(redis.register_script(_PENDING_SCRIPT)(args=patterns))
