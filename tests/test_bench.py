"""The benchmark scripts run end to end with tiny settings and print their summary line.

They check that the scripts work, never how fast anything is.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def run_bench(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def printed_lines(completed: subprocess.CompletedProcess[str]) -> list[str]:
    """Return the lines a benchmark printed, after checking that it succeeded."""
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout.splitlines()


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_receiver_bench_prints_summary():
    completed = run_bench(
        "bench.receiver",
        "--seconds", "1",
        "--warmup-seconds", "0",
        "--deliveries", "8000",
        "--rounds", "2",
        "--floor",
    )  # fmt: skip

    lines = printed_lines(completed)
    summary = lines[-1]
    assert summary.startswith("ratio=")
    assert "missing=0" in summary
    assert any(line.startswith("round 2: ratio ") for line in lines)
    floor_runs = [line for line in lines if line.startswith("floor: ") and "statuses" in line]
    assert len(floor_runs) == 2
    assert all("202: " in line for line in floor_runs)
    assert any(line.startswith("floor: ") and "receiver / floor " in line for line in lines)


def test_workers_bench_prints_summary():
    # The three-handler drain is left out to keep this test short; it runs like the other.
    completed = run_bench(
        "bench.workers",
        "--events", "100",
        "--seconds", "1",
        "--rate", "100",
        "--only", "bare", "--only", "one", "--only", "latency",
    )  # fmt: skip

    summary = printed_lines(completed)[-1]
    assert summary.startswith("ratio=")
    assert "latency_p99_ms=" in summary


def test_endpoint_bench_prints_summary():
    completed = run_bench("bench.endpoint", "--deliveries", "64", "--concurrency", "8")

    summary = printed_lines(completed)[-1]
    assert summary.startswith("cpu_us=")
    assert "deliveries=64 queued=64" in summary


def test_endpoint_bench_rejects_too_few_prepared():
    completed = run_bench("bench.endpoint", "--deliveries", "64", "--prepared", "10")

    assert completed.returncode == 2
    assert "--prepared must be at least" in completed.stderr
