"""Ordering, crashes, races and Redis durability, with real processes being killed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import start_stack
from test_end_to_end import deliver, effects

from omhooks.redis_server import LocalRedis, free_port
from omhooks.settings import Settings
from ordermesh.events import Envelope
from ordermesh.signing import signed_headers
from workers.actors import dispatch_event
from workers.deadletters import DeadLetterStore
from workers.journal import Journal
from workers.queues import dispatch_meta
from workers.runtime import Runtime

PLUGINS = Path(__file__).parent / "plugins"
PLUGIN_ENV = {
    "OMHOOKS_HANDLER_MODULES": "reliability_plugin",
    "OMHOOKS_DISABLED_HANDLERS": "ship_when_ready,refund_cancelled_items,note_on_hold",
    "PYTHONPATH": os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")]),
    "OMHOOKS_BROKER_HEARTBEAT_TIMEOUT_SECONDS": "2",
    "OMHOOKS_BROKER_MAINTENANCE_PER_MILLION": "1000000",
    "OMHOOKS_ORDER_LOCK_SECONDS": "3",
}


def event(event_id: str, event_type: str, order_id: str, minute: int, **data: Any) -> bytes:
    envelope = {
        "id": event_id,
        "type": event_type,
        "createdAt": f"2026-12-03T10:{minute:02d}:00Z",
        "data": {"orderId": order_id, **data},
    }
    return json.dumps(envelope).encode()


def post(url: str, secret: str, body: bytes) -> int:
    event_id = json.loads(body)["id"]
    return httpx.post(
        url, content=body, headers=signed_headers([secret], event_id, body)
    ).status_code


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.05)


@pytest.fixture
def plugin_stack(redis_url, namespace, secrets):
    running = start_stack(redis_url, namespace, secrets["current"], **PLUGIN_ENV)
    yield running
    running.stop()


def test_runs_of_one_order_follow_created_at(plugin_stack, secrets, redis_client, namespace):
    plugin_stack.stop_worker()
    minutes = [5, 1, 4, 2, 3]
    for minute in minutes:
        body = event(f"evt_m{minute}", "order.updated", "ord_a", minute)
        assert post(plugin_stack.receiver_url, secrets["current"], body) == 202

    plugin_stack.start_worker()
    plugin_stack.wait_until_drained()

    runs = [json.loads(raw)["id"] for raw in redis_client.lrange(f"{namespace}:test:runs", 0, -1)]
    ends = redis_client.lrange(f"{namespace}:test:ends", 0, -1)
    assert runs == ["evt_m1", "evt_m2", "evt_m3", "evt_m4", "evt_m5"]
    assert ends == runs


def test_runs_of_different_orders_overlap(plugin_stack, secrets, redis_client, namespace):
    plugin_stack.stop_worker()
    first = event("evt_a", "order.updated", "ord_a", 1, rendezvous="ord_b")
    second = event("evt_b", "order.updated", "ord_b", 1, rendezvous="ord_a")
    post(plugin_stack.receiver_url, secrets["current"], first)
    post(plugin_stack.receiver_url, secrets["current"], second)

    plugin_stack.start_worker()
    plugin_stack.wait_until_drained()

    assert redis_client.lrange(f"{namespace}:test:rendezvous_missed", 0, -1) == []
    assert sorted(redis_client.lrange(f"{namespace}:test:ends", 0, -1)) == ["evt_a", "evt_b"]


def test_snapshot_handler_skips_an_older_event(stack, secrets, redis_client, namespace):
    deliver(stack, secrets["current"], ["evt_0001", "evt_0004"])
    stack.wait_until_drained()

    deliver(stack, secrets["current"], ["evt_0003"])
    stack.wait_until_drained()

    outcomes = Journal(redis_client, namespace=namespace, ttl_seconds=60).outcomes("evt_0003")
    assert outcomes["ship_when_ready"] == "skipped"
    assert outcomes["refund_cancelled_items"] == "skipped"


def test_racing_duplicates_on_two_receivers_queue_once(
    plugin_stack, secrets, redis_client, namespace
):
    plugin_stack.stop_worker()
    second_port = free_port()
    plugin_stack.start_process(
        "receiver-2", ["serve", "--host", "127.0.0.1", "--port", str(second_port)]
    )
    urls = [plugin_stack.receiver_url, f"http://127.0.0.1:{second_port}/webhooks/ordermesh"]
    wait_for(lambda: receiver_ready(urls[1]))
    body = event("evt_race", "order.updated", "ord_r", 1)
    start = threading.Barrier(20)
    statuses: list[int] = []

    def send(index: int) -> None:
        start.wait()
        statuses.append(post(urls[index % 2], secrets["current"], body))

    threads = [threading.Thread(target=send, args=(index,)) for index in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [200] * 19 + [202]
    assert redis_client.llen(f"{namespace}:dispatch") == 1


def receiver_ready(receiver_url: str) -> bool:
    try:
        return httpx.get(receiver_url.replace("/webhooks/ordermesh", "/readyz")).status_code == 200
    except httpx.TransportError:
        return False


def test_killed_worker_has_its_message_delivered_again(
    plugin_stack, secrets, redis_client, namespace
):
    body = event("evt_slow", "test.slow", "ord_s", 1)
    assert post(plugin_stack.receiver_url, secrets["current"], body) == 202
    wait_for(lambda: redis_client.exists(f"{namespace}:test:started:evt_slow"))

    plugin_stack.kill_worker()
    plugin_stack.start_worker()
    plugin_stack.wait_until_drained(timeout=60)

    assert redis_client.lrange(f"{namespace}:test:completed", 0, -1) == ["evt_slow"]


def test_crash_between_api_answer_and_ack_makes_one_effect(
    plugin_stack, secrets, redis_client, namespace
):
    order = {"id": "ord_c", "status": "New", "items": [], "updatedAt": "2026-12-03T10:00:00Z"}
    httpx.put(f"{plugin_stack.sandbox_url}/_sandbox/orders/ord_c", json=order).raise_for_status()
    body = event("evt_crash", "test.crash", "ord_c", 1)
    assert post(plugin_stack.receiver_url, secrets["current"], body) == 202
    wait_for(lambda: redis_client.exists(f"{namespace}:test:crashed:evt_crash"))

    plugin_stack.kill_worker()
    plugin_stack.start_worker()
    plugin_stack.wait_until_drained(timeout=60)

    notes = [
        note for note in effects(plugin_stack)["notes"] if note["text"] == "note for evt_crash"
    ]
    assert redis_client.lrange(f"{namespace}:test:completed", 0, -1) == ["evt_crash"]
    assert len(notes) == 1


def run_receiver(redis_url: str, secret: str, **env: str) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    environment = {
        **os.environ,
        "OMHOOKS_REDIS_URL": redis_url,
        "OMHOOKS_WEBHOOK_SECRETS": secret,
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "omhooks", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ), port


def test_receiver_refuses_redis_without_append_only_file(secrets):
    with LocalRedis(appendfsync="off") as redis_server:
        receiver, _ = run_receiver(redis_server.url, secrets["current"])
        output, _ = receiver.communicate(timeout=30)

    assert receiver.returncode != 0
    assert "append-only file is off" in output


def test_receiver_runs_on_non_durable_redis_when_told_to_warn(secrets):
    with LocalRedis(appendfsync="off") as redis_server:
        receiver, port = run_receiver(
            redis_server.url, secrets["current"], OMHOOKS_REDIS_DURABILITY="warn"
        )
        try:
            wait_for(lambda: receiver_ready(f"http://127.0.0.1:{port}/webhooks/ordermesh"))
        finally:
            receiver.terminate()
            output, _ = receiver.communicate(timeout=30)

    assert "would lose accepted events" in output


def test_receiver_starts_on_durable_redis(secrets):
    with LocalRedis() as redis_server:
        receiver, port = run_receiver(redis_server.url, secrets["current"])
        try:
            wait_for(lambda: receiver_ready(f"http://127.0.0.1:{port}/webhooks/ordermesh"))
        finally:
            receiver.terminate()
            output, _ = receiver.communicate(timeout=30)

    assert "would lose accepted events" not in output


def test_invalid_event_data_is_dead_lettered_without_its_values(
    plugin_stack, secrets, redis_client, namespace
):
    address = "Alex Example, 1 Sample Street, alex@example.com"
    body = json.dumps(
        {
            "id": "evt_bad",
            "type": "test.bad_order",
            "createdAt": "2026-12-03T10:00:00Z",
            "data": {"order": {"id": "ord_bad", "shippingAddress": address}},
        }
    ).encode()
    assert post(plugin_stack.receiver_url, secrets["current"], body) == 202

    plugin_stack.wait_until_drained()

    dead = DeadLetterStore(redis_client, namespace=namespace, retention_seconds=60).list()
    assert [(entry.handler, entry.attempts) for entry in dead] == [("reads_the_order", 1)]
    assert "shippingAddress" in dead[0].error_message
    assert "alex@example.com" not in dead[0].error_message + dead[0].traceback
    assert "alex@example.com" not in plugin_stack.log_text("worker")


def test_handler_sees_the_account_of_the_event(redis_url, namespace, secrets, redis_client):
    accounts = json.dumps({"shop-eu": {"secrets": [secrets["previous"]]}})
    stack = start_stack(
        redis_url, namespace, secrets["current"], **PLUGIN_ENV, OMHOOKS_ACCOUNTS=accounts
    )
    try:
        default = event("evt_acc_1", "test.account", "ord_acc", 1)
        assert post(stack.receiver_url, secrets["current"], default) == 202
        other = event("evt_acc_2", "test.account", "ord_acc", 2)
        assert post(stack.receiver_url + "/shop-eu", secrets["previous"], other) == 202
        stack.wait_until_drained()
    finally:
        stack.stop()

    assert redis_client.lrange(f"{namespace}:test:accounts", 0, -1) == ["-", "shop-eu"]


def test_lost_body_run_clears_pending(
    plugin_stack, redis_url, redis_client, namespace, monkeypatch
):
    plugin_stack.stop_worker()
    monkeypatch.syspath_prepend(str(PLUGINS))
    settings = Settings(
        redis_url=redis_url,
        namespace=namespace,
        redis_durability="warn",
        handler_modules=[PLUGIN_ENV["OMHOOKS_HANDLER_MODULES"]],
        disabled_handlers=PLUGIN_ENV["OMHOOKS_DISABLED_HANDLERS"].split(","),
    )
    runtime = Runtime.from_settings(settings)
    body = json.loads(event("evt_lost", "order.updated", "ord_lost", 1))
    # Dispatch from the metadata alone: no body is stored, so the run finds it gone.
    dispatch_event(runtime, "evt_lost", dispatch_meta(Envelope.model_validate(body)))
    pending = runtime.ordering.pending_key("ordered", "ord_lost")
    assert redis_client.zcard(pending) == 1

    plugin_stack.start_worker()
    plugin_stack.wait_until_drained()

    assert redis_client.zcard(pending) == 0
    assert runtime.journal.outcomes("evt_lost") == {"ordered": "dead"}
