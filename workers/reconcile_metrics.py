"""Prometheus metrics of reconciliation runs, in a registry of their own.

A metrics endpoint exposes them with ``prometheus_client.generate_latest(REGISTRY)``. Each
process counts its own runs: the worker process that ran a scheduled run counts it, and an
``omhooks reconcile`` command counts its run in its own process, which then exits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge

if TYPE_CHECKING:
    from .reconcile import ReconcileReport

__all__ = [
    "EVENTS_FED",
    "LAST_SUCCESS",
    "MISSED_ORDERS",
    "ORDERS_SCANNED",
    "REGISTRY",
    "RUNS",
    "record_report",
]

REGISTRY = CollectorRegistry()

RUNS = Counter(
    "omhooks_reconcile_runs",
    "Reconciliation runs, by outcome: completed, failed, or skipped because another run held "
    "the lock.",
    ["outcome"],
    registry=REGISTRY,
)
ORDERS_SCANNED = Counter(
    "omhooks_reconcile_orders_scanned",
    "Orders listed by GET /orders in completed reconciliation runs.",
    registry=REGISTRY,
)
MISSED_ORDERS = Counter(
    "omhooks_reconcile_missed_orders",
    "Scanned orders changed after the newest change any received event carried. An order "
    "counts again in each run that scans it until its order.reconciled event is dispatched.",
    registry=REGISTRY,
)
EVENTS_FED = Counter(
    "omhooks_reconcile_events_fed",
    "order.reconciled events queued for dispatch; each is one order change that no webhook "
    "reported, counted once.",
    registry=REGISTRY,
)
LAST_SUCCESS = Gauge(
    "omhooks_reconcile_last_success_timestamp_seconds",
    "Unix time at which the last completed reconciliation run ended.",
    registry=REGISTRY,
    # Worker processes report their own; the metrics endpoint shows the newest of them.
    multiprocess_mode="max",
)


def record_report(report: ReconcileReport, finished_at: float) -> None:
    """Count a completed run that was not a dry run."""
    RUNS.labels(outcome="completed").inc()
    ORDERS_SCANNED.inc(report.scanned)
    MISSED_ORDERS.inc(len(report.missed))
    EVENTS_FED.inc(report.fed)
    LAST_SUCCESS.set(finished_at)
