"""Per-order ordering: one run at a time per handler and order, oldest event first.

Each handler keeps, per ordering key (the order id by default), the events dispatched to it
and not yet finished, by ``createdAt``. A run takes the key's lock, which a background thread
renews while the run lasts, so the lock of a crashed worker's run lapses within
``OMHOOKS_ORDER_LOCK_SECONDS`` while a long run keeps its own; a handler that does not
act on snapshots also waits while an older event of the same key is still pending, so its
runs happen in ``createdAt`` order. Waiting never blocks a worker thread: the run is put back
on its queue with a short delay (a deferral, which is not a retry), for at most
``OMHOOKS_ORDERING_WAIT_SECONDS``, after which it runs anyway and a warning is logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from redis import Redis, RedisError
from redis.client import Pipeline
from redis.exceptions import LockError
from redis.lock import Lock

from ordermesh.events import order_id_of

__all__ = ["Deferred", "Ordering", "ordering_key_of"]

logger = logging.getLogger(__name__)

_LOCK_WAIT_SECONDS = 1.0
_FIRST_DEFERRAL_MS = 100
_LONGEST_DEFERRAL_MS = 2000


class Deferred(Exception):
    """The run is not this event's turn yet: put it back on the queue after ``delay_ms``."""

    def __init__(self, reason: str, delay_ms: int) -> None:
        super().__init__(reason)
        self.delay_ms = delay_ms


def ordering_key_of(mode: str, envelope: dict[str, Any]) -> str | None:
    """Return the ordering key of an event: its order id, merchant id, or None for no ordering."""
    if mode == "none":
        return None
    if mode == "merchant":
        merchant = envelope.get("merchantId")
        return str(merchant) if merchant else None
    data = envelope.get("data")
    return order_id_of(str(envelope.get("type", "")), data if isinstance(data, dict) else {})


def deferral_delay_ms(deferrals: int) -> int:
    """Return how long to put a run back for, after it was deferred ``deferrals`` times."""
    return int(min(_FIRST_DEFERRAL_MS * 2**deferrals, _LONGEST_DEFERRAL_MS))


class Ordering:
    """The pending events and the locks of each (handler, ordering key)."""

    def __init__(
        self,
        redis: Redis,
        *,
        namespace: str,
        lock_seconds: float,
        wait_seconds: float,
        ttl_seconds: int,
    ) -> None:
        self._redis = redis
        self._namespace = namespace
        self._lock_seconds = lock_seconds
        self._wait_seconds = wait_seconds
        self._ttl = ttl_seconds
        self._held: set[Lock] = set()
        self._held_guard = threading.Lock()
        self._renewer: threading.Thread | None = None

    def add(
        self, pipe: Pipeline, handler_name: str, key: str, event_id: str, created_at: datetime
    ) -> None:
        """Record, on the caller's pipeline, an event dispatched to a handler as pending."""
        pending = self._pending_key(handler_name, key)
        pipe.zadd(pending, {event_id: created_at.timestamp()})
        pipe.expire(pending, self._ttl)

    def done(self, handler_name: str, key: str, event_id: str) -> None:
        """Record that a handler finished with an event (done, skipped or dead-lettered)."""
        self._redis.zrem(self._pending_key(handler_name, key), event_id)

    @contextmanager
    def turn(
        self,
        handler_name: str,
        key: str,
        created_at: datetime,
        *,
        in_order: bool,
        waited_seconds: float,
        deferrals: int,
    ) -> Iterator[None]:
        """Hold the key's lock while the block runs, or raise ``Deferred`` if it is not our turn.

        With ``in_order``, an older pending event of the key defers the run, until the run
        has waited ``wait_seconds`` in all.
        """
        lock = self._redis.lock(
            f"{self._namespace}:lock:{handler_name}:{key}",
            timeout=self._lock_seconds,
            blocking_timeout=_LOCK_WAIT_SECONDS,
        )
        if not lock.acquire():
            raise Deferred("another run holds the lock", deferral_delay_ms(deferrals))
        self._hold(lock)
        try:
            if in_order and self._older_pending(handler_name, key, created_at):
                if waited_seconds < self._wait_seconds:
                    raise Deferred("an older event is pending", deferral_delay_ms(deferrals))
                logger.warning(
                    "Handler %r runs an event of %r after waiting %.0f s for an older one.",
                    handler_name,
                    key,
                    waited_seconds,
                )
            yield
        finally:
            self._let_go(lock)
            try:
                lock.release()
            except LockError:
                logger.warning("The lock of %r for %r expired during the run.", key, handler_name)

    def _hold(self, lock: Lock) -> None:
        with self._held_guard:
            self._held.add(lock)
            if self._renewer is None:
                self._renewer = threading.Thread(
                    target=self._renew_forever, name="omhooks-lock-renewer", daemon=True
                )
                self._renewer.start()

    def _let_go(self, lock: Lock) -> None:
        with self._held_guard:
            self._held.discard(lock)

    def _renew_forever(self) -> None:
        while True:
            time.sleep(self._lock_seconds / 3)
            with self._held_guard:
                held = list(self._held)
            for lock in held:
                try:
                    lock.reacquire()
                except (LockError, RedisError) as exc:
                    logger.warning("Could not renew an order lock: %s", exc)

    def _older_pending(self, handler_name: str, key: str, created_at: datetime) -> bool:
        pending = self._pending_key(handler_name, key)
        older = self._redis.zrangebyscore(pending, "-inf", f"({created_at.timestamp()}", 0, 1)
        return bool(older)

    def _pending_key(self, handler_name: str, key: str) -> str:
        return f"{self._namespace}:pending:{handler_name}:{key}"


def waited_since(first_deferred_at: float | None) -> float:
    """Return the seconds since a run was first deferred (0 if it never was)."""
    return 0.0 if first_deferred_at is None else time.time() - first_deferred_at
