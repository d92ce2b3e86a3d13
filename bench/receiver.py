"""Benchmark the receiver against a bare Starlette endpoint under the same wrk load.

    python -m bench.receiver --seconds 10

It starts a Redis of its own (append-only file on, as in production), then ``omhooks serve``
and the bare app of bench/baseline_app.py, each on a free loopback port with one uvicorn
process. wrk drives each in turn with the same load (the other server is idle meanwhile):
pre-signed, unique deliveries of a 1.34 KB order event over 32 connections. ``--rounds N``
repeats the pair of runs and summarises the medians, since runs on a shared machine vary by
10-20%. Afterwards every delivery that got a 202 response must be on the dispatch queue. The
last line printed is the summary, starting with ``ratio=``.

``--floor`` also measures bench/floor_app.py in each round: the work that each delivery needs
(signature, strict JSON, envelope, dispatch metadata, one queued put) without the receiver's
limits, metrics and error handling. Its rate against the baseline's estimates the best ratio
that this design can reach on the machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis

from omhooks.redis_server import LocalRedis, free_port
from ordermesh.signing import signed_headers
from workers.queues import DISPATCH_QUEUE, queue_keys

from .common import (
    ROOT,
    ChildProcess,
    Profiler,
    ResourceMonitor,
    Usage,
    describe_machine,
    make_folder,
    new_webhook_secret,
    non_negative_int,
    positive_int,
    print_machine,
    python_module,
    realistic_body,
    redis_server_pid,
    service_environment,
    wait_for_http,
)

NAMESPACE = "omhooks-bench"
ENDPOINT = "/webhooks/ordermesh"
LUA_SCRIPT = ROOT / "bench" / "deliveries.lua"
# Enough deliveries that a receiver never repeats one: the fastest receiver run on the 2-core
# machine of docs/performance.md served 11,835 requests/s (2026-12-04).
DELIVERIES_PER_SECOND = 16000
RESULT_MARKER = "BENCH_RESULT "
# The start of each server's event ids. The floor app queues its events in the receiver's Redis,
# so it needs ids of its own. Both prefixes have five letters, so all bodies have the same size.
ID_PREFIXES = {"receiver": "bench", "baseline": "bench", "floor": "floor"}

# Targets on a 2-core machine; see docs/performance.md.
TARGET_RATIO = 0.5
TARGET_P99_MS = 10.0
TARGET_RSS_MIB = 100.0


@dataclass
class LoadResult:
    """The measurements of one wrk run, with the processes' memory and CPU during it."""

    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    statuses: dict[int, int]
    repeated: int
    socket_errors: int
    accepted_ids: list[str]
    usage: dict[str, Usage] = field(default_factory=dict)
    other_cpu_percent: float = 0.0

    @property
    def rate(self) -> float:
        """Responses per second."""
        return self.requests / self.seconds

    def describe(self) -> str:
        statuses = ", ".join(
            f"{status}: {count}" for status, count in sorted(self.statuses.items())
        )
        return (
            f"{self.rate:.0f} requests/s ({self.requests} in {self.seconds:.1f} s), "
            f"latency p50 {self.p50_ms:.2f} ms, p90 {self.p90_ms:.2f} ms, "
            f"p99 {self.p99_ms:.2f} ms, max {self.max_ms:.1f} ms; statuses {{{statuses}}}, "
            f"socket errors {self.socket_errors}, repeated deliveries {self.repeated}"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.receiver",
        description="Benchmark the receiver against a bare Starlette endpoint with wrk.",
    )
    parser.add_argument(
        "--seconds",
        type=positive_int,
        default=10,
        help="Length of each measured run (default 10).",
    )
    parser.add_argument(
        "--warmup-seconds",
        type=non_negative_int,
        default=1,
        help="Unmeasured load before each measured run (default 1; 0 for none).",
    )
    parser.add_argument(
        "--connections",
        type=positive_int,
        default=32,
        help="Concurrent connections (default 32).",
    )
    parser.add_argument("--threads", type=positive_int, default=1, help="wrk threads (default 1).")
    parser.add_argument(
        "--deliveries",
        type=positive_int,
        help=f"Signed deliveries to prepare per run (default {DELIVERIES_PER_SECOND} a second).",
    )
    parser.add_argument(
        "--rounds",
        type=positive_int,
        default=1,
        help="Measured runs of each server, receiver and baseline alternating (default 1). The "
        "summary gives the median of each round's ratio and the medians of the figures.",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="Also measure bench/floor_app.py, the work each delivery needs and nothing else, "
        "in every round after the baseline.",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="FOLDER",
        help="Record a py-spy profile of the receiver during the measured run into this folder.",
    )
    args = parser.parse_args(argv)
    # wrk gives each of its threads its own connections and its own share of the deliveries.
    if args.connections < args.threads:
        parser.error("--connections must be at least --threads")
    if args.deliveries is not None and args.deliveries < args.threads:
        parser.error("--deliveries must be at least --threads")
    if args.profile is not None:
        make_folder(parser, "--profile", args.profile)
    return args


def write_deliveries(path: Path, secret: str, count: int, prefix: str) -> tuple[int, int]:
    """Write ``count`` signed deliveries, timestamped now; return the smallest and largest body."""
    sizes = []
    with path.open("w", encoding="utf-8") as output:
        for index in range(count):
            event_id = f"{prefix}_{index:07d}"
            body = realistic_body(event_id, f"ord_{prefix}_{index}")
            headers = signed_headers([secret], event_id, body)
            timestamp, signature = headers["webhook-timestamp"], headers["webhook-signature"]
            output.write(f"{event_id}\t{timestamp}\t{signature}\t{body.decode()}\n")
            sizes.append(len(body))
    return min(sizes), max(sizes)


def run_wrk(
    url: str,
    deliveries: Path,
    args: argparse.Namespace,
    seconds: int,
    watched: dict[str, int],
    profile_output: Path | None = None,
) -> LoadResult:
    """Run wrk for ``seconds`` against ``url`` and return what it measured.

    With ``profile_output``, py-spy records the first process of ``watched`` meanwhile.
    """
    accepted_path = deliveries.with_suffix(".accepted")
    # stdbuf makes wrk's output line-buffered, so its "Running" line, printed once every
    # thread has loaded its deliveries, starts the measurement of memory and CPU.
    command = [
        "stdbuf", "-oL", "wrk",
        "--threads", str(args.threads),
        "--connections", str(args.connections),
        "--duration", f"{seconds}s",
        "--timeout", "10s",
        "--script", str(LUA_SCRIPT),
        url,
        "--", str(deliveries), str(args.threads), str(accepted_path),
    ]  # fmt: skip
    wrk = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wrk.stdout is not None
    output = []
    for line in wrk.stdout:
        output.append(line)
        if line.startswith("Running"):
            break
    profiler = None
    try:
        if profile_output is not None:
            server_pid = next(iter(watched.values()))
            profiler = Profiler(server_pid, profile_output, subprocesses=False, idle=False)
        with ResourceMonitor(lambda: {**watched, "wrk": wrk.pid}) as monitor:
            rest, stderr = wrk.communicate(timeout=seconds + 120)
    except BaseException:
        # Stop wrk, so that it does not keep loading a server that is being stopped.
        wrk.kill()
        wrk.wait()
        raise
    stdout = "".join(output) + rest
    if profiler is not None:
        profiler.stop()
    if wrk.returncode != 0:
        raise RuntimeError(f"wrk failed with status {wrk.returncode}:\n{stdout}\n{stderr}")

    result_line = next(
        (line for line in stdout.splitlines() if line.startswith(RESULT_MARKER)), None
    )
    if result_line is None:
        raise RuntimeError(f"wrk printed no result line:\n{stdout}\n{stderr}")
    raw = json.loads(result_line.removeprefix(RESULT_MARKER))
    return LoadResult(
        requests=raw["requests"],
        seconds=raw["duration_us"] / 1e6,
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        statuses={int(status): count for status, count in raw["statuses"].items()},
        repeated=raw["repeated"],
        socket_errors=raw["socket_errors"],
        accepted_ids=accepted_path.read_text().split(),
        usage=monitor.results,
        other_cpu_percent=monitor.other_cpu_percent,
    )


def measure_server(
    name: str,
    server: ChildProcess,
    base_url: str,
    secret: str,
    args: argparse.Namespace,
    workdir: Path,
    watched: dict[str, int],
    round_number: int = 1,
) -> LoadResult:
    """Measure the server with fresh deliveries, after a warm-up in round 1; return the run."""
    url = base_url + ENDPOINT
    prefix = ID_PREFIXES[name]
    if args.warmup_seconds > 0 and round_number == 1:
        warmup = workdir / f"{name}-warmup.tsv"
        write_deliveries(
            warmup, secret, DELIVERIES_PER_SECOND * args.warmup_seconds, f"warmup-{prefix}"
        )
        run_wrk(url, warmup, args, args.warmup_seconds, watched)

    count = args.deliveries or DELIVERIES_PER_SECOND * args.seconds
    stem = name if args.rounds == 1 else f"{name}-{round_number}"
    deliveries = workdir / f"{stem}.tsv"
    smallest, largest = write_deliveries(deliveries, secret, count, f"{prefix}{round_number}")
    print(f"{name}: {count} deliveries prepared, bodies of {smallest} to {largest} bytes")
    profile = args.profile / f"{stem}.txt" if args.profile else None
    result = run_wrk(url, deliveries, args, args.seconds, watched, profile)
    server.check_alive()
    print(f"{name}: {result.describe()}")
    # CPU time per request is less skewed than requests/s when other work shares the cores.
    print(f"{name}: CPU per request: {cpu_per_request(result, name):.0f} us")
    for label, usage in result.usage.items():
        # The server's process is watched under the server's name.
        process_label = "uvicorn process" if label == name else label
        print(f"{name}: {process_label}: {usage}")
    print(f"{name}: other processes on the machine: CPU {result.other_cpu_percent:.0f}% of a core")
    if profile is not None:
        print(f"{name}: py-spy profile written to {profile}")
    return result


def cpu_per_request(result: LoadResult, label: str) -> float:
    """Return the microseconds of CPU the process ``label`` spent per response."""
    cpu_seconds = result.usage[label].cpu_percent / 100 * result.seconds
    return cpu_seconds / result.requests * 1e6


def queued_event_ids(redis_url: str) -> set[str]:
    """Return the ids of the events on the dispatch queue (no worker runs, so all are there)."""
    messages_key, _ = queue_keys(NAMESPACE, DISPATCH_QUEUE)
    client = Redis.from_url(redis_url)
    try:
        messages = client.hvals(messages_key)
    finally:
        client.close()
    return {str(json.loads(message)["args"][0]) for message in messages}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("bench.receiver: wrk is not installed (apt-get install wrk).", file=sys.stderr)
        return 2
    secret = new_webhook_secret()

    with LocalRedis() as redis_server, tempfile.TemporaryDirectory(prefix="omhooks-bench-") as tmp:
        workdir = Path(tmp)
        print_machine(describe_machine(redis_server.url))
        print(
            f"load: wrk, {args.connections} connections, {args.threads} thread(s), "
            f"{args.seconds} s measured after {args.warmup_seconds} s of warm-up"
        )

        env = service_environment(redis_server.url, NAMESPACE, secret)
        receiver_port, baseline_port = free_port(), free_port()
        receiver = ChildProcess(
            "receiver",
            python_module("omhooks", "serve", "--host", "127.0.0.1", "--port", str(receiver_port)),
            env,
        )
        baseline = ChildProcess(
            "baseline", python_module("bench.baseline_app", "--port", str(baseline_port)), env
        )
        floor_port = free_port()
        floor = (
            ChildProcess("floor", python_module("bench.floor_app", "--port", str(floor_port)), env)
            if args.floor
            else None
        )
        measured: list[LoadResult] = []
        base: list[LoadResult] = []
        floors: list[LoadResult] = []
        try:
            wait_for_http(f"http://127.0.0.1:{receiver_port}/readyz", receiver)
            wait_for_http(f"http://127.0.0.1:{baseline_port}/healthz", baseline)
            if floor is not None:
                wait_for_http(f"http://127.0.0.1:{floor_port}/healthz", floor)
            receiver_watched = {
                "receiver": receiver.pid,
                "redis-server": redis_server_pid(redis_server.url),
            }
            # Both servers run throughout: the one not measured is idle.
            for number in range(1, args.rounds + 1):
                if args.rounds > 1:
                    print(f"round {number} of {args.rounds}")
                measured.append(
                    measure_server(
                        "receiver",
                        receiver,
                        f"http://127.0.0.1:{receiver_port}",
                        secret,
                        args,
                        workdir,
                        receiver_watched,
                        number,
                    )
                )
                base.append(
                    measure_server(
                        "baseline",
                        baseline,
                        f"http://127.0.0.1:{baseline_port}",
                        secret,
                        args,
                        workdir,
                        {"baseline": baseline.pid},
                        number,
                    )
                )
                if floor is not None:
                    floors.append(
                        measure_server(
                            "floor",
                            floor,
                            f"http://127.0.0.1:{floor_port}",
                            secret,
                            args,
                            workdir,
                            {"floor": floor.pid},
                            number,
                        )
                    )
        finally:
            receiver.stop()
            baseline.stop()
            if floor is not None:
                floor.stop()

        queued = queued_event_ids(redis_server.url)
        accepted = {event_id for result in measured for event_id in result.accepted_ids}
        missing = accepted - queued
        measured_queued = {event_id for event_id in queued if event_id.startswith("bench")}
        print(
            f"queue check: {len(accepted)} deliveries answered 202, "
            f"{len(measured_queued)} of the measured runs on the dispatch queue, "
            f"{len(missing)} answered 202 but not queued"
        )

    ratios = [run.rate / base_run.rate for run, base_run in zip(measured, base, strict=True)]
    if args.rounds > 1:
        for number, ratio in enumerate(ratios, start=1):
            print(f"round {number}: ratio {ratio:.2f}")
    ratio = statistics.median(ratios)
    rss = max(result.usage["receiver"].peak_rss_mib for result in measured)
    p99_ms = median_of(measured, lambda result: result.p99_ms)
    print_targets(ratio, p99_ms, rss)
    if floors:
        print_floor(measured, base, floors)
    print(
        f"ratio={ratio:.2f} "
        f"receiver_rps={median_of(measured, lambda result: result.rate):.0f} "
        f"baseline_rps={median_of(base, lambda result: result.rate):.0f} "
        f"receiver_p50_ms={median_of(measured, lambda result: result.p50_ms):.2f} "
        f"receiver_p99_ms={p99_ms:.2f} "
        f"baseline_p50_ms={median_of(base, lambda result: result.p50_ms):.2f} "
        f"baseline_p99_ms={median_of(base, lambda result: result.p99_ms):.2f} "
        f"accepted={len(accepted)} queued={len(measured_queued)} missing={len(missing)} "
        f"receiver_rss_mib={rss:.1f} "
        f"receiver_cpu_us={median_of(measured, lambda r: cpu_per_request(r, 'receiver')):.0f} "
        f"baseline_cpu_us={median_of(base, lambda r: cpu_per_request(r, 'baseline')):.0f}"
    )
    return 1 if missing else 0


def print_floor(
    measured: list[LoadResult], base: list[LoadResult], floors: list[LoadResult]
) -> None:
    """Print the floor app's figures: its rate against the baseline's and the receiver's."""
    to_base = [run.rate / base_run.rate for run, base_run in zip(floors, base, strict=True)]
    to_receiver = [run.rate / floor.rate for run, floor in zip(measured, floors, strict=True)]
    print(
        f"floor: {median_of(floors, lambda result: result.rate):.0f} requests/s, "
        f"{median_of(floors, lambda r: cpu_per_request(r, 'floor')):.0f} us CPU per request; "
        f"floor / baseline {statistics.median(to_base):.2f}, "
        f"receiver / floor {statistics.median(to_receiver):.2f} (medians of the rounds)"
    )


def median_of(results: list[LoadResult], figure: Callable[[LoadResult], float]) -> float:
    """Return the median of one figure over the rounds' results."""
    return statistics.median(figure(result) for result in results)


def print_targets(ratio: float, p99_ms: float, rss_mib: float) -> None:
    checks = [
        (f"throughput >= {TARGET_RATIO}x baseline", ratio >= TARGET_RATIO, f"{ratio:.2f}x"),
        (f"p99 < {TARGET_P99_MS:.0f} ms", p99_ms < TARGET_P99_MS, f"{p99_ms:.2f} ms"),
        (f"RSS < {TARGET_RSS_MIB:.0f} MiB", rss_mib < TARGET_RSS_MIB, f"{rss_mib:.1f} MiB"),
    ]
    for name, met, value in checks:
        print(f"target {name}: {'met' if met else 'NOT met'} ({value})")


if __name__ == "__main__":
    sys.exit(main())
