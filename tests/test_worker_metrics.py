"""The workers' metrics, served by ``omhooks worker`` from all its processes."""

from __future__ import annotations

import httpx
from conftest import start_stack
from test_end_to_end import add_fault, deliver

from omhooks.redis_server import free_port


def sample(text: str, name: str, **labels: str) -> float:
    """Return the value of one sample of a Prometheus text exposition, or 0 if absent."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        series, value = line.rsplit(" ", 1)
        metric, _, label_text = series.partition("{")
        found = ",".join(sorted(part for part in label_text.rstrip("}").split(",") if part))
        if metric == name and found == wanted:
            return float(value)
    return 0.0


def test_worker_metrics_count_runs_failures_and_dead_letters(redis_url, namespace, secrets):
    port = free_port()
    stack = start_stack(
        redis_url, namespace, secrets["current"], OMHOOKS_WORKER_METRICS_PORT=str(port)
    )
    try:
        add_fault(stack, "create_note", 422)
        deliver(stack, secrets["current"], ["evt_0001", "evt_0009"])
        stack.wait_until_drained()
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    finally:
        stack.stop()

    assert (
        sample(text, "omhooks_handler_runs_total", handler="ship_when_ready", outcome="succeeded")
        == 1
    )
    assert sample(text, "omhooks_handler_runs_total", handler="note_on_hold", outcome="failed") == 1
    assert sample(text, "omhooks_dead_letters_total", handler="note_on_hold") == 1
    assert sample(text, "omhooks_dead_letters_kept") == 1
    assert 'omhooks_queue_depth{queue="dispatch"} 0.0' in text
    assert 'omhooks_queue_oldest_message_age_seconds{queue="handler.note_on_hold"} 0.0' in text
    assert sample(text, "omhooks_handler_duration_seconds_count", handler="ship_when_ready") == 1
