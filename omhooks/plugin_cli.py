"""``omhooks handlers``, ``omhooks send`` and ``omhooks events``: the plugin author's tools."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from redis import RedisError

from workers.journal import Journal, JournalEntry

from .errors import ConfigurationError
from .handler_listing import HandlerDescription, describe_handlers, load_all_handlers
from .redis_clients import sync_redis
from .sending import SendResult, load_events, send_events
from .settings import Settings, get_settings
from .templates import template_names

__all__ = ["DEFAULT_RECEIVER_URL", "add_plugin_commands"]

DEFAULT_RECEIVER_URL = "http://127.0.0.1:8000/webhooks/ordermesh"
OUTCOMES = ("queued", "succeeded", "retrying", "skipped", "dead")


def add_plugin_commands(commands: Any) -> None:
    """Add ``omhooks handlers``, ``omhooks send`` and ``omhooks events`` to the command line."""
    handlers = commands.add_parser(
        "handlers", help="List every discovered handler and every plugin that failed to load."
    )
    handlers.add_argument("--json", action="store_true", help="Print JSON.")
    handlers.set_defaults(command=_handlers)

    _add_send(commands)

    events = commands.add_parser(
        "events", help="List recent events with each handler's outcome, newest first."
    )
    events.add_argument("--type", dest="event_type", help="Only events of this type.")
    events.add_argument("--order", dest="order_id", help="Only events of this order id.")
    events.add_argument(
        "--outcome", choices=OUTCOMES, help="Only events with a handler in this outcome."
    )
    events.add_argument(
        "--limit",
        type=_positive_int,
        default=50,
        help="Maximum number of events shown (default 50).",
    )
    events.add_argument("--json", action="store_true", help="Print JSON.")
    events.set_defaults(command=_events)


def _add_send(commands: Any) -> None:
    send = commands.add_parser(
        "send",
        help="Sign an event and send it to a receiver.",
        description="Sign an event from a JSON file or a template and POST it to a receiver. "
        f"Templates: {', '.join(template_names())}.",
    )
    send.add_argument(
        "event",
        help="Path of a JSON file with an event or a list of events, or a template's event type.",
    )
    send.add_argument("--order", dest="order_id", help="Make the event about this order id.")
    send.add_argument("--id", dest="event_id", help="Event id (default: a fresh one).")
    send.add_argument(
        "--url",
        default=DEFAULT_RECEIVER_URL,
        help=f"The receiver's webhook URL (default {DEFAULT_RECEIVER_URL}).",
    )
    send.add_argument(
        "--secret",
        help="Endpoint secret (whsec_...) to sign with (default: OMHOOKS_WEBHOOK_SECRETS). "
        "Prefer the setting: other users of the machine can read command lines.",
    )
    send.add_argument(
        "--repeat",
        type=_positive_int,
        default=1,
        help="Send each event this many times with the same id (default 1).",
    )
    send.add_argument(
        "--delay", type=float, default=0.0, help="Seconds to wait between two sends (default 0)."
    )
    send.add_argument(
        "--sandbox-url", help="Put each event's order or item snapshot into this sandbox first."
    )
    send.set_defaults(command=_send)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: it must be at least 1")
    return value


def _handlers(args: argparse.Namespace) -> int:
    from workers.runtime import default_retry_policy

    settings = get_settings()
    registry = load_all_handlers(settings)
    described = describe_handlers(registry, default_retry_policy(settings))
    if args.json:
        errors = [{"source": error.source, "error": error.error} for error in registry.errors]
        print(
            json.dumps({"handlers": [d.to_json() for d in described], "errors": errors}, indent=2)
        )
        return 1 if registry.errors else 0

    for description in described:
        _print_description(description)
    enabled = sum(1 for description in described if description.enabled)
    print(f"Total: {len(described)} handler(s), {enabled} enabled.")
    if registry.errors:
        print(f"\nFailed to load {len(registry.errors)} plugin(s) or module(s):")
    for error in registry.errors:
        print(f"  {error.source}: {error.error}")
    return 1 if registry.errors else 0


def _print_description(description: HandlerDescription) -> None:
    print(f"{description.name} ({description.status})")
    print(f"  from:          {description.origin}")
    print(f"  subscribed to: {', '.join(description.event_types)}")
    print(f"  retry:         {description.retry}")
    print(f"  snapshot:      {'yes' if description.snapshot else 'no'}")
    print()


def _send(args: argparse.Namespace) -> int:
    secrets = _signing_secrets(args.secret, get_settings())
    events = load_events(args.event, order_id=args.order_id, event_id=args.event_id)

    def report(result: SendResult) -> None:
        status = "-" if result.status is None else str(result.status)
        order = result.order_id or "-"
        print(f"{result.event_id} {result.event_type} order {order}: {status} {result.answer}")

    results = send_events(
        events,
        url=args.url,
        secrets=secrets,
        repeat=args.repeat,
        delay_seconds=args.delay,
        sandbox_url=args.sandbox_url,
        on_each=report,
    )
    return 0 if all(result.accepted for result in results) else 1


def _signing_secrets(given: str | None, settings: Settings) -> list[str]:
    secrets = [given] if given is not None else settings.secret_values()
    if not secrets:
        raise ConfigurationError(
            "No endpoint secret to sign with: set OMHOOKS_WEBHOOK_SECRETS or pass --secret."
        )
    if any(not secret.removeprefix("whsec_") for secret in secrets):
        raise ConfigurationError("An endpoint secret is empty: it must be whsec_ and base64.")
    return secrets


def _events(args: argparse.Namespace) -> int:
    settings = get_settings()
    redis = sync_redis(settings, socket_timeout=10, decode_responses=True)
    try:
        journal = Journal(
            redis, namespace=settings.namespace, ttl_seconds=settings.journal_ttl_seconds
        )
        entries = [entry for entry in journal.recent() if _matches(entry, args)]
    except RedisError as exc:
        raise ConfigurationError(
            f"Could not read the journal from Redis ({type(exc).__name__}: {exc}); "
            "check REDIS_URL and OMHOOKS_NAMESPACE."
        ) from exc
    finally:
        redis.close()
    shown = entries[: args.limit]
    if args.json:
        print(json.dumps([_entry_json(entry) for entry in shown], indent=2))
        return 0

    rows = [
        (
            _time(entry.dispatched_at),
            entry.event_id,
            entry.event_type,
            entry.order_id or "-",
            _outcomes_text(entry.outcomes),
        )
        for entry in shown
    ]
    _print_table(("DISPATCHED", "EVENT", "TYPE", "ORDER", "HANDLERS"), rows)
    print(f"Shown: {len(shown)} of {len(entries)} matching event(s).")
    return 0


def _matches(entry: JournalEntry, args: argparse.Namespace) -> bool:
    if args.event_type is not None and entry.event_type != args.event_type:
        return False
    if args.order_id is not None and entry.order_id != args.order_id:
        return False
    return args.outcome is None or args.outcome in entry.outcomes.values()


def _entry_json(entry: JournalEntry) -> dict[str, Any]:
    return {
        "event_id": entry.event_id,
        "event_type": entry.event_type,
        "order_id": entry.order_id,
        "dispatched_at": _time(entry.dispatched_at),
        "outcomes": entry.outcomes,
    }


def _outcomes_text(outcomes: dict[str, str]) -> str:
    if not outcomes:
        return "(no handler subscribed)"
    return ", ".join(f"{name} {outcomes[name]}" for name in sorted(outcomes))


def _time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


def _print_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())
