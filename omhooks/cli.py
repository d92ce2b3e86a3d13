"""The ``omhooks`` command: run the receiver, the workers, the sandbox or the demo."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError

from .dlq_cli import add_dlq_commands
from .errors import ConfigurationError
from .logs import configure_logging
from .plugin_cli import add_plugin_commands
from .reconcile_cli import add_reconcile_commands
from .settings import Settings, get_settings, settings_reference

__all__ = ["main"]

Command = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``omhooks`` command and return its exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        command: Command = args.command
        return command(args)
    except ConfigurationError as exc:
        print(f"omhooks: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        if exc.title != Settings.__name__:
            raise
        print(f"omhooks: {_invalid_settings(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _invalid_settings(exc: ValidationError) -> str:
    """Describe each invalid setting by its variable and the problem, without its value.

    pydantic's own message shows each value, and a value may be a secret.
    """
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        name = "_".join(str(part) for part in error["loc"])
        # A field is named by its attribute, or by the variable when it has aliases.
        variable = name if name.isupper() else f"OMHOOKS_{name.upper()}"
        problems.append(f"{variable}: {error['msg']}")
    return "Invalid settings: " + "; ".join(problems) + "."


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omhooks", description="Merchant-side webhook service for OrderMesh."
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="Run the webhook receiver under uvicorn.")
    serve.add_argument("--host", default="0.0.0.0", help="Address to listen on (default 0.0.0.0).")
    serve.add_argument("--port", type=int, default=8000, help="Port to listen on (default 8000).")
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes.")
    serve.set_defaults(command=_serve)

    worker = commands.add_parser("worker", help="Run Dramatiq workers that run the handlers.")
    worker.add_argument(
        "--processes", type=int, help="Worker processes (OMHOOKS_WORKER_PROCESSES)."
    )
    worker.add_argument("--threads", type=int, help="Threads per process (OMHOOKS_WORKER_THREADS).")
    worker.set_defaults(command=_worker)

    sandbox = commands.add_parser("sandbox", help="Run the local sandbox of the OrderMesh API.")
    sandbox.add_argument("--host", default="127.0.0.1", help="Address to listen on.")
    sandbox.add_argument("--port", type=int, default=8070, help="Port to listen on (default 8070).")
    sandbox.add_argument("--client-id", default="sandbox", help="Service client id it accepts.")
    sandbox.add_argument("--webhook-url", help="Send signed webhooks of its own changes here.")
    sandbox.add_argument(
        "--drop-rate",
        type=float,
        default=0.0,
        help="Share of webhooks to drop, 0 to 1 (default 0).",
    )
    sandbox.add_argument("--drop-seed", type=int, default=0, help="Seed of the drops (default 0).")
    sandbox.add_argument(
        "--snapshot-events",
        action="store_true",
        help="Also send order.created/order.updated for snapshots put through /_sandbox.",
    )
    sandbox.set_defaults(command=_sandbox)

    demo = commands.add_parser(
        "demo", help="Run the whole service on the fixture lifecycle and print the effects."
    )
    demo.add_argument("--json", action="store_true", help="Print the effects as one JSON object.")
    demo.set_defaults(command=_demo)

    add_dlq_commands(commands)
    add_reconcile_commands(commands)
    add_plugin_commands(commands)

    secrets = commands.add_parser(
        "secrets", help="Show when each configured webhook secret last verified a delivery."
    )
    secrets.add_argument("--json", action="store_true", help="Print JSON.")
    secrets.set_defaults(command=_secrets)

    config = commands.add_parser("config", help="Print the effective settings, secrets masked.")
    config.add_argument(
        "--reference", action="store_true", help="Print the table of every setting instead."
    )
    config.set_defaults(command=_config)
    return parser


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    uvicorn.run(
        "receiver.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=20,
    )
    return 0


def _worker(args: argparse.Namespace) -> int:
    settings = get_settings()
    processes = args.processes or settings.worker_processes
    threads = args.threads or settings.worker_threads
    from workers.process import run_workers

    configure_logging(settings.log_level, settings.log_format)
    return run_workers(settings, processes=processes, threads=threads)


def _sandbox(args: argparse.Namespace) -> int:
    from ordermesh.sandbox import run

    configure_logging(get_settings().log_level, get_settings().log_format)
    secret = os.environ.get("OMHOOKS_SANDBOX_CLIENT_SECRET", "sandbox-secret")
    webhook_secrets = get_settings().secret_values()
    try:
        run(
            args.host,
            args.port,
            client_id=args.client_id,
            client_secret=secret,
            webhook_url=args.webhook_url,
            webhook_secret=webhook_secrets[0] if webhook_secrets else None,
            drop_rate=args.drop_rate,
            drop_seed=args.drop_seed,
            snapshot_events=args.snapshot_events,
        )
    except ValueError as exc:  # an invalid drop rate, webhook URL or secret
        raise ConfigurationError(str(exc)) from exc
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(as_json=args.json)


def _config(args: argparse.Namespace) -> int:
    if args.reference:
        print(settings_reference(), end="")
        return 0
    settings: Settings = get_settings()
    shown = settings.model_dump(mode="json")
    if settings.redis_url:
        shown["redis_url"] = _without_password(settings.redis_url)
    print(json.dumps(shown, indent=2, default=str))
    return 0


def _secrets(args: argparse.Namespace) -> int:
    from receiver.secret_use import configured_secrets, last_verified

    from .redis_clients import sync_redis

    settings = get_settings()
    seen = last_verified(sync_redis(settings, decode_responses=True), settings.namespace)
    rows = [
        {
            "source": source,
            "position": position,
            "fingerprint": fingerprint,
            "last_verified": seen.get(fingerprint),
        }
        for source, fingerprints in configured_secrets(settings).items()
        for position, fingerprint in enumerate(fingerprints)
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        moment = row["last_verified"]
        when = "never" if moment is None else datetime.fromtimestamp(float(moment)).astimezone()
        print(f"{row['source']}  #{row['position']}  {row['fingerprint']}  last verified: {when}")
    return 0


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:**********@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))
