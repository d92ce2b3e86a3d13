"""Per-order ordering: one run at a time per handler and order, oldest event first.

Each handler keeps, per ordering key (the order id by default), the events dispatched to it
and not yet finished, by ``createdAt``. Before that, from the receiver's queueing to the
dispatch, each event is in its ordering key's arrived set (``workers.queues.arrived_key``).
A run takes the key's lock, which a background thread renews while the run lasts, so the
lock of a crashed worker's run lapses within ``OMHOOKS_ORDER_LOCK_SECONDS`` while a long run
keeps its own. A handler that does not act on snapshots also waits while an older event of
the same key is in either set, so its runs happen in ``createdAt`` order. Waiting never
blocks a worker thread: the run is put back on its queue with a short delay (a deferral,
which is not a retry). Once it has waited ``OMHOOKS_ORDERING_WAIT_SECONDS`` and no run of its
key finished for that long either (``finished_key``), it runs anyway and a warning is logged.

Starting a run and recording its end take one round trip to Redis each: see ``workers.runs``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from redis import Redis, RedisError

from ordermesh.events import order_id_of

from .queues import arrived_key

__all__ = [
    "Deferred",
    "Ordering",
    "deferral_delay_ms",
    "ordering_key",
    "ordering_key_of",
    "waited_since",
]

logger = logging.getLogger(__name__)

_FIRST_DEFERRAL_MS = 100
_LONGEST_DEFERRAL_MS = 2000

# KEYS: the lock. ARGV: the run's token, the lock's time to live in milliseconds.
# Returns 1 if the lock was still the run's and got its time to live back, 0 if not.
_RENEW_SCRIPT = """
if redis.call("get", KEYS[1]) == ARGV[1] then
    return redis.call("pexpire", KEYS[1], ARGV[2])
end
return 0
"""


class Deferred(Exception):
    """The run is not this event's turn yet: put it back on the queue after ``delay_ms``."""

    def __init__(self, reason: str, delay_ms: int) -> None:
        super().__init__(reason)
        self.delay_ms = delay_ms


def ordering_key(mode: str, order_id: str | None, merchant_id: str | None) -> str | None:
    """Return the ordering key of an event by ``mode``: its order id, merchant id, or None."""
    if mode == "none":
        return None
    if mode == "merchant":
        return str(merchant_id) if merchant_id else None
    return order_id


def ordering_key_of(mode: str, envelope: dict[str, Any]) -> str | None:
    """Return the ordering key of an event from its parsed envelope."""
    data = envelope.get("data")
    order_id = order_id_of(str(envelope.get("type", "")), data if isinstance(data, dict) else {})
    return ordering_key(mode, order_id, envelope.get("merchantId"))


def deferral_delay_ms(deferrals: int) -> int:
    """Return how long to put a run back for, after it was deferred ``deferrals`` times."""
    return int(min(_FIRST_DEFERRAL_MS * 2**deferrals, _LONGEST_DEFERRAL_MS))


def waited_since(first_deferred_at: float | None) -> float:
    """Return the seconds since a run was first deferred (0 if it never was)."""
    return 0.0 if first_deferred_at is None else time.time() - first_deferred_at


class Ordering:
    """The names of each (handler, ordering key)'s pending set and lock, and the lock renewal."""

    def __init__(
        self,
        redis: Redis,
        *,
        namespace: str,
        lock_seconds: float,
        wait_seconds: float,
    ) -> None:
        self._redis = redis
        self._namespace = namespace
        self.lock_ms = int(lock_seconds * 1000)
        self.wait_seconds = wait_seconds
        self._renew = redis.register_script(_RENEW_SCRIPT)
        # Token of each run holding a lock -> the lock's key.
        self._renewing: dict[str, str] = {}
        self._renewing_guard = threading.Lock()
        self._renewer: threading.Thread | None = None

    def pending_key(self, handler_name: str, key: str) -> str:
        """Return the key of the sorted set of a handler's unfinished events of one key."""
        return f"{self._namespace}:pending:{handler_name}:{key}"

    def finished_key(self, handler_name: str, key: str) -> str:
        """Return the key of the marker that a run of a handler on one key finished recently.

        It lives ``wait_seconds``: while it exists, waiting runs of the key keep waiting.
        """
        return f"{self._namespace}:finished:{handler_name}:{key}"

    def lock_key(self, handler_name: str, key: str) -> str:
        """Return the key of the lock a handler's run on one ordering key holds."""
        return f"{self._namespace}:lock:{handler_name}:{key}"

    def done(self, handler_name: str, key: str, event_id: str) -> None:
        """Record that a handler finished with an event (done, skipped or dead-lettered)."""
        self._redis.zrem(self.pending_key(handler_name, key), event_id)

    def dispatch_done(self, key: str, event_id: str) -> None:
        """Record that an event's dispatch ended without queueing its runs (dead-lettered)."""
        self._redis.zrem(arrived_key(self._namespace, key), event_id)

    def hold(self, lock_key: str, token: str) -> None:
        """Keep renewing a lock the run with ``token`` took, until ``let_go``."""
        with self._renewing_guard:
            self._renewing[token] = lock_key
            if self._renewer is None:
                self._renewer = threading.Thread(
                    target=self._renew_forever, name="omhooks-lock-renewer", daemon=True
                )
                self._renewer.start()

    def let_go(self, token: str) -> None:
        """Stop renewing the lock that the run with ``token`` took."""
        with self._renewing_guard:
            self._renewing.pop(token, None)

    def _renew_forever(self) -> None:
        while True:
            time.sleep(self.lock_ms / 3000)
            with self._renewing_guard:
                renewing = list(self._renewing.items())
            for token, lock_key in renewing:
                try:
                    renewed = self._renew(keys=[lock_key], args=[token, self.lock_ms])
                except RedisError as exc:
                    logger.warning("Could not renew an order lock: %s", exc)
                    continue
                if not renewed:
                    logger.warning("An order lock expired during its run: %s.", lock_key)
