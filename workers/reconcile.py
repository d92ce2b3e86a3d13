"""Reconciliation: find order changes no webhook reported, and feed them to the handlers.

A run pages through ``GET /orders?updatedSince=...`` from the stored watermark less an
overlap. An order changed after the newest change any dispatched event carried (see
``workers.order_changes``) is a missed change. For each one the run queues an
``order.reconciled`` event carrying the order, with the receiver's seen-marker and dispatch
script, so the built-in handlers act on the order's current state. The event id comes from
the order id and its change time, so a second run over the same orders queues nothing new.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

from redis import Redis
from redis.exceptions import LockError
from redis.lock import Lock

from omhooks.settings import Settings
from ordermesh.client import OrderMeshClient
from ordermesh.models import Order

from . import reconcile_metrics
from .order_changes import RAISE_SCRIPT, known_changes, millis, order_changed_at
from .queues import queue_event, seen_key

__all__ = [
    "RECONCILED_EVENT_TYPE",
    "MissedOrder",
    "ReconcileReport",
    "Reconciler",
    "RunInterrupted",
    "format_time",
    "reconciled_event_id",
    "run_exclusively",
]

logger = logging.getLogger(__name__)

RECONCILED_EVENT_TYPE = "order.reconciled"

_LOCK_SECONDS = 300
"""Time to live of the run lock; a run renews it after each page."""

# Ten years, so in practice the watermark stays; without it a run looks back the first window.
_WATERMARK_TTL_SECONDS = 10 * 365 * 24 * 3600


class RunInterrupted(Exception):
    """Raised between two pages when the process is shutting down."""


@dataclass(frozen=True)
class MissedOrder:
    """An order changed after the newest change any received event carried.

    ``action`` is ``fed`` (its event was queued now), ``already_queued`` (an earlier run
    queued it) or ``would_feed`` (a dry run).
    """

    order_id: str
    changed_at: datetime
    event_id: str
    action: str


@dataclass
class ReconcileReport:
    """The counts of one run and the missed orders it found."""

    since: datetime
    dry_run: bool
    scanned: int = 0
    too_recent: int = 0
    missed: list[MissedOrder] = field(default_factory=list)
    watermark: datetime | None = None

    @property
    def fed(self) -> int:
        """The number of events this run queued."""
        return sum(1 for order in self.missed if order.action == "fed")

    @property
    def already_queued(self) -> int:
        """The number of missed orders whose event an earlier run had queued."""
        return sum(1 for order in self.missed if order.action == "already_queued")

    def summary(self) -> str:
        """Return the one-line summary printed and logged after each run."""
        fed = (
            f"{sum(1 for order in self.missed if order.action == 'would_feed')} events would be fed"
            if self.dry_run
            else f"{self.fed} events fed"
        )
        watermark = format_time(self.watermark) if self.watermark else "none"
        return (
            f"{'Dry run' if self.dry_run else 'Reconciled'} since {format_time(self.since)}: "
            f"{self.scanned} orders scanned, {len(self.missed)} with changes no webhook "
            f"reported, {fed}, {self.already_queued} already queued, {self.too_recent} changed "
            f"too recently to judge; watermark {watermark}."
        )

    def to_json(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dictionary."""
        return {
            "since": format_time(self.since),
            "dryRun": self.dry_run,
            "scanned": self.scanned,
            "missed": len(self.missed),
            "fed": self.fed,
            "alreadyQueued": self.already_queued,
            "tooRecent": self.too_recent,
            "watermark": format_time(self.watermark) if self.watermark else None,
            "orders": [
                {
                    "orderId": order.order_id,
                    "changedAt": format_time(order.changed_at),
                    "eventId": order.event_id,
                    "action": order.action,
                }
                for order in self.missed
            ],
        }


def format_time(moment: datetime) -> str:
    """Format a time as the API does: ISO 8601 in UTC with milliseconds and a ``Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def reconciled_event_id(order_id: str, changed_at: datetime) -> str:
    """Return the id of the ``order.reconciled`` event of one change of an order.

    It is ``rec_`` and 32 hex digits of the SHA-256 of the order id and the change time in
    milliseconds, so every run that finds the same change builds the same id.
    """
    digest = hashlib.sha256(f"{order_id}|{millis(changed_at)}".encode()).hexdigest()
    return f"rec_{digest[:32]}"


class Reconciler:
    """Reconciliation runs of one namespace, with one Redis client and one API client.

    The Redis client must decode responses (``decode_responses=True``).
    """

    def __init__(
        self,
        settings: Settings,
        redis: Redis,
        api: OrderMeshClient,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.api = api
        self._clock = clock
        self._namespace = settings.namespace

    def lock(self) -> Lock:
        """Return the lock that keeps two runs of one namespace from overlapping."""
        lock: Lock = self.redis.lock(
            f"{self._namespace}:reconcile:lock", timeout=_LOCK_SECONDS, blocking=False
        )
        return lock

    def watermark(self) -> datetime | None:
        """Return the newest change time the completed runs have judged, or None."""
        value = self.redis.get(self._watermark_key())
        if value is None:
            return None
        return datetime.fromtimestamp(int(str(value)) / 1000, tz=UTC)

    def start_time(self, since_seconds: float | None = None) -> datetime:
        """Return the ``updatedSince`` of a run.

        It is now less ``since_seconds`` when given, else the watermark less the overlap,
        else now less the first window.
        """
        now = datetime.fromtimestamp(self._clock(), tz=UTC)
        if since_seconds is not None:
            return now - timedelta(seconds=since_seconds)
        watermark = self.watermark()
        if watermark is None:
            return now - timedelta(seconds=self.settings.reconcile_first_window_seconds)
        return watermark - timedelta(seconds=self.settings.reconcile_overlap_seconds)

    def run(
        self,
        *,
        since_seconds: float | None = None,
        dry_run: bool = False,
        after_page: Callable[[], None] | None = None,
    ) -> ReconcileReport:
        """Scan the orders changed since the start time and feed the missed ones.

        A dry run queues nothing and leaves the watermark as it is. ``after_page`` is called
        after each page of orders, e.g. to renew a lock. The watermark moves forward only
        when the whole scan succeeded, so a failed run is repeated by the next one. API
        errors (``omhooks.errors.ApiError``) and Redis errors propagate.
        """
        report = ReconcileReport(since=self.start_time(since_seconds), dry_run=dry_run)
        horizon = datetime.fromtimestamp(
            self._clock() - self.settings.reconcile_min_age_seconds, tz=UTC
        )
        newest: datetime | None = None

        page_size = self.settings.reconcile_page_size
        orders = self.api.iter_orders(report.since, page_size=page_size)
        for page in _pages(orders, page_size):
            known = known_changes(self.redis, self._namespace, [order.id for order in page])
            for order in page:
                report.scanned += 1
                changed_at = order_changed_at(order)
                if changed_at is None:
                    logger.warning("Order %r has no updatedAt or createdAt; skipped.", order.id)
                    continue
                if changed_at > horizon:
                    report.too_recent += 1
                    continue
                newest = changed_at if newest is None else max(newest, changed_at)
                if known.get(order.id, -1) >= millis(changed_at):
                    continue
                report.missed.append(self._feed(order, changed_at, dry_run=dry_run))
            if after_page is not None:
                after_page()

        if not dry_run and newest is not None:
            self._advance_watermark(newest)
        report.watermark = self.watermark()
        if not dry_run:
            reconcile_metrics.record_report(report, self._clock())
        return report

    def _feed(self, order: Order, changed_at: datetime, *, dry_run: bool) -> MissedOrder:
        event_id = reconciled_event_id(order.id, changed_at)
        if dry_run:
            seen = self.redis.exists(seen_key(self._namespace, event_id))
            action = "already_queued" if seen else "would_feed"
            return MissedOrder(order.id, changed_at, event_id, action)

        envelope = {
            "id": event_id,
            "type": RECONCILED_EVENT_TYPE,
            # The time of the run, not of the change, so that handlers that already processed
            # an older event of the order do not skip this one as stale.
            "createdAt": format_time(datetime.fromtimestamp(self._clock(), tz=UTC)),
            "data": {"order": order.to_api()},
        }
        queued = queue_event(
            self.redis,
            namespace=self._namespace,
            dedup_ttl_seconds=self.settings.dedup_ttl_seconds,
            event_id=event_id,
            body=json.dumps(envelope, ensure_ascii=False),
            meta={"type": RECONCILED_EVENT_TYPE, "order_id": order.id},
        )
        if not queued:
            return MissedOrder(order.id, changed_at, event_id, "already_queued")
        logger.info(
            "Fed event %r for order %r: no webhook reported its change of %s.",
            event_id,
            order.id,
            format_time(changed_at),
        )
        return MissedOrder(order.id, changed_at, event_id, "fed")

    def _advance_watermark(self, newest: datetime) -> None:
        script = self.redis.register_script(RAISE_SCRIPT)
        script(keys=[self._watermark_key()], args=[millis(newest), _WATERMARK_TTL_SECONDS])

    def _watermark_key(self) -> str:
        return f"{self._namespace}:reconcile:watermark"


def run_exclusively(
    reconciler: Reconciler,
    *,
    since_seconds: float | None = None,
    stopping: threading.Event | None = None,
) -> ReconcileReport | None:
    """Run reconciliation under the run lock; return None when another run holds the lock.

    The lock is renewed after each page. When ``stopping`` is set, the run stops after the
    current page with ``RunInterrupted`` and leaves the watermark as it was.
    """
    lock = reconciler.lock()
    if not lock.acquire():
        reconcile_metrics.RUNS.labels(outcome="skipped").inc()
        return None

    def after_page() -> None:
        if stopping is not None and stopping.is_set():
            raise RunInterrupted("The process is shutting down; the next run repeats this one.")
        lock.reacquire()

    try:
        return reconciler.run(since_seconds=since_seconds, after_page=after_page)
    except Exception:
        reconcile_metrics.RUNS.labels(outcome="failed").inc()
        raise
    finally:
        try:
            lock.release()
        except LockError:
            logger.warning("The reconciliation lock expired before the run ended.")


def _pages(orders: Iterable[Order], size: int) -> Iterator[list[Order]]:
    iterator = iter(orders)
    while page := list(islice(iterator, size)):
        yield page
