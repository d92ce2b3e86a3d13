"""``omhooks dlq``: list, show, replay and purge dead letters, and show what was done."""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ordermesh.privacy import redact
from workers.deadletters import DeadLetter, normalise_message
from workers.replay import History, Replayer, Selection, outcome_ids
from workers.runtime import Runtime

from .errors import ConfigurationError
from .settings import get_settings

__all__ = ["add_dlq_commands", "parse_duration"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_ERROR_WIDTH = 60


def parse_duration(text: str) -> float:
    """Return the seconds of a duration such as ``90s``, ``30m``, ``2h``, ``3d`` or ``1w``."""
    match = _DURATION.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: use e.g. 30m, 2h or 3d")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def add_dlq_commands(commands: Any) -> None:
    """Add ``omhooks dlq`` and its subcommands to the command line."""
    dlq = commands.add_parser("dlq", help="See, replay and purge dead letters.")
    actions = dlq.add_subparsers(required=True, metavar="ACTION")

    listing = actions.add_parser("list", help="List dead letters, newest first.")
    _add_filters(listing)
    listing.add_argument("--group", action="store_true", help="Group them by failure.")
    listing.add_argument("--json", action="store_true", help="Print JSON.")
    listing.set_defaults(command=_list)

    show = actions.add_parser("show", help="Show one dead letter in full.")
    show.add_argument("id", help="The dead letter's id (as listed).")
    show.add_argument("--json", action="store_true", help="Print JSON.")
    show.add_argument(
        "--show-personal-data", action="store_true", help="Print addresses, names and emails too."
    )
    show.set_defaults(command=_show)

    replay = actions.add_parser("replay", help="Put dead-lettered runs back on their queues.")
    _add_selection(replay)
    replay.add_argument("--dry-run", action="store_true", help="Say what would happen only.")
    replay.add_argument(
        "--rate", type=float, default=20.0, help="Replays per second at most (default 20)."
    )
    replay.set_defaults(command=_replay)

    purge = actions.add_parser("purge", help="Delete dead letters.")
    _add_selection(purge)
    purge.add_argument("--yes", action="store_true", help="Do not ask for confirmation.")
    purge.set_defaults(command=_purge)

    history = actions.add_parser("history", help="Show every replay and purge, newest first.")
    history.add_argument("--json", action="store_true", help="Print JSON.")
    history.set_defaults(command=_history)


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--handler", help="Only this handler's dead letters.")
    parser.add_argument("--type", dest="event_type", help="Only events of this type.")
    parser.add_argument("--order", dest="order_id", help="Only events of this order id.")
    parser.add_argument(
        "--since", type=parse_duration, help="Only those that failed last within, e.g. 2h."
    )
    parser.add_argument("--error", help="Only those whose error contains this text.")


def _add_selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ids", nargs="*", help="Dead letter ids.")
    _add_filters(parser)
    parser.add_argument("--group", help="Only the dead letters of this failure group.")
    parser.add_argument("--all", action="store_true", help="Every dead letter.")
    parser.add_argument("--reason", help="Why, recorded in the history.")


def _selection(args: argparse.Namespace) -> Selection:
    group = args.group if isinstance(getattr(args, "group", None), str) else None
    return Selection(
        ids=tuple(getattr(args, "ids", ())),
        handler=args.handler,
        event_type=args.event_type,
        order_id=args.order_id,
        since_seconds=args.since,
        error=args.error,
        group=group,
    )


def _runtime() -> Runtime:
    return Runtime.from_settings(get_settings())


def _selected(runtime: Runtime, args: argparse.Namespace) -> list[DeadLetter]:
    selection = _selection(args)
    if hasattr(args, "all") and selection.is_empty() and not args.all:
        raise ConfigurationError("Name dead letter ids, give filters, or pass --all.")
    return selection.pick(runtime.dead_letters.list())


def _list(args: argparse.Namespace) -> int:
    runtime = _runtime()
    entries = _selected(runtime, args)
    if args.group:
        return _print_groups(entries, as_json=args.json)
    if args.json:
        print(json.dumps([_summary(entry) for entry in entries], indent=2))
        return 0

    rows = [
        (
            entry.id[:12],
            _time(entry.last_failed_at),
            entry.handler,
            entry.event_type,
            entry.order_id or "-",
            str(entry.attempts),
            _shorten(f"{entry.error_type}: {entry.error_message}"),
        )
        for entry in entries
    ]
    _print_table(("ID", "LAST FAILED", "HANDLER", "TYPE", "ORDER", "ATTEMPTS", "ERROR"), rows)
    print(f"Total: {len(entries)} dead letter(s).")
    return 0


def _print_groups(entries: list[DeadLetter], *, as_json: bool) -> int:
    groups: dict[str, list[DeadLetter]] = defaultdict(list)
    for entry in entries:
        groups[entry.fingerprint].append(entry)
    summaries = [_group_summary(fingerprint, members) for fingerprint, members in groups.items()]
    summaries.sort(key=lambda group: -int(group["count"]))
    if as_json:
        print(json.dumps(summaries, indent=2))
        return 0

    rows = [
        (
            group["group"],
            str(group["count"]),
            group["handler"],
            _shorten(group["error"]),
            _time(group["first_failed_at"]),
            _time(group["last_failed_at"]),
            _orders_text(group["orders"]),
        )
        for group in summaries
    ]
    _print_table(("GROUP", "COUNT", "HANDLER", "ERROR", "FIRST", "LAST", "ORDERS"), rows)
    print(f"Total: {len(entries)} dead letter(s) in {len(summaries)} group(s).")
    return 0


def _group_summary(fingerprint: str, members: list[DeadLetter]) -> dict[str, Any]:
    first = members[0]
    return {
        "group": fingerprint,
        "count": len(members),
        "handler": first.handler,
        "error": f"{first.error_type}: {normalise_message(first.error_message)}",
        "first_failed_at": min(entry.first_failed_at for entry in members),
        "last_failed_at": max(entry.last_failed_at for entry in members),
        "orders": sorted({entry.order_id for entry in members if entry.order_id}),
    }


def _show(args: argparse.Namespace) -> int:
    runtime = _runtime()
    matches = [entry for entry in runtime.dead_letters.list() if entry.id.startswith(args.id)]
    if len(matches) != 1:
        found = "No" if not matches else "More than one"
        print(f"omhooks: {found} dead letter has an id starting with {args.id!r}.", file=sys.stderr)
        return 1

    entry = matches[0]
    record = {**_summary(entry), "traceback": entry.traceback}
    envelope = _parsed_body(entry.body) if entry.body else None
    record["event"] = envelope if args.show_personal_data else redact(envelope)
    if args.json:
        print(json.dumps(record, indent=2, ensure_ascii=False))
        return 0
    for key, value in record.items():
        if key not in ("event", "traceback"):
            print(f"{key}: {value}")
    print(f"traceback:\n{entry.traceback}")
    print(f"event:\n{json.dumps(record['event'], indent=2, ensure_ascii=False)}")
    return 0


def _parsed_body(body: str) -> Any:
    """Parse a stored body for display, keeping numbers too large for a double as their text.

    Parsed as floats they would be infinity, which strict JSON output cannot show.
    """
    return json.loads(body, parse_float=_finite_or_text)


def _finite_or_text(text: str) -> float | str:
    value = float(text)
    return value if math.isfinite(value) else text


def _replay(args: argparse.Namespace) -> int:
    runtime = _runtime()
    entries = _selected(runtime, args)
    replayer = Replayer(
        runtime.redis,
        runtime.dead_letters,
        runtime.registry,
        namespace=runtime.settings.namespace,
        body_ttl_seconds=runtime.settings.dedup_ttl_seconds,
        progress=runtime.progress,
        journal=runtime.journal,
    )
    words = {
        "replay": "would replay",
        "replayed": "replayed",
        "superseded": "superseded by a newer event (not replayed)",
        "already_done": "already done (not replayed)",
        "missing": "could not replay: it is no longer a dead letter",
    }

    def report(entry: DeadLetter, verdict: str) -> None:
        order = entry.order_id or "-"
        print(f"{entry.id[:12]} {entry.handler} {entry.event_id} order {order}: {words[verdict]}")

    outcome = replayer.replay(
        entries, rate_per_second=args.rate, dry_run=args.dry_run, on_each=report
    )
    for unknown in _selection(args).unmatched_ids(entries):
        print(f"{unknown}: could not replay: no dead letter has this id")
        outcome.missing.append(unknown)
    print(
        f"{'Would replay' if args.dry_run else 'Replayed'} {len(outcome.replayed)}; "
        f"superseded {len(outcome.superseded)}; already done {len(outcome.already_done)}; "
        f"could not replay {len(outcome.failed)}."
    )
    if not args.dry_run and entries:
        History(runtime.redis, namespace=runtime.settings.namespace).record(
            "replay", args.reason, outcome_ids(outcome)
        )
    return 1 if outcome.failed else 0


def _purge(args: argparse.Namespace) -> int:
    runtime = _runtime()
    entries = _selected(runtime, args)
    if not entries:
        print("No dead letter matches.")
        return 0
    if not args.yes and not _confirm(f"Delete {len(entries)} dead letter(s)? [y/N] "):
        print("Nothing deleted.")
        return 1

    deleted = [entry.id for entry in entries if runtime.dead_letters.remove(entry.id)]
    History(runtime.redis, namespace=runtime.settings.namespace).record(
        "purge", args.reason, {"purged": deleted}
    )
    print(f"Deleted {len(deleted)} dead letter(s).")
    return 0


def _history(args: argparse.Namespace) -> int:
    runtime = _runtime()
    entries = History(runtime.redis, namespace=runtime.settings.namespace).entries()
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    rows = [
        (
            _time(entry["at"]),
            f"{entry['user']}@{entry['host']}",
            entry["action"],
            ", ".join(f"{name} {count}" for name, count in entry["counts"].items() if count),
            entry["reason"] or "-",
        )
        for entry in entries
    ]
    _print_table(("AT", "WHO", "ACTION", "DEAD LETTERS", "REASON"), rows)
    return 0


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        print("omhooks: refusing to delete without --yes when not run in a terminal.")
        return False
    return input(question).strip().lower() in ("y", "yes")


def _summary(entry: DeadLetter) -> dict[str, Any]:
    return {
        "id": entry.id,
        "group": entry.fingerprint,
        "handler": entry.handler,
        "event_id": entry.event_id,
        "event_type": entry.event_type,
        "event_created_at": entry.event_created_at,
        "order_id": entry.order_id,
        "attempts": entry.attempts,
        "permanent": entry.permanent,
        "first_failed_at": _time(entry.first_failed_at),
        "last_failed_at": _time(entry.last_failed_at),
        "error_type": entry.error_type,
        "error_message": entry.error_message,
    }


def _time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


def _shorten(text: str) -> str:
    return text if len(text) <= _ERROR_WIDTH else text[: _ERROR_WIDTH - 1] + "…"


def _orders_text(orders: list[str]) -> str:
    shown = ", ".join(orders[:5])
    return f"{shown} and {len(orders) - 5} more" if len(orders) > 5 else shown or "-"


def _print_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
