"""Scheduled reconciliation in the workers: one run per interval across every worker process."""

from __future__ import annotations

import logging
import os
import random
import socket
import threading

import dramatiq
from dramatiq.middleware import Middleware

from omhooks.redis_clients import sync_redis
from omhooks.settings import Settings
from ordermesh.client import OrderMeshClient

from .reconcile import Reconciler, ReconcileReport, RunInterrupted, run_exclusively

__all__ = ["ReconcileSchedule", "install_reconcile_schedule"]

logger = logging.getLogger(__name__)

_MAX_TICK_SECONDS = 60.0
_STOP_WAIT_SECONDS = 10.0


def install_reconcile_schedule(broker: dramatiq.Broker, settings: Settings) -> None:
    """Add the schedule to the broker when ``OMHOOKS_RECONCILE_INTERVAL_SECONDS`` is above 0."""
    if settings.reconcile_interval_seconds > 0:
        broker.add_middleware(ReconcileSchedule(settings))


class ReconcileSchedule(Middleware):
    """A worker thread that runs reconciliation every ``OMHOOKS_RECONCILE_INTERVAL_SECONDS``.

    Each worker process starts a thread once it has booted. The thread wakes every minute (or
    every interval, if shorter) and tries to claim the current interval: ``SET NX EX
    <interval>`` on one Redis key of the namespace. Only the process that set the key runs,
    and no process claims another interval until the key expires. The run also holds the run
    lock, renewed after each page, so it does not overlap a longer previous run or an
    ``omhooks reconcile`` started by hand.

    The thread makes no Redis or API call before its first wake-up, a random part of a tick
    after boot, so the schedule does not delay the worker's start.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.interval = settings.reconcile_interval_seconds
        self.tick_seconds = min(float(self.interval), _MAX_TICK_SECONDS)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._reconciler: Reconciler | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._loop, name="omhooks-reconcile-schedule", daemon=True
        )
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(_STOP_WAIT_SECONDS)
            if self._thread.is_alive():
                logger.warning("Scheduled reconciliation was still running at shutdown.")
                return
        self.close()

    def close(self) -> None:
        """Close the schedule's Redis and API clients; the next tick makes new ones."""
        reconciler, self._reconciler = self._reconciler, None
        if reconciler is not None:
            reconciler.api.close()
            reconciler.redis.close()

    def tick(self) -> ReconcileReport | None:
        """Run reconciliation if this process claims the current interval; return its report.

        Returns None when another process claimed the interval or holds the run lock.
        """
        reconciler = self._get_reconciler()
        claim_key = f"{self.settings.namespace}:reconcile:claim"
        owner = f"{socket.gethostname()}:{os.getpid()}"
        if not reconciler.redis.set(claim_key, owner, nx=True, ex=self.interval):
            return None
        report = run_exclusively(reconciler, stopping=self._stopping)
        if report is None:
            logger.info("Skipped scheduled reconciliation: another run holds the lock.")
        else:
            logger.info("%s", report.summary())
        return report

    def _loop(self) -> None:
        delay = random.uniform(0.0, self.tick_seconds)
        while not self._stopping.wait(delay):
            delay = self.tick_seconds
            try:
                self.tick()
            except RunInterrupted:
                logger.info("Stopped scheduled reconciliation: the worker is shutting down.")
                return
            except Exception:
                # The thread lives on, so the next interval tries again.
                logger.exception("Scheduled reconciliation failed; the next interval retries.")

    def _get_reconciler(self) -> Reconciler:
        if self._reconciler is None:
            redis = sync_redis(self.settings, socket_timeout=10, decode_responses=True)
            api = OrderMeshClient.from_settings(self.settings)
            self._reconciler = Reconciler(self.settings, redis, api)
        return self._reconciler
