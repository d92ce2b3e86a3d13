"""Benchmark the workers: drain rate against a bare Dramatiq actor, and 202-to-handler latency.

    python -m bench.workers --events 5000 --seconds 10

It starts a Redis of its own (append-only file on, as in production) and measures, each with
the same worker processes and threads:

1. bare: a bare Dramatiq actor that does nothing (bench/bare_worker.py) draining ``--events``
   messages: the baseline. "bare, project broker" is the same actor on the project's broker
   class, whose consumer waits for acknowledgements in short fixed pauses where Dramatiq's
   backs off, so comparing with it leaves that difference out.
2. one handler, then three handlers: ``omhooks worker`` draining ``--events`` events that the
   receiver's own queueing code put on the dispatch queue, to no-op handlers
   (bench/noop_handlers.py). Each event costs one dispatch message and one message per handler.
3. latency: ``omhooks serve`` and ``omhooks worker`` with one handler that stores when it
   started (bench/probe_handler.py), deliveries sent at ``--rate`` a second for ``--seconds``;
   the latency is the handler's start minus the time its delivery's 202 response arrived.

A drain is timed from the first message fetched (the source list gets shorter) until no
message is queued or unacknowledged, so the workers' start-up is not counted. The last line
printed is the summary, starting with ``ratio=`` (one handler's events/s over bare messages/s).
``--rounds N`` repeats the drains, bare and service alternating, and summarises the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from handlers.registry import discover
from omhooks.redis_server import LocalRedis, free_port
from omhooks.settings import Settings
from ordermesh.events import Envelope
from ordermesh.signing import signed_headers
from receiver.queueing import EventQueue
from workers.journal import Journal
from workers.queues import DISPATCH_QUEUE, dispatch_meta, encode_message, handler_queue

from . import bare_worker, noop_handlers, probe_handler
from .common import (
    ChildProcess,
    Profiler,
    ResourceMonitor,
    Usage,
    describe_machine,
    new_webhook_secret,
    percentile,
    positive_float,
    positive_int,
    print_machine,
    python_module,
    realistic_body,
    redis_server_pid,
    service_environment,
    wait_for_http,
    worker_processes,
)

ENDPOINT = "/webhooks/ordermesh"
FILL_CONCURRENCY = 64
SENDER_CONNECTIONS = 8
FIRST_FETCH_POLL_SECONDS = 0.002
DRAIN_POLL_SECONDS = 0.005
WARMUP_SECONDS = 1.0

# Targets on a 2-core machine; see docs/performance.md.
TARGET_RATIO = 0.7
TARGET_P99_MS = 50.0
TARGET_RSS_MIB = 150.0


@dataclass
class DrainResult:
    """The drain rate of one kind of worker, with its processes' memory and CPU."""

    name: str
    events: int
    messages: int
    seconds: float
    dead: int
    usage: dict[str, Usage] = field(default_factory=dict)
    other_cpu_percent: float = 0.0
    redis_calls: dict[str, int] = field(default_factory=dict)
    redis_round_trips: int = 0

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds

    @property
    def messages_per_second(self) -> float:
        return self.messages / self.seconds


@dataclass
class LatencyResult:
    """Latencies from a delivery's 202 to its handler's start, in milliseconds.

    ``send_seconds`` is the time taken to send the ``warmup`` deliveries and then the ``sent``
    ones, which were measured.
    """

    warmup: int
    sent: int
    accepted: int
    started: int
    send_seconds: float
    latencies_ms: list[float]
    usage: dict[str, Usage] = field(default_factory=dict)
    other_cpu_percent: float = 0.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.workers",
        description="Benchmark the workers against a bare Dramatiq actor, and their latency.",
    )
    parser.add_argument(
        "--events",
        type=positive_int,
        default=5000,
        help="Events (or bare messages) per drain (5000).",
    )
    parser.add_argument(
        "--seconds", type=positive_int, default=10, help="Length of the measured latency run (10)."
    )
    parser.add_argument(
        "--rate",
        type=positive_float,
        default=500.0,
        help="Deliveries per second in the latency run (500).",
    )
    parser.add_argument(
        "--processes", type=positive_int, default=1, help="Worker processes (default 1)."
    )
    parser.add_argument(
        "--threads", type=positive_int, default=4, help="Threads per worker process (default 4)."
    )
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="An environment variable for every worker, bare or not, such as "
        "OMHOOKS_WORKER_POLL_MAX_MS=20 (which the bare worker gets as dramatiq_worker_timeout); "
        "may be repeated.",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="FOLDER",
        help="Record py-spy profiles of the worker processes during each drain into this "
        "folder (CPU samples; add --profile-idle for the samples of waiting threads too).",
    )
    parser.add_argument(
        "--profile-idle",
        action="store_true",
        help="With --profile, keep the samples of threads that wait, e.g. on Redis replies.",
    )
    parser.add_argument(
        "--profile-gil",
        action="store_true",
        help="With --profile, keep only the samples of the thread holding the GIL.",
    )
    parser.add_argument(
        "--rounds",
        type=positive_int,
        default=1,
        help="Drains of each kind, alternating bare and service (1). With more than one, the "
        "summary gives the median of each round's ratio and the median rates.",
    )
    parser.add_argument(
        "--only",
        choices=["bare", "bare-project", "one", "three", "latency"],
        action="append",
        help="Run only this part (may be repeated); by default all four run.",
    )
    return parser.parse_args(argv)


class Bench:
    """One benchmark run: its Redis, its arguments and the environment of its processes."""

    def __init__(self, args: argparse.Namespace, redis_url: str) -> None:
        self.args = args
        self.redis_url = redis_url
        self.secret = new_webhook_secret()
        self.redis = Redis.from_url(redis_url, decode_responses=True)
        self.worker_env: dict[str, str] = {}
        self.drains = 0
        for assignment in args.worker_env:
            name, separator, value = assignment.partition("=")
            if not separator:
                raise SystemExit(f"--worker-env needs NAME=VALUE, not {assignment!r}.")
            self.worker_env[name] = value
        # Redis and this script are watched too, so "other processes" is the rest of the machine.
        self.watched = {"redis-server": redis_server_pid(redis_url), "this script": os.getpid()}
        # Every handler that installed plugins bring is turned off, whatever their names.
        self.installed_handlers = sorted(discover([], []).handlers)

    def namespace(self, prefix: str) -> str:
        """Return a namespace used by no earlier drain, so each drain starts from empty keys."""
        self.drains += 1
        return f"{prefix}-{self.drains}"

    def environment(self, namespace: str, **settings: str) -> dict[str, str]:
        return service_environment(self.redis_url, namespace, self.secret, **settings)

    def start_workers(
        self, name: str, module_or_command: list[str], env: dict[str, str]
    ) -> ChildProcess:
        arguments = [
            *module_or_command,
            "--processes", str(self.args.processes),
            "--threads", str(self.args.threads),
        ]  # fmt: skip
        return ChildProcess(name, arguments, {**env, **self.worker_env})

    def handler_settings(
        self, module: str, enabled: list[str], known: tuple[str, ...]
    ) -> dict[str, str]:
        disabled = [*self.installed_handlers, *(name for name in known if name not in enabled)]
        return {
            "OMHOOKS_HANDLER_MODULES": module,
            "OMHOOKS_DISABLED_HANDLERS": ",".join(disabled),
        }

    def close(self) -> None:
        self.redis.close()


def receiver_meta(body: bytes) -> dict[str, Any]:
    """Return the metadata that the receiver queues an event with (secret 0 verified it)."""
    return {**dispatch_meta(Envelope.model_validate_json(body)), "secret_index": 0}


def fill_bare_queue(bench: Bench, namespace: str, count: int) -> None:
    """Put ``count`` messages of the bare actor on its queue, as Dramatiq's broker would."""
    messages_key, list_key = (
        f"{namespace}:{bare_worker.QUEUE}.msgs",
        f"{namespace}:{bare_worker.QUEUE}",
    )
    pipe = bench.redis.pipeline(transaction=False)
    for index in range(count):
        meta = receiver_meta(realistic_body(f"evt_bare_{index}", f"ord_{index}"))
        message_id, data = encode_message(
            bare_worker.QUEUE, bare_worker.ACTOR, (f"evt_bare_{index}", meta)
        )
        pipe.hset(messages_key, message_id, data)
        pipe.rpush(list_key, message_id)
        if len(pipe) >= 2000:
            pipe.execute()
    pipe.execute()


def fill_dispatch_queue(bench: Bench, namespace: str, count: int) -> list[str]:
    """Queue ``count`` events with the receiver's own queueing code; return their ids."""
    event_ids = [f"evt_drain_{index:07d}" for index in range(count)]

    async def fill() -> None:
        redis = AsyncRedis.from_url(bench.redis_url)
        queue = EventQueue(redis, namespace=namespace, dedup_ttl_seconds=3600)
        pending = iter(event_ids)

        async def put_some() -> None:
            for event_id in pending:
                body = realistic_body(event_id, f"ord_{event_id}")
                meta = receiver_meta(body)
                # The receiver's default ordering key, the order id.
                await queue.put(event_id, body, meta, ordering_key=meta["order_id"])

        try:
            await asyncio.gather(*(put_some() for _ in range(FILL_CONCURRENCY)))
        finally:
            await queue.aclose()
            await redis.aclose()

    asyncio.run(fill())
    return event_ids


def unfinished_messages(redis: Redis, namespace: str, queues: list[str]) -> tuple[int, int]:
    """Return the messages queued, delayed or unacknowledged, and the dead-lettered ones.

    Dramatiq's Redis broker keeps each message in ``<queue>.msgs`` (or ``<queue>.DQ.msgs``
    while delayed) from enqueue to acknowledgement, and in ``<queue>.XQ.msgs`` once dead.
    """
    pipe = redis.pipeline(transaction=False)
    for queue in queues:
        pipe.hlen(f"{namespace}:{queue}.msgs")
        pipe.hlen(f"{namespace}:{queue}.DQ.msgs")
        pipe.hlen(f"{namespace}:{queue}.XQ.msgs")
    counts = pipe.execute()
    unfinished = sum(count for index, count in enumerate(counts) if index % 3 != 2)
    dead = sum(count for index, count in enumerate(counts) if index % 3 == 2)
    return unfinished, dead


def watched_workers(workers: ChildProcess) -> dict[str, int]:
    return worker_processes(workers.pid)


def measure_drain(
    bench: Bench,
    name: str,
    namespace: str,
    workers: ChildProcess,
    source_queue: str,
    queues: list[str],
    events: int,
    messages: int,
) -> DrainResult:
    """Time the workers from their first fetch from ``source_queue`` until all is acknowledged."""
    source_list = f"{namespace}:{source_queue}"
    deadline = time.monotonic() + 60
    while bench.redis.llen(source_list) >= events:
        workers.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"The {name} workers fetched nothing in 60 s:\n{workers.log_text()}")
        time.sleep(FIRST_FETCH_POLL_SECONDS)
    calls_before = redis_calls(bench.redis)
    reads_before = redis_reads(bench.redis)
    polls = 0
    started = time.monotonic()
    # A bound so a stuck run ends: twenty times the time of a drain at 50 events a second.
    deadline = started + max(60.0, events / 50 * 20)
    profiler = None
    if bench.args.profile is not None:
        output = bench.args.profile / f"workers-{name.replace(',', '').replace(' ', '-')}.txt"
        profiler = Profiler(
            workers.pid,
            output,
            subprocesses=True,
            idle=bench.args.profile_idle,
            gil=bench.args.profile_gil,
        )

    try:
        with ResourceMonitor(lambda: {**watched_workers(workers), **bench.watched}) as monitor:
            while True:
                unfinished, dead = unfinished_messages(bench.redis, namespace, queues)
                polls += 1
                if unfinished == 0:
                    break
                workers.check_alive()
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{unfinished} messages of the {name} run were left unfinished."
                    )
                time.sleep(DRAIN_POLL_SECONDS)
            seconds = time.monotonic() - started
        calls = redis_calls(bench.redis)
        # Each poll is one pipeline, and reading the counters twice is one more round trip.
        round_trips = redis_reads(bench.redis) - reads_before - polls - 2
    finally:
        if profiler is not None:
            profiler.stop()
            print(f"{name}: py-spy profile written to {profiler.output}")
    return DrainResult(
        name=name,
        events=events,
        messages=messages,
        seconds=seconds,
        dead=dead,
        usage=monitor.results,
        other_cpu_percent=monitor.other_cpu_percent,
        redis_round_trips=round_trips,
        redis_calls={
            command: count - calls_before.get(command, 0)
            for command, count in calls.items()
            if count > calls_before.get(command, 0)
        },
    )


def redis_calls(redis: Redis) -> dict[str, int]:
    """Return how many times Redis ran each command, scripts' own calls included.

    The benchmark's own commands (``hlen`` to poll, ``llen``, ``info``) are left out.
    """
    stats = redis.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(entry["calls"]) for name, entry in stats.items()}
    for own in ("hlen", "llen", "info"):
        calls.pop(own, None)
    return calls


def redis_reads(redis: Redis) -> int:
    """Return how many requests Redis has read from its clients: one per round trip."""
    return int(redis.info("stats")["total_reads_processed"])


def run_bare(bench: Bench, *, project_broker: bool = False) -> DrainResult:
    name = "bare, project broker" if project_broker else "bare"
    namespace = bench.namespace("omhooks-bench-bare")
    count = bench.args.events
    fill_bare_queue(bench, namespace, count)
    # The same longest pause between empty polls as omhooks worker gives its Dramatiq processes.
    default_poll_max_ms = str(Settings.model_fields["worker_poll_max_ms"].default)
    poll_max_ms = bench.worker_env.get("OMHOOKS_WORKER_POLL_MAX_MS", default_poll_max_ms)
    env = {
        **bench.environment(namespace),
        "dramatiq_worker_timeout": poll_max_ms,
        "OMHOOKS_WORKER_POLL_MAX_MS": poll_max_ms,
    }
    if project_broker:
        env["BENCH_BARE_BROKER"] = "project"
    workers = bench.start_workers(
        f"{name} workers", python_module("dramatiq", "bench.bare_worker"), env
    )
    try:
        return measure_drain(
            bench, name, namespace, workers, bare_worker.QUEUE, [bare_worker.QUEUE], count, count
        )
    finally:
        workers.stop()


def run_service_drain(bench: Bench, handler_count: int) -> DrainResult:
    namespace = bench.namespace(f"omhooks-bench-drain-{handler_count}")
    enabled = list(noop_handlers.NAMES[:handler_count])
    count = bench.args.events
    event_ids = fill_dispatch_queue(bench, namespace, count)
    settings = bench.handler_settings("bench.noop_handlers", enabled, noop_handlers.NAMES)
    workers = bench.start_workers(
        f"workers ({handler_count} handlers)",
        python_module("omhooks", "worker"),
        bench.environment(namespace, **settings),
    )
    queues = [DISPATCH_QUEUE, handler_queue("default"), *(handler_queue(name) for name in enabled)]
    name = "one handler" if handler_count == 1 else f"{handler_count} handlers"
    try:
        result = measure_drain(
            bench,
            name,
            namespace,
            workers,
            DISPATCH_QUEUE,
            queues,
            count,
            count * (1 + handler_count),
        )
    finally:
        workers.stop()
    succeeded = count_succeeded(bench, namespace, event_ids, enabled)
    print(f"{name}: {succeeded} of {count * handler_count} handler runs recorded as succeeded")
    return result


def count_succeeded(bench: Bench, namespace: str, event_ids: list[str], handlers: list[str]) -> int:
    journal = Journal(bench.redis, namespace=namespace, ttl_seconds=3600)
    succeeded = 0
    for event_id in event_ids:
        outcomes = journal.outcomes(event_id)
        succeeded += sum(1 for name in handlers if outcomes.get(name) == "succeeded")
    return succeeded


def build_requests(bench: Bench, port: int, prefix: str, count: int) -> list[tuple[str, bytes]]:
    """Return signed HTTP/1.1 requests, timestamped now, with their event ids."""
    requests = []
    for index in range(count):
        event_id = f"{prefix}_{index:07d}"
        body = realistic_body(event_id, f"ord_{event_id}")
        headers = signed_headers([bench.secret], event_id, body)
        lines = [f"POST {ENDPOINT} HTTP/1.1", f"host: 127.0.0.1:{port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append(f"content-length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        requests.append((event_id, head + body))
    return requests


async def send_steadily(
    port: int, requests: list[tuple[str, bytes]], rate: float
) -> dict[str, tuple[int, float]]:
    """Send the requests at ``rate`` a second over a few keep-alive connections.

    Request ``i`` is sent at ``start + i / rate``, or as soon as a connection is free if that
    time has passed. Returns each event id's status and the wall-clock time its response
    arrived.
    """
    answers: dict[str, tuple[int, float]] = {}
    start = time.monotonic() + 0.05
    next_index = 0

    async def use_connection() -> None:
        nonlocal next_index
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while next_index < len(requests):
                index = next_index
                next_index += 1
                delay = start + index / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                event_id, raw = requests[index]
                writer.write(raw)
                head = await reader.readuntil(b"\r\n\r\n")
                answered_at = time.time()
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                answers[event_id] = (int(head[9:12]), answered_at)
        finally:
            writer.close()
            await writer.wait_closed()

    await asyncio.gather(*(use_connection() for _ in range(SENDER_CONNECTIONS)))
    return answers


def wait_until_ready(bench: Bench, namespace: str, workers: ChildProcess) -> None:
    """Wait until every worker process has fetched once (its heartbeat is in Redis)."""
    deadline = time.monotonic() + 30
    while bench.redis.zcard(f"{namespace}:__heartbeats__") < bench.args.processes:
        workers.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"The workers did not start in 30 s:\n{workers.log_text()}")
        time.sleep(0.05)


def run_latency(bench: Bench) -> LatencyResult:
    namespace = "omhooks-bench-latency"
    args = bench.args
    settings = bench.handler_settings(
        "bench.probe_handler", [probe_handler.NAME], (probe_handler.NAME,)
    )
    env = bench.environment(namespace, **settings)
    port = free_port()
    receiver = ChildProcess(
        "receiver",
        python_module("omhooks", "serve", "--host", "127.0.0.1", "--port", str(port)),
        env,
    )
    workers = bench.start_workers("workers (latency)", python_module("omhooks", "worker"), env)
    queues = [DISPATCH_QUEUE, handler_queue("default"), handler_queue(probe_handler.NAME)]
    try:
        wait_for_http(f"http://127.0.0.1:{port}/readyz", receiver)
        wait_until_ready(bench, namespace, workers)
        # The warm-up runs straight into the measured deliveries, at the same rate. With a
        # pause between them, the idle workers' polls back off (up to
        # OMHOOKS_WORKER_POLL_MAX_MS), and the first deliveries measured wait that long.
        warmup = build_requests(bench, port, "warmup", int(args.rate * WARMUP_SECONDS))
        requests = build_requests(bench, port, "latency", int(args.rate * args.seconds))

        def watched() -> dict[str, int]:
            return {"receiver": receiver.pid, **watched_workers(workers), **bench.watched}

        with ResourceMonitor(watched) as monitor:
            sent_at = time.monotonic()
            answers = asyncio.run(send_steadily(port, warmup + requests, args.rate))
            send_seconds = time.monotonic() - sent_at
        for event_id, _ in warmup:
            answers.pop(event_id, None)
        deadline = time.monotonic() + 60
        while unfinished_messages(bench.redis, namespace, queues)[0] > 0:
            workers.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError("The latency run's messages were not finished within 60 s.")
            time.sleep(0.05)
    finally:
        receiver.stop()
        workers.stop()

    started_at = bench.redis.hgetall(namespace + probe_handler.STARTED_SUFFIX)
    accepted = {event_id: at for event_id, (status, at) in answers.items() if status == 202}
    latencies = [
        (float(started_at[event_id]) - answered_at) * 1000
        for event_id, answered_at in accepted.items()
        if event_id in started_at
    ]
    return LatencyResult(
        warmup=len(warmup),
        sent=len(answers),
        accepted=len(accepted),
        started=len(latencies),
        send_seconds=send_seconds,
        latencies_ms=latencies,
        usage=monitor.results,
        other_cpu_percent=monitor.other_cpu_percent,
    )


def print_drain(result: DrainResult) -> None:
    print(
        f"{result.name}: {result.events} events, {result.messages} messages in "
        f"{result.seconds:.2f} s: {result.events_per_second:.0f} events/s, "
        f"{result.messages_per_second:.0f} messages/s, {result.dead} dead-lettered"
    )
    per_event = sorted(result.redis_calls.items(), key=lambda item: -item[1])
    print(
        f"{result.name}: Redis round trips per event: "
        f"{result.redis_round_trips / result.events:.1f}, commands per event: "
        + ", ".join(f"{command} {count / result.events:.1f}" for command, count in per_event)
    )
    worker_cpu = sum(
        usage.cpu_percent for label, usage in result.usage.items() if label.startswith("worker")
    )
    # CPU time per event is less skewed than events/s when other work shares the cores.
    cpu_per_event = worker_cpu / 100 * result.seconds / result.events * 1e6
    print(f"{result.name}: worker CPU per event: {cpu_per_event:.0f} us")
    print_usage(result.name, result.usage, result.other_cpu_percent)


def print_usage(name: str, usage: dict[str, Usage], other_cpu_percent: float) -> None:
    for label, measured in usage.items():
        print(f"{name}: {label}: {measured}")
    print(f"{name}: other processes on the machine: CPU {other_cpu_percent:.0f}% of a core")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parts = set(args.only or ["bare", "bare-project", "one", "three", "latency"])
    rounds: dict[str, list[DrainResult]] = {}
    latency: LatencyResult | None = None

    with LocalRedis() as redis_server:
        bench = Bench(args, redis_server.url)
        try:
            print_machine(describe_machine(redis_server.url))
            print(
                f"workers: {args.processes} process(es) x {args.threads} thread(s); "
                f"{args.events} events per drain; latency at {args.rate:.0f}/s for {args.seconds} s"
                + (f"; worker environment {bench.worker_env}" if bench.worker_env else "")
            )
            for number in range(1, args.rounds + 1):
                if args.rounds > 1:
                    print(f"round {number} of {args.rounds}")
                if "bare" in parts:
                    rounds.setdefault("bare", []).append(run_bare(bench))
                    print_drain(rounds["bare"][-1])
                if "bare-project" in parts:
                    drain = run_bare(bench, project_broker=True)
                    rounds.setdefault("bare-project", []).append(drain)
                    print_drain(drain)
                if "one" in parts:
                    rounds.setdefault("one", []).append(run_service_drain(bench, 1))
                    print_drain(rounds["one"][-1])
                if "three" in parts:
                    rounds.setdefault("three", []).append(run_service_drain(bench, 3))
                    print_drain(rounds["three"][-1])
            if "latency" in parts:
                latency = run_latency(bench)
                print_latency(latency, args.rate)
        finally:
            bench.close()

    summary = summarise(rounds, latency)
    print_targets(summary)
    print(" ".join(f"{name}={value}" for name, value in summary.items()))
    missing = latency is not None and latency.started < latency.accepted
    dead = any(result.dead for results in rounds.values() for result in results)
    return 1 if missing or dead else 0


def print_latency(result: LatencyResult, rate: float) -> None:
    latencies = result.latencies_ms
    print(
        f"latency: {result.sent} deliveries sent right after {result.warmup} of warm-up, "
        f"{result.warmup + result.sent} in {result.send_seconds:.1f} s "
        f"({(result.warmup + result.sent) / result.send_seconds:.0f}/s, asked {rate:.0f}/s), "
        f"{result.accepted} answered 202, {result.started} handler runs started"
    )
    print(
        f"latency: 202 to handler start: p50 {percentile(latencies, 0.5):.1f} ms, "
        f"p90 {percentile(latencies, 0.9):.1f} ms, p99 {percentile(latencies, 0.99):.1f} ms, "
        f"max {max(latencies, default=float('nan')):.1f} ms"
    )
    print_usage("latency", result.usage, result.other_cpu_percent)


def median_rate(drains: list[DrainResult]) -> float:
    """Return the median of the drains' messages/s (the mean of the middle two of an even count)."""
    return statistics.median(drain.messages_per_second for drain in drains)


def median_ratio(service: list[DrainResult], bare: list[DrainResult]) -> float:
    """Return the median over rounds of service events/s over the same round's bare msgs/s.

    Each round's two drains ran back to back, so a ratio within a round is less skewed by
    other work on the machine than medians taken apart.
    """
    return statistics.median(
        drain.events_per_second / base.messages_per_second
        for drain, base in zip(service, bare, strict=True)
    )


def summarise(
    rounds: dict[str, list[DrainResult]], latency: LatencyResult | None
) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    if "bare" in rounds and "one" in rounds:
        summary["ratio"] = f"{median_ratio(rounds['one'], rounds['bare']):.2f}"
    if "bare" in rounds and "three" in rounds:
        summary["ratio_three"] = f"{median_ratio(rounds['three'], rounds['bare']):.2f}"
    if "bare-project" in rounds and "one" in rounds:
        project = median_ratio(rounds["one"], rounds["bare-project"])
        summary["ratio_project_broker"] = f"{project:.2f}"
    drains_per_kind = max((len(drains) for drains in rounds.values()), default=0)
    if drains_per_kind > 1:
        summary["rounds"] = drains_per_kind
    if "bare" in rounds:
        summary["bare_msgs_per_s"] = f"{median_rate(rounds['bare']):.0f}"
    if "bare-project" in rounds:
        summary["bare_project_broker_msgs_per_s"] = f"{median_rate(rounds['bare-project']):.0f}"
    for kind, label in (("one", "one_handler"), ("three", "three_handlers")):
        if kind in rounds:
            events = statistics.median(drain.events_per_second for drain in rounds[kind])
            summary[f"{label}_events_per_s"] = f"{events:.0f}"
    if latency:
        summary["latency_p50_ms"] = f"{percentile(latency.latencies_ms, 0.5):.1f}"
        summary["latency_p99_ms"] = f"{percentile(latency.latencies_ms, 0.99):.1f}"

    # The largest of the service's worker processes, their parents included.
    usages = [
        result.usage
        for name, drains in rounds.items()
        if not name.startswith("bare")
        for result in drains
    ]
    if latency:
        usages.append(latency.usage)
    worker_rss = [
        usage.peak_rss_mib
        for measured in usages
        for label, usage in measured.items()
        if label.startswith("worker")
    ]
    if worker_rss:
        summary["worker_rss_mib"] = f"{max(worker_rss):.1f}"
    if latency and "receiver" in latency.usage:
        summary["receiver_rss_mib"] = f"{latency.usage['receiver'].peak_rss_mib:.1f}"
    return summary


def print_targets(summary: dict[str, Any]) -> None:
    checks = []
    if "ratio" in summary:
        ratio = float(summary["ratio"])
        checks.append((f"one handler >= {TARGET_RATIO}x bare", ratio >= TARGET_RATIO, f"{ratio}x"))
    if "latency_p99_ms" in summary:
        p99 = float(summary["latency_p99_ms"])
        checks.append(
            (f"202 to handler p99 < {TARGET_P99_MS:.0f} ms", p99 < TARGET_P99_MS, f"{p99} ms")
        )
    if "worker_rss_mib" in summary:
        rss = float(summary["worker_rss_mib"])
        checks.append(
            (f"worker RSS < {TARGET_RSS_MIB:.0f} MiB", rss < TARGET_RSS_MIB, f"{rss} MiB")
        )
    for name, met, value in checks:
        print(f"target {name}: {'met' if met else 'NOT met'} ({value})")


if __name__ == "__main__":
    sys.exit(main())
