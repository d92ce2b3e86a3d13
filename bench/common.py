"""Helpers of both benchmarks: the machine's description, child processes, memory and CPU
readings, signed deliveries of a realistic event, and percentiles."""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Any

from redis import Redis

from omhooks.lifecycle import load_lifecycle
from omhooks.stack import wait_until_ok

__all__ = [
    "ROOT",
    "ChildProcess",
    "Profiler",
    "ResourceMonitor",
    "Usage",
    "describe_machine",
    "new_webhook_secret",
    "percentile",
    "print_machine",
    "python_module",
    "realistic_body",
    "redis_server_pid",
    "service_environment",
    "wait_for_http",
    "worker_processes",
]

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "starlette",
    "uvicorn",
    "uvloop",
    "httptools",
    "pydantic",
    "pydantic-core",
    "redis",
    "dramatiq",
    "standardwebhooks",
    "hiredis",
)
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_SAMPLE_SECONDS = 0.1
_START_TIMEOUT_SECONDS = 30.0
_STOP_TIMEOUT_SECONDS = 15.0


def describe_machine(redis_url: str) -> dict[str, str]:
    """Return the cores, CPU, Python, package versions, Redis version and git state of this run."""
    description = {
        "date": time.strftime("%Y-%m-%d"),
        "cores": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": " ".join(f"{name}={_version(name)}" for name in PACKAGES),
    }
    client = Redis.from_url(redis_url)
    try:
        description["redis-server"] = str(client.info("server")["redis_version"])
    finally:
        client.close()
    description["git"] = _git_state()
    wrk = shutil.which("wrk")
    if wrk:
        completed = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
        description["wrk"] = (completed.stdout or completed.stderr).split(" [")[0].strip()
    return description


def print_machine(description: dict[str, str]) -> None:
    """Print the machine's description, one ``machine <key>: <value>`` line per entry."""
    for key, value in description.items():
        print(f"machine {key}: {value}")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "missing"


def _git_state() -> str:
    completed = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    return completed.stdout.strip() or "unknown"


def redis_server_pid(redis_url: str) -> int:
    """Return the process id of the Redis server at ``redis_url``."""
    client = Redis.from_url(redis_url)
    try:
        return int(client.info("server")["process_id"])
    finally:
        client.close()


def positive_int(text: str) -> int:
    """Return ``text`` as an integer of at least 1, for argparse; raise its error otherwise."""
    return _whole_number(text, minimum=1)


def non_negative_int(text: str) -> int:
    """Return ``text`` as an integer of at least 0, for argparse; raise its error otherwise."""
    return _whole_number(text, minimum=0)


def make_folder(parser: argparse.ArgumentParser, option: str, folder: Path) -> None:
    """Create an option's output folder now, so that a bad path fails before the run starts."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        parser.error(f"{option}: cannot make the folder {folder}: {exc.strerror}")


def _whole_number(text: str, *, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {minimum} or more, not {value}")
    return value


def positive_float(text: str) -> float:
    """Return ``text`` as a number above 0, for argparse; raise its error otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, not {text}")
    return value


def new_webhook_secret() -> str:
    """Return a fresh ``whsec_`` endpoint secret."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


_TEMPLATE_EVENT_ID = "evt_0001"
_TEMPLATE_ORDER_ID = "ord_5001"


@cache
def _template_body() -> str:
    event: dict[str, Any] = load_lifecycle()["events"][0]
    if event["id"] != _TEMPLATE_EVENT_ID or event["data"]["order"]["id"] != _TEMPLATE_ORDER_ID:
        raise RuntimeError("The first lifecycle event is no longer evt_0001 of order ord_5001.")
    # Encoded as OrderMesh sends it: json.dumps with its default separators.
    return json.dumps(event, ensure_ascii=False)


def realistic_body(event_id: str, order_id: str) -> bytes:
    """Return the lifecycle's ``order.created`` event (three items, an address) with new ids.

    It is about 1.35 KB, the size of a real order event. The ids are put in by replacing
    the template's, so building a hundred thousand bodies takes well under a second.
    """
    template = _template_body()
    text = template.replace(f'"id": "{_TEMPLATE_EVENT_ID}"', f'"id": {json.dumps(event_id)}', 1)
    return text.replace(_TEMPLATE_ORDER_ID, order_id).encode()


def service_environment(
    redis_url: str, namespace: str, secret: str, **settings: str
) -> dict[str, str]:
    """Return the environment of a receiver or worker: this one without any OMHOOKS_ setting,
    plus the Redis, namespace, secret and ``settings`` (names of OMHOOKS_ variables)."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("OMHOOKS_") and name != "REDIS_URL"
    }
    return {
        **inherited,
        "PYTHONPATH": str(ROOT),
        "OMHOOKS_REDIS_URL": redis_url,
        "OMHOOKS_NAMESPACE": namespace,
        "OMHOOKS_WEBHOOK_SECRETS": secret,
        # The benchmarks read no worker metrics, and a fixed port would clash with a worker
        # already running on this machine.
        "OMHOOKS_WORKER_METRICS_PORT": "0",
        **settings,
    }


class ChildProcess:
    """A process started in its own session from the repository root, logging to a file."""

    def __init__(self, name: str, arguments: Sequence[str], env: dict[str, str]) -> None:
        self.name = name
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            prefix=f"omhooks-bench-{name}-", suffix=".log", delete=False
        )
        self.process = subprocess.Popen(
            list(arguments),
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    def log_text(self) -> str:
        """Return what the process has written so far."""
        return Path(self._log.name).read_text(errors="replace")

    def check_alive(self) -> None:
        """Raise ``RuntimeError`` with the process's log if it has exited."""
        if self.process.poll() is not None:
            raise RuntimeError(
                f"The {self.name} exited with status {self.process.returncode}:\n"
                f"{self.log_text()[-4000:]}"
            )

    def stop(self) -> None:
        """Stop the process with SIGTERM (SIGKILL to its process group after 15 s)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=_STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)


def wait_for_http(url: str, process: ChildProcess, timeout: float = _START_TIMEOUT_SECONDS) -> None:
    """Wait until a GET of ``url`` returns 200; raise ``RuntimeError`` if the process exits."""
    if wait_until_ok(url, check_alive=process.check_alive, timeout=timeout):
        return
    raise RuntimeError(f"The {process.name} did not respond 200 to {url} in {timeout:.0f} s.")


def process_tree(root_pid: int) -> dict[int, list[int]]:
    """Return each process under ``root_pid`` (itself included) with the ids of its children."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name in brackets may contain spaces, so the fields after it are split.
        fields = stat.rsplit(")", 1)[1].split()
        parents[int(entry.name)] = int(fields[1])
    tree: dict[int, list[int]] = {root_pid: []}
    found = True
    while found:
        found = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree[pid] = []
                tree[parent].append(pid)
                found = True
    return tree


def worker_processes(root_pid: int) -> dict[str, int]:
    """Label the processes of a Dramatiq worker started as ``root_pid``.

    The processes without children run the actors: "worker process 1", and so on. The others,
    such as Dramatiq's master and a launcher above it, only start and watch them: "worker
    parent 1", and so on, from the top.
    """
    tree = process_tree(root_pid)
    leaves = sorted(pid for pid, children in tree.items() if not children and pid != root_pid)
    parents = sorted(pid for pid in tree if pid not in leaves)
    labels = {f"worker parent {number}": pid for number, pid in enumerate(parents, start=1)}
    labels.update({f"worker process {number}": pid for number, pid in enumerate(leaves, start=1)})
    return labels


def _rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _cpu_seconds(pid: int) -> float | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    # Fields 14 and 15 of /proc/<pid>/stat (utime, stime) are the 12th and 13th after the name.
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def _machine_busy_seconds() -> float:
    """Return the CPU time all cores have spent busy since boot (the ``cpu`` line of /proc/stat)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields[:8]) - idle) / _CLOCK_TICKS


@dataclass(frozen=True)
class Usage:
    """A process's peak resident memory and its CPU use over a measurement."""

    peak_rss_mib: float
    cpu_percent: float

    def __str__(self) -> str:
        return f"RSS peak {self.peak_rss_mib:.1f} MiB, CPU {self.cpu_percent:.0f}% of a core"


class ResourceMonitor:
    """Sample the resident memory (VmRSS) of processes every 0.1 s, and their CPU time.

    ``processes`` returns the processes to watch by label. It is called at every sample, so
    processes forked after the start, such as Dramatiq's workers, are watched once they exist.
    ``other_cpu_percent`` is the CPU that the rest of the machine used meanwhile (in percent of
    one core), which shows when other work on the machine skewed a measurement.
    """

    def __init__(self, processes: Callable[[], dict[str, int]]) -> None:
        self._processes = processes
        self._peaks: dict[str, int] = {}
        self._cpu_start: dict[str, tuple[int, float, float]] = {}
        self._cpu_end: dict[str, tuple[float, float]] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._sample_until_stopped, daemon=True)
        self._machine_start = (0.0, 0.0)
        self.results: dict[str, Usage] = {}
        self.other_cpu_percent = 0.0

    def __enter__(self) -> ResourceMonitor:
        self._machine_start = (_machine_busy_seconds(), time.monotonic())
        self._sample()
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stopping.set()
        self._thread.join()
        self._sample()
        for label, (_pid, started_cpu, started_at) in self._cpu_start.items():
            ended_cpu, ended_at = self._cpu_end.get(label, (started_cpu, started_at))
            elapsed = max(ended_at - started_at, 1e-9)
            self.results[label] = Usage(
                peak_rss_mib=self._peaks.get(label, 0) / 1024,
                cpu_percent=100 * (ended_cpu - started_cpu) / elapsed,
            )
        busy_start, started_at = self._machine_start
        machine_percent = (
            100 * (_machine_busy_seconds() - busy_start) / (time.monotonic() - started_at)
        )
        watched = sum(usage.cpu_percent for usage in self.results.values())
        self.other_cpu_percent = max(0.0, machine_percent - watched)

    def _sample_until_stopped(self) -> None:
        while not self._stopping.wait(_SAMPLE_SECONDS):
            self._sample()

    def _sample(self) -> None:
        now = time.monotonic()
        for label, pid in self._processes().items():
            rss = _rss_kib(pid)
            if rss is not None:
                self._peaks[label] = max(self._peaks.get(label, 0), rss)
            cpu = _cpu_seconds(pid)
            if cpu is None:
                continue
            if label not in self._cpu_start or self._cpu_start[label][0] != pid:
                self._cpu_start[label] = (pid, cpu, now)
            self._cpu_end[label] = (cpu, now)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the nearest-rank percentile of ``values`` (``fraction`` 0.99 for p99)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


class Profiler:
    """py-spy recording a process (and its children) into a collapsed-stacks file until stopped.

    ``idle`` keeps the samples of threads that wait, such as on a Redis reply, so the profile
    shows where the time goes, not only where the CPU goes. ``gil`` keeps only the samples of
    the thread that holds the GIL, which in a CPU-bound process is where its CPU time goes.
    """

    def __init__(
        self, pid: int, output: Path, *, subprocesses: bool, idle: bool, gil: bool = False
    ) -> None:
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(py_spy).exists():
            raise RuntimeError("Profiling needs py-spy: pip install py-spy")
        output.parent.mkdir(parents=True, exist_ok=True)
        command = [
            py_spy, "record", "--pid", str(pid), "--rate", "250", "--nonblocking",
            "--format", "raw", "--output", str(output),
        ]  # fmt: skip
        if subprocesses:
            command.append("--subprocesses")
        if idle:
            command.append("--idle")
        if gil:
            command.append("--gil")
        self.output = output
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def stop(self) -> None:
        """Stop recording; py-spy writes the file when interrupted."""
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
        try:
            self._process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def python_module(*arguments: str) -> list[str]:
    """Return the command that runs ``python -m <arguments>`` with this interpreter."""
    return [sys.executable, "-m", *arguments]
