"""The dispatch step on a real Redis: routing from the message's metadata or from the body."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from redis.asyncio import Redis as AsyncRedis

from handlers.plugin import Handler
from handlers.registry import Registry
from omhooks.errors import PermanentError
from omhooks.lifecycle import load_lifecycle
from omhooks.settings import Settings
from ordermesh.events import Envelope, Event
from ordermesh.models import Item, Order
from receiver.queueing import EventQueue
from workers.actors import dispatch_event
from workers.order_changes import data_changed_at, known_change_key, millis, order_changed_at
from workers.ordering import Deferred
from workers.queues import arrived_key, body_key, dispatch_meta, handler_queue, queue_keys
from workers.runs import Run
from workers.runtime import Runtime

CHANGED = datetime(2026, 12, 3, 10, 30, 0, 250000, tzinfo=UTC)


def noop(event, ctx): ...


def make_event(**data: Any) -> dict[str, Any]:
    order = {
        "id": "ord_1",
        "createdAt": "2026-12-03T09:00:00.000Z",
        "updatedAt": "2026-12-03T10:00:00.000Z",
        "items": [{"id": "itm_1", "updatedAt": "2026-12-03T10:30:00.250Z"}],
    }
    return {
        "id": "evt_d1",
        "type": "order.updated",
        "createdAt": "2026-12-03T10:31:00.000Z",
        "merchantId": "mer_1",
        "data": data or {"order": order},
    }


@pytest.fixture
def runtime(redis_url, namespace):
    settings = Settings(redis_url=redis_url, namespace=namespace, redis_durability="warn")
    registry = Registry()
    registry.add(Handler(name="notes", function=noop, event_types=("order.*",)))
    return Runtime.from_settings(settings, registry=registry)


def queued_meta(redis_client, namespace: str) -> dict[str, Any]:
    """Return the metadata of the one message on the notes handler's queue."""
    messages_key, list_key = queue_keys(namespace, handler_queue("notes"))
    [message_id] = redis_client.lrange(list_key, 0, -1)
    meta: dict[str, Any] = json.loads(redis_client.hget(messages_key, message_id))["args"][2]
    return meta


def test_dispatch_routes_from_metadata_without_the_body(runtime, redis_client, namespace):
    event = make_event()

    # No body is stored: dispatch must not need it.
    dispatch_event(runtime, "evt_d1", dispatch_meta(Envelope.model_validate(event)))

    meta = queued_meta(redis_client, namespace)
    assert meta["ordering_key"] == "ord_1"
    assert meta["created_at"] == datetime(2026, 12, 3, 10, 31, tzinfo=UTC).timestamp()
    # The run's message leaves out what only dispatch needs.
    assert "merchant_id" not in meta
    assert "changed_at_ms" not in meta
    assert redis_client.get(known_change_key(namespace, "ord_1")) == str(millis(CHANGED))
    assert runtime.journal.outcomes("evt_d1") == {"notes": "queued"}


def test_dispatch_reads_body_without_routing_metadata(runtime, redis_client, namespace):
    event = make_event()
    redis_client.set(body_key(namespace, "evt_d1"), json.dumps(event))

    dispatch_event(runtime, "evt_d1", {"type": "order.updated", "order_id": "ord_1"})

    meta = queued_meta(redis_client, namespace)
    assert meta["ordering_key"] == "ord_1"
    assert meta["created_at"] == datetime(2026, 12, 3, 10, 31, tzinfo=UTC).timestamp()
    assert redis_client.get(known_change_key(namespace, "ord_1")) == str(millis(CHANGED))


def test_dispatch_without_metadata_or_body_fails(runtime):
    with pytest.raises(PermanentError, match="no longer stored"):
        dispatch_event(runtime, "evt_gone", {"type": "order.updated", "order_id": "ord_1"})


def test_merchant_ordering_uses_merchant_from_metadata(redis_url, namespace, redis_client):
    settings = Settings(
        redis_url=redis_url, namespace=namespace, redis_durability="warn", ordering_key="merchant"
    )
    registry = Registry()
    registry.add(Handler(name="notes", function=noop, event_types=("order.*",)))
    merchant_runtime = Runtime.from_settings(settings, registry=registry)

    meta = dispatch_meta(Envelope.model_validate(make_event()))

    dispatch_event(merchant_runtime, "evt_d1", meta)

    assert queued_meta(redis_client, namespace)["ordering_key"] == "mer_1"


def test_invalid_time_is_logged_and_not_recorded(caplog):
    event = make_event(order={"id": "ord_1", "updatedAt": "yesterday", "items": []})

    with caplog.at_level(logging.WARNING, logger="workers.order_changes"):
        meta = dispatch_meta(Envelope.model_validate(event))

    assert meta["changed_at_ms"] is None
    assert meta["order_id"] == "ord_1"
    assert "evt_d1" in caplog.text
    assert "invalid time" in caplog.text


def test_raw_change_time_matches_the_models():
    """The raw reading gives what validating the order or item with its model gives."""
    checked = 0
    for raw in load_lifecycle()["events"]:
        event = Event.model_validate(raw)
        if isinstance(event.data.get("order"), dict):
            expected = order_changed_at(Order.model_validate(event.data["order"]))
        elif isinstance(event.data.get("item"), dict):
            expected = Item.model_validate(event.data["item"]).updated_at
        else:
            expected = None
        assert data_changed_at(event.data) == expected, event.id
        checked += expected is not None
    assert checked > 0


@pytest.mark.parametrize(
    "value",
    [
        "2026-12-03T10:30:00.250Z",
        "2026-12-03t10:30:00.250z",
        "2026-12-03T11:30:00.250+01:00",
        "2026-12-03T10:30:00.250",
        CHANGED.timestamp(),
    ],
)
def test_item_time_forms(value):
    assert data_changed_at({"item": {"updatedAt": value}}) == CHANGED


@pytest.mark.parametrize(
    "value", ["yesterday", "2026-12-03\x0010:30:00Z", "2026-W49-4", ["2026-12-03"], {}]
)
def test_invalid_item_time_raises(value):
    with pytest.raises(ValueError):
        data_changed_at({"item": {"updatedAt": value}})


def test_naive_created_at_is_utc():
    event = make_event()
    event["createdAt"] = "0001-01-01T00:00:00"

    meta = dispatch_meta(Envelope.model_validate(event))

    assert meta["created_at"] == datetime(1, 1, 1, tzinfo=UTC).timestamp()


def order_event(event_id: str, minute: int) -> dict[str, Any]:
    """Return an ``order.updated`` event of order ``ord_1``, created at 10:<minute>."""
    return {**make_event(), "id": event_id, "createdAt": f"2026-12-03T10:{minute:02d}:00.000Z"}


def receive(redis_url: str, namespace: str, event: dict[str, Any], key: str | None) -> bool:
    """Queue the event as the receiver does, with ``key`` as its ordering key."""

    async def put() -> bool:
        redis = AsyncRedis.from_url(redis_url)
        queue = EventQueue(redis, namespace=namespace, dedup_ttl_seconds=60)
        try:
            meta = dispatch_meta(Envelope.model_validate(event))
            return await queue.put(event["id"], json.dumps(event).encode(), meta, ordering_key=key)
        finally:
            await queue.aclose()
            await redis.aclose()

    return asyncio.run(put())


def start_run(runtime: Runtime, event: dict[str, Any]) -> Run:
    created_at = datetime.fromisoformat(event["createdAt"]).timestamp()
    return runtime.runs.start(
        "notes",
        event["id"],
        ordering_key="ord_1",
        order_id="ord_1",
        created_at=created_at,
        in_order=True,
        waited_seconds=0.0,
        deferrals=0,
    )


def test_run_waits_for_older_event_not_dispatched(runtime, redis_url, redis_client, namespace):
    older, newer = order_event("evt_old", 1), order_event("evt_new", 2)
    assert receive(redis_url, namespace, older, "ord_1")
    assert receive(redis_url, namespace, newer, "ord_1")
    arrived = arrived_key(namespace, "ord_1")
    assert redis_client.zrange(arrived, 0, -1) == ["evt_old", "evt_new"]

    # Two worker threads may dispatch the two events in either order.
    dispatch_event(runtime, "evt_new", dispatch_meta(Envelope.model_validate(newer)))
    assert redis_client.zrange(arrived, 0, -1) == ["evt_old"]
    with pytest.raises(Deferred, match="older event"):
        start_run(runtime, newer)

    dispatch_event(runtime, "evt_old", dispatch_meta(Envelope.model_validate(older)))
    assert redis_client.zcard(arrived) == 0
    with pytest.raises(Deferred, match="older event"):
        start_run(runtime, newer)
    run = start_run(runtime, older)
    runtime.runs.finish(run, "done")
    assert start_run(runtime, newer).event_id == "evt_new"


def test_event_without_ordering_key_is_not_recorded(redis_url, redis_client, namespace):
    assert receive(redis_url, namespace, order_event("evt_free", 1), None)

    assert redis_client.keys(f"{namespace}:arrived:*") == []
    assert redis_client.llen(queue_keys(namespace, "dispatch")[1]) == 1


def test_dead_lettered_dispatch_ends_the_wait(runtime, redis_url, redis_client, namespace):
    older, newer = order_event("evt_old", 1), order_event("evt_new", 2)
    receive(redis_url, namespace, older, "ord_1")
    receive(redis_url, namespace, newer, "ord_1")
    dispatch_event(runtime, "evt_new", dispatch_meta(Envelope.model_validate(newer)))

    runtime.ordering.dispatch_done("ord_1", "evt_old")

    assert redis_client.zcard(arrived_key(namespace, "ord_1")) == 0
    assert start_run(runtime, newer).event_id == "evt_new"


def test_worker_dead_letters_dispatch_and_ends_wait(stack, redis_url, redis_client, namespace):
    stack.stop_worker()
    # Without routing metadata, dispatch reads the body, which is gone: it fails for good.
    meta = {"type": "order.updated", "order_id": "ord_gone", "created_at": 1.0}

    async def put() -> bool:
        redis = AsyncRedis.from_url(redis_url)
        queue = EventQueue(redis, namespace=namespace, dedup_ttl_seconds=60)
        try:
            return await queue.put("evt_gone", b"{}", meta, ordering_key="ord_gone")
        finally:
            await queue.aclose()
            await redis.aclose()

    assert asyncio.run(put())
    redis_client.delete(body_key(namespace, "evt_gone"))
    assert redis_client.zcard(arrived_key(namespace, "ord_gone")) == 1

    stack.start_worker()
    stack.wait_until_drained()

    assert redis_client.zcard(arrived_key(namespace, "ord_gone")) == 0
    assert "Dead-lettered the run of 'dispatch' on event 'evt_gone'" in stack.log_text("worker")
