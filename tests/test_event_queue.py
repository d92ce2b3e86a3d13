"""The receiver's queue: concurrent puts share batches, and each still gets its own reply."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import dramatiq
import pytest
from redis import RedisError, ResponseError
from redis.asyncio import Redis

from omhooks.redis_server import LocalRedis, free_port
from receiver.queueing import EventQueue
from workers.queues import (
    DISPATCH_ACTOR,
    DISPATCH_QUEUE,
    body_key,
    encode_message,
    queue_keys,
    seen_key,
)

META = {"type": "order.created", "order_id": "ord_1", "secret_index": 0}


async def put_all(redis_url: str, namespace: str, puts: list[tuple[str, bytes]]) -> list[bool]:
    redis = Redis.from_url(redis_url)
    queue = EventQueue(redis, namespace=namespace, dedup_ttl_seconds=60)
    try:
        return list(
            await asyncio.gather(*(queue.put(event_id, body, META) for event_id, body in puts))
        )
    finally:
        await queue.aclose()
        await redis.aclose()


def queued_ids(redis_client, namespace: str) -> list[str]:
    messages_key, list_key = queue_keys(namespace, DISPATCH_QUEUE)
    ids = []
    for message_id in redis_client.lrange(list_key, 0, -1):
        message = json.loads(redis_client.hget(messages_key, message_id))
        ids.append(message["args"][0])
    return ids


def test_concurrent_puts_are_each_queued(redis_url, namespace, redis_client):
    puts = [(f"evt_{index}", f'{{"id": "evt_{index}"}}'.encode()) for index in range(100)]

    results = asyncio.run(put_all(redis_url, namespace, puts))

    assert results == [True] * 100
    assert sorted(queued_ids(redis_client, namespace)) == sorted(event_id for event_id, _ in puts)
    assert redis_client.get(body_key(namespace, "evt_7")) == '{"id": "evt_7"}'


def test_same_event_in_one_batch_is_queued_once(redis_url, namespace, redis_client):
    puts = [("evt_same", b'{"id": "evt_same"}')] * 10

    results = asyncio.run(put_all(redis_url, namespace, puts))

    assert results.count(True) == 1
    assert results.count(False) == 9
    assert queued_ids(redis_client, namespace) == ["evt_same"]


async def flush_scripts(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    try:
        await client.script_flush()
    finally:
        await client.aclose()


def test_put_after_script_flush_is_queued(namespace):
    # A server of its own, since SCRIPT FLUSH empties the script cache of every client.
    with LocalRedis() as server:
        first = asyncio.run(put_all(server.url, namespace, [("evt_1", b"{}")]))
        asyncio.run(flush_scripts(server.url))

        second = asyncio.run(put_all(server.url, namespace, [("evt_2", b"{}"), ("evt_3", b"{}")]))

    assert first == [True]
    assert second == [True, True]


async def put_each_catching(
    url: str, namespace: str, puts: list[tuple[str, bytes]], **client: Any
) -> list[BaseException | bool]:
    """Put every event at once, and return each put's result or the error it raised."""
    redis = Redis.from_url(url, **client)
    queue = EventQueue(redis, namespace=namespace, dedup_ttl_seconds=60)
    try:
        return list(
            await asyncio.gather(
                *(queue.put(event_id, body, META) for event_id, body in puts),
                return_exceptions=True,
            )
        )
    finally:
        await queue.aclose()
        await redis.aclose()


def test_unreachable_redis_fails_every_put_and_marks_nothing(namespace, redis_client):
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    puts = [(f"evt_{index}", b"{}") for index in range(5)]

    client = {"socket_connect_timeout": 0.5, "retry": None}
    results = asyncio.run(put_each_catching(unreachable, namespace, puts, **client))

    assert all(isinstance(result, RedisError) for result in results), results
    assert redis_client.exists(seen_key(namespace, "evt_0")) == 0


@pytest.mark.parametrize("count", [1, 300])
def test_batches_larger_than_the_limit_are_all_queued(redis_url, namespace, redis_client, count):
    puts = [(f"evt_{index}", b"{}") for index in range(count)]

    results = asyncio.run(put_all(redis_url, namespace, puts))

    assert results == [True] * count
    assert len(queued_ids(redis_client, namespace)) == count


def test_script_error_fails_whole_batch(redis_url, namespace, redis_client):
    messages_key, _ = queue_keys(namespace, DISPATCH_QUEUE)
    redis_client.set(messages_key, "not a hash")  # The script's HSET fails on a string.
    puts = [(f"evt_{index}", b"{}") for index in range(5)]

    results = asyncio.run(put_each_catching(redis_url, namespace, puts))

    assert all(isinstance(result, ResponseError) for result in results), results
    # The failing event is not marked as seen either, so the sender's retry queues it.
    for event_id, _ in puts:
        assert redis_client.exists(seen_key(namespace, event_id)) == 0, event_id


@pytest.mark.parametrize("options", [{"retries": 2}, None], ids=["options", "no options"])
def test_encoded_message_matches_dramatiq_encoding(options):
    args = ("evt_é1", {**META, "received_at": 1_700_000_000_000})

    message_id, data = encode_message(DISPATCH_QUEUE, DISPATCH_ACTOR, args, options)

    decoded = dramatiq.Message.decode(data)
    expected = dramatiq.Message(
        queue_name=DISPATCH_QUEUE,
        actor_name=DISPATCH_ACTOR,
        args=args,
        kwargs={},
        options={**(options or {}), "redis_message_id": message_id},
        message_id=decoded.message_id,
        message_timestamp=decoded.message_timestamp,
    )
    assert data == expected.encode()
    assert uuid.UUID(message_id).version == 4
    assert uuid.UUID(decoded.message_id).version == 4
    assert str(uuid.UUID(message_id)) == message_id
    assert message_id != decoded.message_id


def test_message_ids_are_random_version_4_uuids():
    ids = [encode_message(DISPATCH_QUEUE, DISPATCH_ACTOR, ("evt_1",))[0] for _ in range(2000)]

    parsed = [uuid.UUID(message_id) for message_id in ids]
    assert [str(value) for value in parsed] == ids
    assert {value.version for value in parsed} == {4}
    assert {value.variant for value in parsed} == {uuid.RFC_4122}
    # The variant digit takes each of its four values, so it is drawn from the random bits.
    assert {message_id[19] for message_id in ids} == set("89ab")
    assert len(set(ids)) == len(ids)
