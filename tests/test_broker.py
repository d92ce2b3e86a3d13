"""The workers' Dramatiq broker on real Redis: its middleware and its consumer's pauses."""

from __future__ import annotations

from collections.abc import Iterator

import dramatiq
import pytest
import redis
from dramatiq.middleware import Retries, TimeLimit

import workers.resilience
from omhooks.settings import Settings
from workers.broker import create_broker
from workers.middleware import DeadLetters
from workers.resilience import PatientRedisBroker

QUEUE = "polling"


@pytest.fixture
def broker(redis_url: str, namespace: str) -> Iterator[PatientRedisBroker]:
    broker = PatientRedisBroker(client=redis.Redis.from_url(redis_url), namespace=namespace)
    broker.declare_queue(QUEUE)
    yield broker
    broker.flush_all()
    broker.close()


@pytest.fixture
def pauses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    recorded: list[float] = []
    monkeypatch.setattr(workers.resilience.time, "sleep", recorded.append)
    return recorded


def test_empty_poll_pauses_double_to_timeout(broker, pauses):
    consumer = broker.consume(QUEUE, prefetch=2, timeout=40)

    results = [next(consumer) for _ in range(8)]

    assert results == [None] * 8
    assert pauses == [0.002, 0.004, 0.008, 0.016, 0.032, 0.04, 0.04, 0.04]


def test_message_resets_empty_poll_pause(broker, pauses):
    consumer = broker.consume(QUEUE, prefetch=2, timeout=1000)
    for _ in range(3):
        next(consumer)
    message = dramatiq.Message(queue_name=QUEUE, actor_name="noop", args=(), kwargs={}, options={})
    broker.enqueue(message)

    received = next(consumer)
    after = next(consumer)

    assert received is not None
    assert received.message_id == message.message_id
    assert after is None
    assert pauses == [0.002, 0.004, 0.008, 0.002]


def test_full_prefetch_pauses_briefly(broker, pauses):
    consumer = broker.consume(QUEUE, prefetch=1, timeout=1000)
    broker.enqueue(
        dramatiq.Message(queue_name=QUEUE, actor_name="noop", args=(), kwargs={}, options={})
    )
    first = next(consumer)

    # The one prefetched message is in progress, so the queue is not polled.
    results = [next(consumer) for _ in range(3)]

    assert first is not None
    assert results == [None] * 3
    assert pauses == [0.005] * 3


def test_broker_keeps_time_limits_and_retries(redis_url, namespace, secrets):
    settings = Settings(
        redis_url=redis_url, namespace=namespace, webhook_secrets=[secrets["current"]]
    )

    broker = create_broker(settings)
    kinds = [type(middleware) for middleware in broker.middleware]
    broker.close()

    assert TimeLimit in kinds
    assert Retries in kinds
    # Dramatiq calls after_* hooks last to first, so dead letters see a failure before the
    # retry middleware queues the retry.
    assert kinds.index(DeadLetters) > kinds.index(Retries)
