"""The Redis side of a handler run: one round trip to start it, one to record its end.

``start`` reads the event's body, checks that no older event of the ordering key is pending
for the handler or still waiting for its dispatch, takes the (handler, ordering key) lock and
reads the handler's progress on the order. It does all of this in one script, so a run that
may not start yet takes no lock.
``finish`` releases the lock, takes the event off the pending set, records the outcome in
the journal and moves the snapshot handler's progress on, in one script too. Each handler run
costs two round trips this way, where separate commands took six.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass
from datetime import datetime

from redis import Redis

from omhooks.errors import PermanentError

from .journal import Journal
from .order_changes import RAISE_FUNCTION, millis
from .ordering import Deferred, Ordering, deferral_delay_ms
from .progress import Progress
from .queues import arrived_key, body_key

__all__ = ["Run", "Runs"]

logger = logging.getLogger(__name__)

# KEYS: body, lock, pending set, progress, arrived set, finished marker. All but the body and
# the progress are "" without ordering.
# ARGV: the run's lock token, the lock's time to live in ms, the event's createdAt in seconds,
# "1" to wait for older pending events, "1" if the run waited long enough to stop waiting.
# A run that waited long enough still waits while the finished marker shows that a run of its
# key finished within the wait, because then the older events are moving, not stuck.
# Returns {"gone"}, {"waiting"}, {"locked"} or {"run", body, progress or "", older pending}.
_START_SCRIPT = """
local body = redis.call("get", KEYS[1])
if not body then
    return {"gone"}
end
local older = 0
if KEYS[2] ~= "" then
    if ARGV[4] == "1" then
        local below = "(" .. ARGV[3]
        local found = redis.call("zrangebyscore", KEYS[3], "-inf", below, "LIMIT", 0, 1)
        if #found == 0 then
            found = redis.call("zrangebyscore", KEYS[5], "-inf", below, "LIMIT", 0, 1)
        end
        if #found > 0 then
            if ARGV[5] ~= "1" or redis.call("exists", KEYS[6]) == 1 then
                return {"waiting"}
            end
            older = 1
        end
    end
    if not redis.call("set", KEYS[2], ARGV[1], "NX", "PX", ARGV[2]) then
        return {"locked"}
    end
end
return {"run", body, redis.call("get", KEYS[4]) or "", older}
"""

# KEYS: lock, pending set, journal entry, progress, finished marker. The lock key is "" without
# ordering, the pending and finished keys "" without ordering or when the run failed.
# ARGV: the run's lock token, event id, journal field, outcome ("" to leave the journal),
# journal TTL in s, the createdAt in ms to raise the progress to ("" to leave it), its TTL,
# the ordering wait in s (the finished marker's TTL).
# Returns 0 if the lock had expired or was another run's by then, 1 otherwise.
_FINISH_SCRIPT = (
    RAISE_FUNCTION
    + """
local ours = 1
if KEYS[1] ~= "" then
    if redis.call("get", KEYS[1]) == ARGV[1] then
        redis.call("del", KEYS[1])
    else
        ours = 0
    end
end
if KEYS[2] ~= "" then
    redis.call("zrem", KEYS[2], ARGV[2])
    redis.call("set", KEYS[5], "1", "EX", ARGV[8])
end
if ARGV[4] ~= "" then
    redis.call("hset", KEYS[3], ARGV[3], ARGV[4])
    redis.call("expire", KEYS[3], ARGV[5])
end
if ARGV[6] ~= "" then
    raise(KEYS[4], ARGV[6], ARGV[7])
end
return ours
"""
)


@dataclass
class Run:
    """A started run: the event's body, the lock it holds and the handler's progress."""

    handler_name: str
    event_id: str
    ordering_key: str | None
    token: str
    body: str
    processed_ms: int | None
    waited_for_older: bool

    def is_stale(self, created_at: datetime) -> bool:
        """True if the handler already processed a newer event of the order."""
        return self.processed_ms is not None and self.processed_ms > millis(created_at)


class Runs:
    """Start and finish handler runs against Redis."""

    def __init__(
        self,
        redis: Redis,
        *,
        namespace: str,
        ordering: Ordering,
        journal: Journal,
        progress: Progress,
    ) -> None:
        self._namespace = namespace
        self._ordering = ordering
        self._journal = journal
        self._progress = progress
        self._start = redis.register_script(_START_SCRIPT)
        self._finish = redis.register_script(_FINISH_SCRIPT)

    def start(
        self,
        handler_name: str,
        event_id: str,
        *,
        ordering_key: str | None,
        order_id: str | None,
        created_at: float,
        in_order: bool,
        waited_seconds: float,
        deferrals: int,
    ) -> Run:
        """Start a run, or raise ``Deferred`` if it is not its turn, ``PermanentError`` if the
        event's body expired.

        ``created_at`` is the event's ``createdAt`` in seconds since the epoch. With
        ``in_order``, the run waits while an older event of its key is pending for the handler,
        or queued and not yet dispatched. Without an ordering key, the run takes no lock.
        """
        token = uuid.uuid4().hex
        lock_key = pending_key = arrived_set = finished_key = ""
        if ordering_key is not None:
            lock_key = self._ordering.lock_key(handler_name, ordering_key)
            pending_key = self._ordering.pending_key(handler_name, ordering_key)
            arrived_set = arrived_key(self._namespace, ordering_key)
            finished_key = self._ordering.finished_key(handler_name, ordering_key)
        progress_key = self._progress.key(handler_name, order_id or "")
        reply = self._start(
            keys=[
                body_key(self._namespace, event_id),
                lock_key,
                pending_key,
                progress_key,
                arrived_set,
                finished_key,
            ],
            args=[
                token,
                self._ordering.lock_ms,
                repr(created_at),
                "1" if in_order else "0",
                "1" if waited_seconds >= self._ordering.wait_seconds else "0",
            ],
        )
        verdict = str(reply[0])
        if verdict == "gone":
            raise PermanentError(
                f"The body of event {event_id!r} is no longer stored; it expires after "
                "OMHOOKS_DEDUP_TTL_SECONDS."
            )
        if verdict == "waiting":
            raise Deferred("an older event is pending", deferral_delay_ms(deferrals))
        if verdict == "locked":
            raise Deferred("another run holds the lock", deferral_delay_ms(deferrals))
        if lock_key:
            self._ordering.hold(lock_key, token)
        processed = str(reply[2])
        return Run(
            handler_name=handler_name,
            event_id=event_id,
            ordering_key=ordering_key,
            token=token,
            body=str(reply[1]),
            processed_ms=int(processed) if processed else None,
            waited_for_older=bool(reply[3]),
        )

    def finish(
        self,
        run: Run,
        outcome: str | None,
        *,
        order_id: str | None = None,
        processed_at: datetime | None = None,
    ) -> None:
        """Release the run's lock and record its outcome, or only release it if ``outcome``
        is None (the run failed, and the retry middleware records the failure).

        ``processed_at``, with ``order_id``, raises the handler's progress on the order.
        """
        lock_key = pending_key = finished_key = ""
        if run.ordering_key is not None:
            lock_key = self._ordering.lock_key(run.handler_name, run.ordering_key)
            self._ordering.let_go(run.token)
            if outcome is not None:
                pending_key = self._ordering.pending_key(run.handler_name, run.ordering_key)
                finished_key = self._ordering.finished_key(run.handler_name, run.ordering_key)
        raise_to = ""
        if processed_at is not None and order_id is not None:
            raise_to = str(millis(processed_at))
        lock_was_ours = self._finish(
            keys=[
                lock_key,
                pending_key,
                self._journal.key(run.event_id),
                self._progress.key(run.handler_name, order_id or ""),
                finished_key,
            ],
            args=[
                run.token,
                run.event_id,
                f"handler:{run.handler_name}",
                outcome or "",
                self._journal.ttl_seconds,
                raise_to,
                self._progress.ttl_seconds,
                max(1, math.ceil(self._ordering.wait_seconds)),
            ],
        )
        if not lock_was_ours:
            logger.warning(
                "The lock of %r for %r expired during the run.",
                run.ordering_key,
                run.handler_name,
            )
