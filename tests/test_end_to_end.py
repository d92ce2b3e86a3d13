"""The whole service as real processes: sandbox, receiver (uvicorn) and worker (Dramatiq)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from conftest import start_stack

from omhooks.lifecycle import deliver_lifecycle, load_lifecycle
from omhooks.stack import LocalStack
from ordermesh.signing import signed_headers
from workers.deadletters import DeadLetterStore
from workers.journal import Journal

PLUGINS = Path(__file__).parent / "plugins"
EXPECTED_SHIPMENTS = [("ord_5001", "ven_A", "fac_A1", ["it_1", "it_2"])]
EXPECTED_REFUNDS = [
    ("ord_5001", [("it_3", False, 19.99)]),
    ("ord_5002", [("it_21", False, 34.9), ("it_22", False, 0.3), ("it_21", True, 4.9)]),
]


def effects(stack: LocalStack) -> dict[str, Any]:
    return httpx.get(f"{stack.sandbox_url}/_sandbox/effects").json()


def summarise(found: dict[str, Any]) -> tuple[list[Any], list[Any], list[Any]]:
    shipments = [
        (s["orderId"], s["vendorId"], s["facilityId"], sorted(s["orderItemIds"]))
        for s in found["shipments"]
    ]
    refunds = sorted(
        (
            r["orderId"],
            [(line["itemId"], line["isShippingRefund"], line["amount"]) for line in r["refunds"]],
        )
        for r in found["refunds"]
    )
    notes = [(n["resourceType"], n["resourceId"], n["text"]) for n in found["notes"]]
    return shipments, refunds, notes


def deliver(stack: LocalStack, secret: str, event_ids: list[str]) -> list[int]:
    lifecycle = load_lifecycle()
    selected = {"events": lifecycle["events"], "deliveryOrder": event_ids}
    deliveries = deliver_lifecycle(stack.receiver_url, stack.sandbox_url, [secret], selected)
    return [delivery.status for delivery in deliveries]


def add_fault(stack: LocalStack, operation: str, status: int, count: int | None = None) -> None:
    response = httpx.post(
        f"{stack.sandbox_url}/_sandbox/faults",
        json={"operation": operation, "status": status, "count": count},
    )
    response.raise_for_status()


def test_lifecycle_makes_exactly_the_expected_effects(stack, secrets):
    lifecycle = load_lifecycle()

    statuses = deliver(stack, secrets["current"], lifecycle["deliveryOrder"])
    stack.wait_until_drained()

    expected_statuses = [202] * len(lifecycle["deliveryOrder"])
    expected_statuses[5] = 200  # the second delivery of evt_0005
    assert statuses == expected_statuses
    shipments, refunds, notes = summarise(effects(stack))
    assert shipments == EXPECTED_SHIPMENTS
    assert refunds == EXPECTED_REFUNDS
    assert notes == [
        ("Order", "ord_5001", "Order is on customer care hold: Address could not be verified")
    ]


def test_unknown_event_type_is_stored_and_reaches_no_builtin_handler(
    stack, secrets, redis_client, namespace
):
    statuses = deliver(stack, secrets["current"], ["evt_0011"])
    stack.wait_until_drained()

    journal = Journal(redis_client, namespace=namespace, ttl_seconds=60)
    assert statuses == [202]
    assert "evt_0011" in journal.event_ids()
    assert journal.outcomes("evt_0011") == {}
    assert summarise(effects(stack)) == ([], [], [])


def test_transient_failure_is_retried_and_acts_once(stack, secrets, redis_client, namespace):
    add_fault(stack, "create_note", 503, count=2)

    deliver(stack, secrets["current"], ["evt_0009"])
    stack.wait_until_drained()

    _, _, notes = summarise(effects(stack))
    journal = Journal(redis_client, namespace=namespace, ttl_seconds=60)
    dead = DeadLetterStore(redis_client, namespace=namespace, retention_seconds=60)
    assert len(notes) == 1
    assert journal.outcomes("evt_0009") == {"note_on_hold": "succeeded"}
    assert dead.list() == []


def test_permanent_failure_is_dead_lettered_at_once(stack, secrets, redis_client, namespace):
    add_fault(stack, "create_note", 422)

    deliver(stack, secrets["current"], ["evt_0001", "evt_0006", "evt_0009"])
    stack.wait_until_drained()

    dead = DeadLetterStore(redis_client, namespace=namespace, retention_seconds=60).list()
    assert len(dead) == 1
    assert dead[0].handler == "note_on_hold"
    assert dead[0].event_id == "evt_0009"
    assert dead[0].attempts == 1
    assert dead[0].permanent is True
    assert dead[0].error_type == "ApiPermanentError"
    assert "422" in dead[0].error_message
    _, refunds, notes = summarise(effects(stack))
    assert notes == []
    assert refunds == [("ord_5001", [("it_3", False, 19.99)])]


def test_exhausted_retries_are_dead_lettered(stack, secrets, redis_client, namespace):
    add_fault(stack, "create_note", 503)

    deliver(stack, secrets["current"], ["evt_0009"])
    stack.wait_until_drained()

    dead = DeadLetterStore(redis_client, namespace=namespace, retention_seconds=60).list()
    assert len(dead) == 1
    assert dead[0].attempts == 3  # the first run and two retries
    assert dead[0].permanent is False
    assert dead[0].error_type == "ApiTransientError"
    assert dead[0].first_failed_at < dead[0].last_failed_at


def test_each_subscribed_handler_gets_its_own_run(redis_url, namespace, secrets, redis_client):
    env = {
        "OMHOOKS_HANDLER_MODULES": "recording_plugin",
        "OMHOOKS_DISABLED_HANDLERS": "ship_when_ready,refund_cancelled_items,note_on_hold",
        "PYTHONPATH": os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")]),
    }
    stack = start_stack(redis_url, namespace, secrets["current"], **env)
    try:
        for event_id, event_type in [
            ("e1", "order.created"),
            ("e2", "order.tagged"),
            ("e3", "shipment.shipped"),
        ]:
            send(stack, secrets["current"], event_id, event_type)
        stack.wait_until_drained()
    finally:
        stack.stop()

    recorded = sorted(raw for raw in redis_client.lrange(f"{namespace}:record", 0, -1))
    dead = DeadLetterStore(redis_client, namespace=namespace, retention_seconds=60).list()
    assert recorded == sorted(
        ["exact e1", "prefix e1", "everything e1", "prefix e2", "everything e2", "everything e3"]
    )
    assert [(entry.handler, entry.event_id) for entry in dead] == [("always_broken", "e1")]


def send(stack: LocalStack, secret: str, event_id: str, event_type: str) -> None:
    event = {
        "id": event_id,
        "type": event_type,
        "createdAt": "2026-12-03T10:00:00Z",
        "data": {"orderId": "ord_9"},
    }
    body = json.dumps(event).encode()
    response = httpx.post(
        stack.receiver_url, content=body, headers=signed_headers([secret], event_id, body)
    )
    assert response.status_code == 202


def test_demo_prints_the_expected_effects_as_json():
    env = {key: value for key, value in os.environ.items() if "REDIS_URL" not in key}

    completed = subprocess.run(
        [sys.executable, "-m", "omhooks", "demo", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert completed.returncode == 0, completed.stderr
    shipments, refunds, notes = summarise(json.loads(completed.stdout))
    assert shipments == EXPECTED_SHIPMENTS
    assert refunds == EXPECTED_REFUNDS
    assert len(notes) == 1


def test_logs_hold_no_personal_data(stack, secrets):
    add_fault(stack, "create_note", 422)
    add_fault(stack, "add_refund", 503)

    deliver(stack, secrets["current"], load_lifecycle()["deliveryOrder"])
    stack.wait_until_drained()

    logs = stack.log_text("worker") + stack.log_text("receiver")
    assert "Dead-lettered" in logs
    for personal in ("alex@example.com", "+1-555-0100", "1 Sample Street", "Müller", "Springfield"):
        assert personal not in logs
    assert secrets["current"] not in logs
