"""Rejection log lines: at most N per reason per window, then one summary line."""

from __future__ import annotations

import logging

import httpx
import pytest
from test_receiver import make_event, signed

from omhooks.settings import Settings
from ordermesh.sandbox.testing import running_server
from receiver.app import create_app
from receiver.rejection_log import RejectionLog

LOGGER_NAME = "test.rejections"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def rejection_log(clock: FakeClock) -> RejectionLog:
    return RejectionLog(
        logging.getLogger(LOGGER_NAME), max_lines=10, window_seconds=60.0, clock=clock
    )


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == LOGGER_NAME]


def test_flood_is_cut_to_max_lines(rejection_log, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER_NAME)

    for number in range(25):
        rejection_log.log(logging.WARNING, "invalid_signature", "rejection %d", number)

    assert messages(caplog) == [f"rejection {number}" for number in range(10)]


def test_summary_follows_the_window(rejection_log, clock, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER_NAME)
    for number in range(25):
        rejection_log.log(logging.WARNING, "invalid_signature", "rejection %d", number)

    clock.now += 60.0
    rejection_log.log(logging.WARNING, "invalid_signature", "rejection after")

    logged = messages(caplog)
    assert logged[10] == (
        "Rejections for reason invalid_signature in the last 60 seconds not logged one by one: 15."
    )
    assert logged[11] == "rejection after"
    assert len(logged) == 12


def test_no_summary_within_the_window(rejection_log, clock, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER_NAME)
    for _ in range(11):
        rejection_log.log(logging.WARNING, "invalid_signature", "rejection")

    clock.now += 59.0
    rejection_log.log(logging.WARNING, "invalid_signature", "rejection")

    assert len(messages(caplog)) == 10


def test_reasons_have_separate_limits(rejection_log, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER_NAME)
    for _ in range(20):
        rejection_log.log(logging.WARNING, "invalid_signature", "signature")

    rejection_log.log(logging.WARNING, "malformed_json", "json")

    assert messages(caplog)[-1] == "json"


def test_flush_writes_pending_summaries(rejection_log, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER_NAME)
    for _ in range(12):
        rejection_log.log(logging.ERROR, "queue_unavailable", "unavailable")

    rejection_log.flush()

    last = caplog.records[-1]
    assert last.getMessage().startswith("Rejections for reason queue_unavailable")
    assert last.getMessage().endswith(": 2.")
    assert last.levelno == logging.ERROR


def test_receiver_logs_at_most_ten_rejections_per_reason(redis_url, namespace, secrets, caplog):
    settings = Settings(
        redis_url=redis_url,
        namespace=namespace,
        webhook_secrets=[secrets["current"]],
        redis_durability="warn",
    )
    body, headers = signed(secrets["current"], make_event(), **{"webhook-signature": "v1,x"})
    caplog.set_level(logging.WARNING, logger="receiver.app")

    with running_server(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        statuses = [
            client.post("/webhooks/ordermesh", content=body, headers=headers).status_code
            for _ in range(15)
        ]
        lines_while_running = [
            record.getMessage()
            for record in caplog.records
            if record.name == "receiver.app" and "invalid_signature" in record.getMessage()
        ]
    receiver_lines = [r.getMessage() for r in caplog.records if r.name == "receiver.app"]
    summary = receiver_lines[-1]

    assert statuses == [401] * 15
    assert len(lines_while_running) == 10
    assert summary.startswith("Rejections for reason invalid_signature")
    assert summary.endswith(": 5.")
    assert secrets["current"] not in caplog.text
