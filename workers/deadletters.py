"""Dead letters: handler runs that failed permanently or ran out of retries, with the reason."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import traceback
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from dramatiq.middleware import TimeLimitExceeded
from redis import Redis

from ordermesh.events import order_id_of

__all__ = [
    "DeadLetter",
    "DeadLetterStore",
    "build_dead_letter",
    "error_message",
    "normalise_message",
]

logger = logging.getLogger(__name__)

_TRACEBACK_LINES = 12


@dataclass
class DeadLetter:
    """One failed handler run: the event as received, the handler and the last error."""

    id: str
    handler: str
    event_id: str
    event_type: str
    order_id: str | None
    body: str
    attempts: int
    first_failed_at: float
    last_failed_at: float
    error_type: str
    error_message: str
    traceback: str
    permanent: bool
    event_created_at: str | None = None

    @property
    def fingerprint(self) -> str:
        """The failure's group: handler, exception type and message with its values blanked."""
        key = f"{self.handler}|{self.error_type}|{normalise_message(self.error_message)}"
        return hashlib.sha256(key.encode()).hexdigest()[:10]

    @classmethod
    def from_json(cls, data: str | bytes) -> DeadLetter:
        """Rebuild a dead letter from its stored JSON."""
        return cls(**json.loads(data))


class DeadLetterStore:
    """Dead letters in Redis: a record per dead letter and an index by time, kept for a while.

    The Redis client must decode responses (``decode_responses=True``).
    """

    def __init__(self, redis: Redis, *, namespace: str, retention_seconds: int) -> None:
        self._redis = redis
        self._index = f"{namespace}:deadletters"
        self._prefix = f"{namespace}:deadletter:"
        self._retention = retention_seconds

    def add(self, entry: DeadLetter) -> None:
        """Store a dead letter; it expires after the retention time."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(self._prefix + entry.id, json.dumps(asdict(entry)), ex=self._retention)
        pipe.zadd(self._index, {entry.id: entry.last_failed_at})
        pipe.zremrangebyscore(self._index, 0, time.time() - self._retention)
        pipe.execute()

    def list(self) -> list[DeadLetter]:
        """Return the dead letters still kept, newest first."""
        ids = [str(raw) for raw in self._redis.zrevrange(self._index, 0, -1)]
        if not ids:
            return []
        records = self._redis.mget([self._prefix + entry_id for entry_id in ids])
        return [DeadLetter.from_json(record) for record in records if record is not None]

    def get(self, entry_id: str) -> DeadLetter | None:
        """Return one dead letter by id, or None."""
        record = self._redis.get(self._prefix + entry_id)
        return None if record is None else DeadLetter.from_json(record)

    def count(self) -> int:
        """Return how many dead letters are kept."""
        return int(self._redis.zcount(self._index, time.time() - self._retention, "+inf"))

    def record_key(self, entry_id: str) -> str:
        """Return the Redis key of one dead letter's record."""
        return self._prefix + entry_id

    @property
    def index_key(self) -> str:
        """The Redis key of the index of dead letters by time."""
        return self._index

    def remove(self, entry_id: str) -> bool:
        """Delete a dead letter and return True if it existed."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(self._prefix + entry_id)
        pipe.zrem(self._index, entry_id)
        deleted, _ = pipe.execute()
        return bool(deleted)


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBERS_AND_IDS = re.compile(r"\b\w*\d\w*\b")


def normalise_message(message: str) -> str:
    """Blank the quoted values, numbers and ids of an error message, to group alike failures."""
    return _NUMBERS_AND_IDS.sub("#", _QUOTED.sub("'…'", message))


def error_message(exception: BaseException, options: dict[str, Any]) -> str:
    """Return the exception's message, or, for a time limit, which limit the run exceeded."""
    message = str(exception)
    if message or not isinstance(exception, TimeLimitExceeded):
        return message
    # Dramatiq raises TimeLimitExceeded without a message.
    limit_ms = options.get("time_limit")
    if limit_ms is None:
        return "The run took longer than its time limit."
    return f"The run took longer than its time limit of {limit_ms / 1000:g} s."


def build_dead_letter(
    handler_name: str,
    event_id: str,
    envelope: dict[str, Any],
    body: str,
    options: dict[str, Any],
    exception: BaseException,
    *,
    permanent: bool,
) -> DeadLetter:
    """Make a dead letter from a failed run's message options and its last exception."""
    now = time.time()
    data = envelope.get("data")
    return DeadLetter(
        id=uuid.uuid4().hex,
        handler=handler_name,
        event_id=event_id,
        event_type=str(envelope.get("type", "")),
        order_id=order_id_of(str(envelope.get("type", "")), data if isinstance(data, dict) else {}),
        body=body,
        attempts=int(options.get("retries", 0)) + (1 if permanent else 0),
        first_failed_at=float(options.get("first_failed_at", now)),
        last_failed_at=now,
        error_type=type(exception).__name__,
        error_message=error_message(exception, options),
        traceback="".join(traceback.format_exception(exception, limit=-_TRACEBACK_LINES)),
        permanent=permanent,
        event_created_at=str(envelope["createdAt"]) if "createdAt" in envelope else None,
    )
