"""The Redis scripts of the worker: the dispatch fan-out and a handler run's start and finish."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest

from handlers.plugin import Handler, RetryPolicy
from omhooks.errors import PermanentError
from omhooks.settings import Settings
from workers.fanout import Fanout
from workers.journal import Journal
from workers.order_changes import known_changes, millis
from workers.ordering import Deferred, Ordering
from workers.progress import Progress
from workers.queues import body_key, handler_queue, queue_keys
from workers.runs import Runs

CREATED = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
EARLIER = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def noop(event, ctx): ...


@pytest.fixture
def parts(redis_client, namespace):
    settings = Settings(namespace=namespace, redis_durability="warn")
    journal = Journal(redis_client, namespace=namespace, ttl_seconds=3600)
    progress = Progress(redis_client, namespace=namespace, ttl_seconds=3600)
    ordering = Ordering(redis_client, namespace=namespace, lock_seconds=30, wait_seconds=5)
    runs = Runs(
        redis_client, namespace=namespace, ordering=ordering, journal=journal, progress=progress
    )
    fanout = Fanout(
        redis_client,
        settings=settings,
        journal=journal,
        ordering=ordering,
        default_policy=RetryPolicy(),
    )
    return fanout, runs, journal, ordering


def in_order_handler(name: str = "notes") -> Handler:
    return Handler(name=name, function=noop, event_types=("order.*",))


def store_body(redis_client, namespace, event_id: str) -> None:
    redis_client.set(body_key(namespace, event_id), json.dumps({"id": event_id}))


def start(runs: Runs, event_id: str, created: datetime, **overrides):
    arguments = {
        "ordering_key": "ord_1",
        "order_id": "ord_1",
        "created_at": created.timestamp(),
        "in_order": True,
        "waited_seconds": 0.0,
        "deferrals": 0,
    }
    arguments.update(overrides)
    return runs.start("notes", event_id, **arguments)


def send(fanout: Fanout, event_id: str, created: datetime, handlers: list[Handler]) -> int:
    return fanout.send(
        event_id,
        event_type="order.updated",
        order_id="ord_1",
        created_at=created.timestamp(),
        changed_at_ms=millis(created),
        ordering_key="ord_1",
        handlers=handlers,
        meta={},
    )


def test_fanout_queues_each_handler_once(parts, redis_client, namespace):
    fanout, _, journal, ordering = parts
    handlers = [in_order_handler("notes"), in_order_handler("refunds")]

    first = send(fanout, "evt_1", CREATED, handlers)
    again = send(fanout, "evt_1", CREATED, handlers)

    assert first == 2
    assert again == 0
    for name in ("notes", "refunds"):
        _, list_key = queue_keys(namespace, handler_queue(name))
        assert redis_client.llen(list_key) == 1
        assert redis_client.zscore(ordering.pending_key(name, "ord_1"), "evt_1") is not None
    assert journal.outcomes("evt_1") == {"notes": "queued", "refunds": "queued"}
    assert journal.event_ids() == ["evt_1"]
    assert known_changes(redis_client, namespace, ["ord_1"]) == {"ord_1": millis(CREATED)}


def test_fanout_skips_pending_for_snapshots(parts, redis_client):
    fanout, _, _, ordering = parts
    snapshot = Handler(name="ship", function=noop, event_types=("order.*",), snapshot=True)

    send(fanout, "evt_1", CREATED, [snapshot])

    assert redis_client.zcard(ordering.pending_key("ship", "ord_1")) == 0


def test_start_rejects_an_expired_body(parts):
    _, runs, _, _ = parts

    with pytest.raises(PermanentError, match="no longer stored"):
        start(runs, "evt_gone", CREATED)


def test_start_defers_while_locked(parts, redis_client, namespace):
    _, runs, _, _ = parts
    store_body(redis_client, namespace, "evt_1")
    store_body(redis_client, namespace, "evt_2")
    first = start(runs, "evt_1", CREATED)

    with pytest.raises(Deferred, match="another run holds the lock"):
        start(runs, "evt_2", CREATED, in_order=False)

    runs.finish(first, "succeeded")
    second = start(runs, "evt_2", CREATED, in_order=False)
    assert json.loads(second.body) == {"id": "evt_2"}


def test_start_defers_behind_older_pending(parts, redis_client, namespace):
    fanout, runs, _, ordering = parts
    send(fanout, "evt_old", EARLIER, [in_order_handler()])
    send(fanout, "evt_new", CREATED, [in_order_handler()])
    store_body(redis_client, namespace, "evt_new")

    with pytest.raises(Deferred, match="an older event is pending"):
        start(runs, "evt_new", CREATED)

    assert not redis_client.exists(ordering.lock_key("notes", "ord_1"))
    waited_long_enough = start(runs, "evt_new", CREATED, waited_seconds=10.0)
    assert waited_long_enough.waited_for_older


def test_finish_records_and_unlocks(parts, redis_client, namespace):
    fanout, runs, journal, ordering = parts
    send(fanout, "evt_1", CREATED, [in_order_handler()])
    store_body(redis_client, namespace, "evt_1")
    run = start(runs, "evt_1", CREATED)

    runs.finish(run, "succeeded", order_id="ord_1", processed_at=CREATED)

    assert not redis_client.exists(ordering.lock_key("notes", "ord_1"))
    assert redis_client.zcard(ordering.pending_key("notes", "ord_1")) == 0
    assert journal.outcomes("evt_1") == {"notes": "succeeded"}
    later = start(runs, "evt_1", CREATED)
    assert later.processed_ms == millis(CREATED)
    assert later.is_stale(EARLIER)
    assert not later.is_stale(CREATED)


def test_failed_run_stays_pending(parts, redis_client, namespace):
    fanout, runs, journal, ordering = parts
    send(fanout, "evt_1", CREATED, [in_order_handler()])
    store_body(redis_client, namespace, "evt_1")
    run = start(runs, "evt_1", CREATED)

    runs.finish(run, None)

    assert not redis_client.exists(ordering.lock_key("notes", "ord_1"))
    assert redis_client.zscore(ordering.pending_key("notes", "ord_1"), "evt_1") is not None
    assert journal.outcomes("evt_1") == {"notes": "queued"}


def test_run_without_ordering_takes_no_lock(parts, redis_client, namespace):
    _, runs, _, _ = parts
    store_body(redis_client, namespace, "evt_1")

    first = start(runs, "evt_1", CREATED, ordering_key=None)
    second = start(runs, "evt_1", CREATED, ordering_key=None)

    assert first.body == second.body
    assert redis_client.keys(f"{namespace}:lock:*") == []


def test_held_lock_is_renewed(redis_client, namespace):
    # Renewed every third of its time to live: a lock outlives its TTL only by being renewed.
    ordering = Ordering(redis_client, namespace=namespace, lock_seconds=1, wait_seconds=5)
    lock_key = ordering.lock_key("notes", "ord_1")
    redis_client.set(lock_key, "token", px=1000)

    ordering.hold(lock_key, "token")
    time.sleep(1.5)
    renewed = redis_client.get(lock_key)
    ordering.let_go("token")

    assert renewed == "token"


def test_long_wait_continues_while_key_progresses(parts, redis_client, namespace):
    fanout, runs, _, ordering = parts
    earliest = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
    for event_id, created in (("evt_first", earliest), ("evt_old", EARLIER)):
        send(fanout, event_id, created, [in_order_handler()])
        store_body(redis_client, namespace, event_id)
    send(fanout, "evt_new", CREATED, [in_order_handler()])
    store_body(redis_client, namespace, "evt_new")
    runs.finish(start(runs, "evt_first", earliest), "succeeded")

    # An older event is pending and a run of the key just finished: the backlog is moving.
    with pytest.raises(Deferred, match="an older event is pending"):
        start(runs, "evt_new", CREATED, waited_seconds=10.0)

    # Once no run of the key has finished for the wait, the older event counts as stuck.
    redis_client.delete(ordering.finished_key("notes", "ord_1"))
    assert start(runs, "evt_new", CREATED, waited_seconds=10.0).waited_for_older


def test_finished_marker_lives_for_the_wait(parts, redis_client, namespace):
    fanout, runs, _, ordering = parts
    send(fanout, "evt_1", CREATED, [in_order_handler()])
    store_body(redis_client, namespace, "evt_1")

    runs.finish(start(runs, "evt_1", CREATED), "succeeded")

    assert redis_client.ttl(ordering.finished_key("notes", "ord_1")) == 5
    failed = start(runs, "evt_1", CREATED)
    redis_client.delete(ordering.finished_key("notes", "ord_1"))
    runs.finish(failed, None)
    assert not redis_client.exists(ordering.finished_key("notes", "ord_1"))
