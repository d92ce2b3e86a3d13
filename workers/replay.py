"""Operators' work on dead letters: select them, replay them once, purge them, keep a history."""

from __future__ import annotations

import getpass
import json
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from redis import Redis

from handlers.registry import Registry

from .deadletters import DeadLetter, DeadLetterStore
from .journal import Journal
from .progress import Progress
from .queues import HANDLER_ACTOR, body_key, encode_message, handler_queue, queue_keys

__all__ = ["History", "Outcome", "Replayer", "Selection", "outcome_ids"]

# KEYS: dead letter record, dead letter index, event body, queue messages hash, queue list.
# ARGV: dead letter id, event body, body TTL in seconds, message id, message.
# Queues the run and deletes the dead letter in one step, only if the dead letter still
# exists: of two replays of one dead letter at the same moment, exactly one queues it.
_REPLAY_SCRIPT = """
if redis.call("exists", KEYS[1]) == 0 then
    return 0
end
redis.call("set", KEYS[3], ARGV[2], "EX", ARGV[3])
redis.call("hset", KEYS[4], ARGV[4], ARGV[5])
redis.call("rpush", KEYS[5], ARGV[4])
redis.call("del", KEYS[1])
redis.call("zrem", KEYS[2], ARGV[1])
return 1
"""

_HISTORY_LENGTH = 1000


@dataclass(frozen=True)
class Selection:
    """Which dead letters an operator means: ids (or their first characters), and filters.

    A dead letter is selected when it matches one of the ids, if any are given, and every
    filter given.
    """

    ids: tuple[str, ...] = ()
    handler: str | None = None
    event_type: str | None = None
    order_id: str | None = None
    since_seconds: float | None = None
    error: str | None = None
    group: str | None = None

    def is_empty(self) -> bool:
        """Return True if no id and no filter is given."""
        return not self.ids and all(
            value is None
            for value in (
                self.handler,
                self.event_type,
                self.order_id,
                self.since_seconds,
                self.error,
                self.group,
            )
        )

    def matches(self, entry: DeadLetter, now: float) -> bool:
        """Return True if the dead letter is one of those selected."""
        checks = (
            not self.ids or any(entry.id.startswith(prefix) for prefix in self.ids),
            self.handler is None or entry.handler == self.handler,
            self.event_type is None or entry.event_type == self.event_type,
            self.order_id is None or entry.order_id == self.order_id,
            self.since_seconds is None or entry.last_failed_at >= now - self.since_seconds,
            self.error is None or self.error.lower() in _error_text(entry).lower(),
            self.group is None or entry.fingerprint == self.group,
        )
        return all(checks)

    def pick(self, entries: Iterable[DeadLetter]) -> list[DeadLetter]:
        """Return the selected dead letters among ``entries``, in the same order."""
        now = time.time()
        return [entry for entry in entries if self.matches(entry, now)]

    def unmatched_ids(self, picked: Iterable[DeadLetter]) -> list[str]:
        """Return the ids given that match none of the picked dead letters."""
        found = [entry.id for entry in picked]
        return [prefix for prefix in self.ids if not any(i.startswith(prefix) for i in found)]


def _error_text(entry: DeadLetter) -> str:
    return f"{entry.error_type}: {entry.error_message}"


@dataclass
class Outcome:
    """What a replay did, or would do, with each dead letter, by verdict."""

    replayed: list[str] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)
    already_done: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        """The dead letters that were selected but could not be replayed."""
        return self.missing


class Replayer:
    """Replay dead letters oldest first, at a capped rate, each at most once."""

    def __init__(
        self,
        redis: Redis,
        store: DeadLetterStore,
        registry: Registry,
        *,
        namespace: str,
        body_ttl_seconds: int,
        progress: Progress,
        journal: Journal,
    ) -> None:
        self._redis = redis
        self._store = store
        self._registry = registry
        self._namespace = namespace
        self._body_ttl = body_ttl_seconds
        self._progress = progress
        self._journal = journal
        self._script = redis.register_script(_REPLAY_SCRIPT)

    def verdict(self, entry: DeadLetter) -> str:
        """Return ``replay``, ``superseded`` or ``already_done`` for one dead letter.

        A dead letter of a snapshot handler is superseded once the handler processed a newer
        event of the same order; it is already done when the journal shows that the same
        handler later succeeded on the same event.
        """
        if self._journal.outcomes(entry.event_id).get(entry.handler) == "succeeded":
            return "already_done"
        handler = self._registry.handlers.get(entry.handler)
        created = _created_at(entry)
        snapshot = handler is not None and handler.snapshot
        if (
            snapshot
            and entry.order_id
            and created is not None
            and self._progress.is_stale(entry.handler, entry.order_id, created)
        ):
            return "superseded"
        return "replay"

    def replay(
        self,
        entries: list[DeadLetter],
        *,
        rate_per_second: float,
        dry_run: bool,
        on_each: Callable[[DeadLetter, str], None] | None = None,
    ) -> Outcome:
        """Replay the dead letters oldest event first; with ``dry_run``, only report."""
        outcome = Outcome()
        interval = 1.0 / rate_per_second if rate_per_second > 0 else 0.0
        for entry in sorted(entries, key=_age_key):
            verdict = self.verdict(entry)
            if not dry_run:
                verdict = self._apply(entry, verdict)
                if verdict == "replayed" and interval:
                    time.sleep(interval)
            getattr(outcome, verdict if verdict != "replay" else "replayed").append(entry.id)
            if on_each is not None:
                on_each(entry, verdict)
        return outcome

    def _apply(self, entry: DeadLetter, verdict: str) -> str:
        if verdict != "replay":
            return verdict if self._store.remove(entry.id) else "missing"
        queue = handler_queue(entry.handler)
        message_id, data = encode_message(
            queue, HANDLER_ACTOR, (entry.handler, entry.event_id, {"replay_of": entry.id})
        )
        keys = [
            self._store.record_key(entry.id),
            self._store.index_key,
            body_key(self._namespace, entry.event_id),
            *queue_keys(self._namespace, queue),
        ]
        queued = self._script(
            keys=keys, args=[entry.id, entry.body, self._body_ttl, message_id, data]
        )
        if not queued:
            return "missing"
        self._journal.set_outcome(entry.event_id, entry.handler, "queued")
        return "replayed"


def _created_at(entry: DeadLetter) -> datetime | None:
    if not entry.event_created_at:
        return None
    try:
        return datetime.fromisoformat(entry.event_created_at.replace("Z", "+00:00"))
    except ValueError:
        return None


def _age_key(entry: DeadLetter) -> tuple[str, float]:
    return (entry.event_created_at or "", entry.first_failed_at)


class History:
    """The record of every replay and purge: who, when, why, and which dead letters."""

    def __init__(self, redis: Redis, *, namespace: str) -> None:
        self._redis = redis
        self._key = f"{namespace}:deadletters:history"

    def record(self, action: str, reason: str | None, outcome: dict[str, list[str]]) -> None:
        """Append an entry for an action that changed the dead letters."""
        entry = {
            "at": time.time(),
            "user": _user(),
            "host": socket.gethostname(),
            "action": action,
            "reason": reason or "",
            "counts": {verdict: len(ids) for verdict, ids in outcome.items()},
            "ids": outcome,
        }
        pipe = self._redis.pipeline(transaction=True)
        pipe.lpush(self._key, json.dumps(entry))
        pipe.ltrim(self._key, 0, _HISTORY_LENGTH - 1)
        pipe.execute()

    def entries(self) -> list[dict[str, Any]]:
        """Return the recorded actions, newest first."""
        return [json.loads(str(raw)) for raw in self._redis.lrange(self._key, 0, -1)]


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def outcome_ids(outcome: Outcome) -> dict[str, list[str]]:
    """Return an outcome as lists of ids by verdict, for the history."""
    return asdict(outcome)
