"""``omhooks reconcile``: find order changes no webhook reported and feed them to the handlers."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from redis.exceptions import RedisError

from handlers.registry import discover
from ordermesh.client import OrderMeshClient
from workers.reconcile import (
    RECONCILED_EVENT_TYPE,
    Reconciler,
    ReconcileReport,
    format_time,
    run_exclusively,
)

from .dlq_cli import parse_duration
from .errors import ApiError
from .logs import configure_logging
from .redis_clients import sync_redis
from .settings import get_settings

__all__ = ["add_reconcile_commands"]


def add_reconcile_commands(commands: Any) -> None:
    """Add ``omhooks reconcile`` to the command line."""
    reconcile = commands.add_parser(
        "reconcile",
        help="Scan GET /orders for changes no webhook reported and feed them to the handlers.",
    )
    reconcile.add_argument(
        "--since",
        type=parse_duration,
        help="Scan the orders changed within this window, e.g. 3d, instead of starting from "
        "the stored watermark.",
    )
    reconcile.add_argument(
        "--dry-run",
        action="store_true",
        help="List the orders it would feed and the handlers that would act; queue nothing.",
    )
    reconcile.add_argument("--json", action="store_true", help="Print the report as JSON.")
    reconcile.set_defaults(command=_reconcile)


def _reconcile(args: argparse.Namespace) -> int:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    registry = discover(settings.handler_modules, settings.disabled_handlers)
    handler_names = [handler.name for handler in registry.subscribed(RECONCILED_EVENT_TYPE)]

    redis = sync_redis(settings, socket_timeout=10, decode_responses=True)
    report: ReconcileReport | None
    try:
        with OrderMeshClient.from_settings(settings) as api:
            reconciler = Reconciler(settings, redis, api)
            if args.dry_run:
                report = reconciler.run(since_seconds=args.since, dry_run=True)
            else:
                report = run_exclusively(reconciler, since_seconds=args.since)
    except (ApiError, RedisError) as exc:
        print(
            "omhooks: reconciliation failed and the watermark was not moved, so the next run "
            f"scans the same orders again: {exc}",
            file=sys.stderr,
        )
        return 1
    finally:
        redis.close()

    if report is None:
        print(
            "omhooks: another reconciliation run holds the lock; try again once it has ended.",
            file=sys.stderr,
        )
        return 1
    if args.json:
        print(json.dumps({**report.to_json(), "handlers": handler_names}, indent=2))
        return 0
    if args.dry_run:
        _print_orders(report, handler_names)
    if not handler_names:
        print(f"No enabled handler subscribes to {RECONCILED_EVENT_TYPE}; fed events do nothing.")
    print(report.summary())
    return 0


def _print_orders(report: ReconcileReport, handler_names: list[str]) -> None:
    handlers = ", ".join(handler_names) or "-"
    rows = [
        (order.order_id, format_time(order.changed_at), order.event_id, handlers)
        for order in report.missed
        if order.action == "would_feed"
    ]
    if not rows:
        return
    header = ("ORDER", "CHANGED AT", "EVENT", "HANDLERS")
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(3)]
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[3]]))
