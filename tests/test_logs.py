"""Log lines: JSON objects in production, with the event's ids and no personal data."""

from __future__ import annotations

import json
import logging

import pytest
from conftest import start_stack
from test_end_to_end import add_fault, deliver

from omhooks.logs import configure_logging


@pytest.fixture(autouse=True)
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_the_event_ids(capsys):
    configure_logging("INFO", "json")
    log = logging.LoggerAdapter(
        logging.getLogger("handlers.note_on_hold"),
        {"event_id": "evt_1", "event_type": "order.updated", "order_id": "ord_1", "handler": "h"},
    )

    log.info("Added note %s.", "note_1")

    line = json.loads(capsys.readouterr().err.strip())
    assert line["message"] == "Added note note_1."
    assert line["event_id"] == "evt_1"
    assert line["order_id"] == "ord_1"
    assert line["handler"] == "h"
    assert line["level"] == "INFO"


def test_text_lines_show_the_event_ids(capsys):
    configure_logging("INFO", "text")

    logging.LoggerAdapter(logging.getLogger("x"), {"event_id": "evt_2"}).warning("Slow.")

    assert "Slow. [event_id=evt_2]" in capsys.readouterr().err


def test_worker_logs_are_json_with_handler_and_event(redis_url, namespace, secrets):
    stack = start_stack(redis_url, namespace, secrets["current"], OMHOOKS_LOG_LEVEL="DEBUG")
    try:
        add_fault(stack, "create_note", 422)
        deliver(stack, secrets["current"], ["evt_0001", "evt_0009"])
        stack.wait_until_drained()
        worker_log = stack.log_text("worker")
    finally:
        stack.stop()

    records = [json.loads(line) for line in worker_log.splitlines() if line.startswith("{")]
    about_hold = [r for r in records if r.get("event_id") == "evt_0009"]
    assert records
    assert any(r.get("handler") == "note_on_hold" for r in about_hold)
    assert "alex@example.com" not in worker_log
