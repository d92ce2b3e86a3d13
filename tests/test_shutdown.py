"""SIGTERM under load: the receiver and the workers stop without losing an accepted event."""

from __future__ import annotations

import json
import signal
import threading

import httpx
import pytest
from conftest import start_stack
from test_reliability import PLUGIN_ENV, event, post, receiver_ready, wait_for

from omhooks.redis_server import free_port
from workers.queues import body_key, seen_key


@pytest.fixture
def plugin_stack(redis_url, namespace, secrets):
    running = start_stack(redis_url, namespace, secrets["current"], **PLUGIN_ENV)
    yield running
    running.stop()


def test_worker_sigterm_finishes_or_requeues_its_runs(
    plugin_stack, secrets, redis_client, namespace
):
    threads = plugin_stack.config.worker_threads
    event_ids = [f"evt_steady_{index}" for index in range(6 * threads)]
    for index, event_id in enumerate(event_ids):
        body = event(event_id, "test.steady", f"ord_steady_{index}", 1)
        assert post(plugin_stack.receiver_url, secrets["current"], body) == 202
    wait_for(lambda: redis_client.llen(f"{namespace}:test:started") == threads)

    plugin_stack.signal("worker", signal.SIGTERM)
    # Dramatiq's Worker.stop logs this line just before it stops its worker threads.
    wait_for(lambda: "Shutting down" in plugin_stack.log_text("worker"))
    redis_client.set(f"{namespace}:test:gate", 1)
    assert plugin_stack.wait_for_exit("worker") == 0
    started = redis_client.lrange(f"{namespace}:test:started", 0, -1)
    finished = redis_client.lrange(f"{namespace}:test:completed", 0, -1)
    assert sorted(finished) == sorted(started)
    assert len(finished) == threads

    plugin_stack.start_worker()
    plugin_stack.wait_until_drained()
    completed = redis_client.lrange(f"{namespace}:test:completed", 0, -1)
    assert sorted(completed) == sorted(event_ids)


def test_receiver_sigterm_under_load_loses_no_accepted_event(
    plugin_stack, secrets, redis_client, namespace
):
    plugin_stack.stop_worker()
    port = free_port()
    plugin_stack.start_process("receiver-2", ["serve", "--host", "127.0.0.1", "--port", str(port)])
    url = f"http://127.0.0.1:{port}/webhooks/ordermesh"
    wait_for(lambda: receiver_ready(url))
    accepted: list[str] = []
    refused: list[str] = []
    stop = threading.Event()

    def send_until_stopped() -> None:
        number = 0
        while not stop.is_set() and number < 5000:
            event_id = f"evt_load_{number}"
            number += 1
            try:
                status = post(url, secrets["current"], event(event_id, "test.none", "ord_l", 1))
            except httpx.TransportError:
                refused.append(event_id)
                continue
            (accepted if status == 202 else refused).append(event_id)

    sender = threading.Thread(target=send_until_stopped)
    sender.start()
    wait_for(lambda: len(accepted) >= 50)
    plugin_stack.signal("receiver-2", signal.SIGTERM)
    wait_for(lambda: len(refused) >= 5)
    stop.set()
    sender.join()

    exit_status = plugin_stack.wait_for_exit("receiver-2")
    queued = redis_client.lrange(f"{namespace}:dispatch", 0, -1)
    missing = [
        event_id
        for event_id in accepted
        if redis_client.exists(seen_key(namespace, event_id), body_key(namespace, event_id)) != 2
    ]
    # uvicorn ends a graceful shutdown by raising the signal it received again.
    assert exit_status in (0, -signal.SIGTERM)
    assert missing == []
    assert len(queued) == len(accepted)
    assert json.loads(redis_client.get(body_key(namespace, accepted[-1])))["id"] == accepted[-1]


def test_receiver_killed_mid_request_answered_only_what_it_queued(
    plugin_stack, secrets, redis_client, namespace
):
    plugin_stack.stop_worker()
    port = free_port()
    plugin_stack.start_process("receiver-2", ["serve", "--host", "127.0.0.1", "--port", str(port)])
    url = f"http://127.0.0.1:{port}/webhooks/ordermesh"
    wait_for(lambda: receiver_ready(url))
    accepted: list[str] = []
    failed: list[str] = []
    stop = threading.Event()

    def send(worker: int) -> None:
        number = 0
        while not stop.is_set() and number < 2000:
            event_id = f"evt_kill_{worker}_{number}"
            number += 1
            try:
                status = post(url, secrets["current"], event(event_id, "test.none", "ord_k", 1))
            except httpx.TransportError:
                failed.append(event_id)
                continue
            (accepted if status == 202 else failed).append(event_id)

    senders = [threading.Thread(target=send, args=(worker,)) for worker in range(4)]
    for sender in senders:
        sender.start()
    wait_for(lambda: len(accepted) >= 100)
    plugin_stack.kill("receiver-2")
    wait_for(lambda: len(failed) >= 4)
    stop.set()
    for sender in senders:
        sender.join()

    queued_ids = {
        json.loads(raw)["args"][0] for raw in redis_client.hvals(f"{namespace}:dispatch.msgs")
    }
    assert accepted
    assert set(accepted) <= queued_ids
    assert len(queued_ids) <= len(accepted) + 4  # at most one request in flight per sender
