"""Measure the delivery endpoint's own CPU cost per delivery, without an HTTP server.

    python -m bench.endpoint --deliveries 20000

It starts a Redis of its own (append-only file on, as in production) and builds the receiver
app. Then ``--concurrency`` tasks in one uvloop event loop call the app as an ASGI app, each
with signed, unique deliveries of the 1.34 KB order event that bench/receiver.py sends. So the
figure is what ``POST /webhooks/ordermesh`` costs on top of the server: the checks, the JSON,
the message and the Redis round trips, shared by the concurrent puts as in production. It
varies less than a run under wrk, since no server or load generator shares the cores.

CPU time on a shared virtual machine still drifts by 20% or more over minutes. Instruction
counts do not. Run the script twice under ``valgrind --tool=callgrind`` with two numbers of
``--deliveries`` and the same ``--prepared``, so that the runs differ only in the deliveries
sent. The difference of the instruction counts over the difference of the numbers is the
count per delivery.
``--profile FILE`` writes a cProfile of the measured part. The last line printed is the
summary, starting with ``cpu_us=``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvloop

from omhooks.redis_server import LocalRedis
from omhooks.settings import Settings
from ordermesh.signing import signed_headers
from receiver.app import create_app

from .common import (
    describe_machine,
    make_folder,
    new_webhook_secret,
    positive_int,
    print_machine,
    realistic_body,
)

ENDPOINT = "/webhooks/ordermesh"
WARMUP_DELIVERIES = 2000

# One signed delivery: the request's raw headers and its body.
Delivery = tuple[list[tuple[bytes, bytes]], bytes]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.endpoint",
        description="Measure the delivery endpoint's CPU time per delivery, in process.",
    )
    parser.add_argument(
        "--deliveries",
        type=positive_int,
        default=20000,
        help="Deliveries measured, after 2,000 of warm-up, rounded down to a multiple of "
        "--concurrency (default 20000).",
    )
    parser.add_argument(
        "--concurrency",
        type=positive_int,
        default=32,
        help="Deliveries in progress at once, as connections under wrk (default 32).",
    )
    parser.add_argument(
        "--prepared",
        type=positive_int,
        help="Deliveries to sign before the run (default: as many as are sent, warm-up included).",
    )
    parser.add_argument("--profile", metavar="FILE", help="Write a cProfile of the measured part.")
    args = parser.parse_args(argv)
    if args.deliveries < args.concurrency:
        parser.error("--deliveries must be at least --concurrency")
    if args.profile:
        make_folder(parser, "--profile", Path(args.profile).parent)
    needed = sent_deliveries(args)
    if args.prepared is not None and args.prepared < needed:
        parser.error(f"--prepared must be at least the {needed} deliveries sent")
    return args


def sent_deliveries(args: argparse.Namespace) -> int:
    """Return how many deliveries the run sends: the measured ones and the warm-up."""
    concurrency: int = args.concurrency
    measured: int = args.deliveries // concurrency * concurrency
    return measured + WARMUP_DELIVERIES // concurrency * concurrency


def signed_deliveries(secret: str, count: int) -> list[Delivery]:
    """Return ``count`` signed deliveries, each with an event and an order of its own."""
    deliveries = []
    for _ in range(count):
        event_id = f"evt_{uuid.uuid4().hex}"
        body = realistic_body(event_id, f"ord_{uuid.uuid4().hex[:12]}")
        headers = signed_headers([secret], event_id, body)
        raw = [(b"host", b"127.0.0.1")]
        raw += [(name.encode(), value.encode()) for name, value in headers.items()]
        raw.append((b"content-length", str(len(body)).encode()))
        deliveries.append((raw, body))
    return deliveries


async def run(app: Any, deliveries: Iterator[Delivery], count: int, statuses: Counter[int]) -> None:
    """Send ``count`` deliveries to the app one after another, counting the response statuses."""
    for _ in range(count):
        raw_headers, body = next(deliveries)
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": ENDPOINT,
            "raw_path": ENDPOINT.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": raw_headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }

        async def receive(body: bytes = body) -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses[message["status"]] += 1

        await app(scope, receive, send)


async def measure(args: argparse.Namespace, redis_url: str) -> tuple[float, float, Counter[int]]:
    """Return the CPU and wall seconds of the measured deliveries, and their statuses."""
    secret = new_webhook_secret()
    per_task = args.deliveries // args.concurrency
    warmup_per_task = WARMUP_DELIVERIES // args.concurrency
    deliveries = iter(signed_deliveries(secret, args.prepared or sent_deliveries(args)))
    settings = Settings.model_validate(
        {"redis_url": redis_url, "namespace": "omhooks-bench", "webhook_secrets": [secret]}
    )
    app = create_app(settings)
    statuses: Counter[int] = Counter()
    # The app's lifespan connects to Redis and checks its durability, as under uvicorn.
    async with app.router.lifespan_context(app):
        warmup = Counter[int]()
        await asyncio.gather(
            *(run(app, deliveries, warmup_per_task, warmup) for _ in range(args.concurrency))
        )
        profiler = cProfile.Profile() if args.profile else None
        if profiler is not None:
            profiler.enable()
        cpu_started, wall_started = time.process_time(), time.perf_counter()
        await asyncio.gather(
            *(run(app, deliveries, per_task, statuses) for _ in range(args.concurrency))
        )
        cpu, wall = time.process_time() - cpu_started, time.perf_counter() - wall_started
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
    return cpu, wall, statuses


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with LocalRedis() as redis_server:
        print_machine(describe_machine(redis_server.url))
        cpu, wall, statuses = uvloop.run(measure(args, redis_server.url))
    count = sum(statuses.values())
    answered = dict(sorted(statuses.items()))
    print(f"deliveries: {count}, {args.concurrency} at once, statuses {answered}")
    if args.profile:
        print(f"cProfile written to {args.profile}; the CPU time includes the profiler's own")
    print(
        f"cpu_us={cpu / count * 1e6:.1f} wall_us={wall / count * 1e6:.1f} "
        f"deliveries={count} queued={statuses[202]}"
    )
    return 0 if statuses[202] == count else 1


if __name__ == "__main__":
    sys.exit(main())
