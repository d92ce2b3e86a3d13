"""The body read's deadline: late reads get 408, other cancellations pass through, nothing leaks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from omhooks.errors import DeliveryRejected
from receiver.body import BodyDeadlines, read_body

LIMIT = 1024
HEADERS = {"content-type": "application/json"}
# Short, so that a stalled read is stopped quickly; checks then run every 0.05 s.
DEADLINE_SECONDS = 0.2


def body_in_chunks(*chunks: bytes, pause: float = 0.0) -> Any:
    """Return an ASGI receive channel that sends the chunks, waiting ``pause`` before each."""
    messages = [
        {"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1}
        for index, chunk in enumerate(chunks)
    ]

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(pause)
        return messages.pop(0)

    return receive


async def stalled_receive() -> dict[str, Any]:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


def test_stalled_body_gets_408_and_task_goes_on():
    async def scenario() -> tuple[DeliveryRejected, float, int, str]:
        deadlines = BodyDeadlines(DEADLINE_SECONDS)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(DeliveryRejected) as caught:
            await read_body(HEADERS, stalled_receive, LIMIT, deadlines)
        waited = loop.time() - started
        task = asyncio.current_task()
        assert task is not None
        # The task can still wait: no cancellation is left pending on it.
        await asyncio.sleep(0.01)
        after = await read_body(HEADERS, body_in_chunks(b"{}"), LIMIT, deadlines)
        return caught.value, waited, task.cancelling(), after.decode()

    rejection, waited, cancelling, after = asyncio.run(scenario())

    assert (rejection.status, rejection.code) == (408, "body_timeout")
    assert rejection.headers == {"Connection": "close"}
    assert waited >= DEADLINE_SECONDS
    assert cancelling == 0
    assert after == "{}"


def test_chunked_body_within_deadline_is_read():
    async def scenario() -> bytes:
        deadlines = BodyDeadlines(DEADLINE_SECONDS)
        receive = body_in_chunks(b'{"a":', b" 1", b"}", pause=0.01)
        return await read_body(HEADERS, receive, LIMIT, deadlines)

    assert asyncio.run(scenario()) == b'{"a": 1}'


def test_only_late_reads_are_stopped():
    async def scenario() -> list[Any]:
        deadlines = BodyDeadlines(DEADLINE_SECONDS)
        reads = [read_body(HEADERS, body_in_chunks(b"{}", pause=0.01), LIMIT, deadlines)]
        reads += [read_body(HEADERS, stalled_receive, LIMIT, deadlines) for _ in range(3)]
        reads += [read_body(HEADERS, body_in_chunks(b"[]"), LIMIT, deadlines) for _ in range(20)]
        return await asyncio.gather(*reads, return_exceptions=True)

    results = asyncio.run(scenario())

    assert results[0] == b"{}"
    assert [getattr(result, "status", result) for result in results[1:4]] == [408, 408, 408]
    assert results[4:] == [b"[]"] * 20


def test_outside_cancellation_is_not_a_408():
    async def scenario() -> None:
        deadlines = BodyDeadlines(60)
        task = asyncio.create_task(read_body(HEADERS, stalled_receive, LIMIT, deadlines))
        await asyncio.sleep(0.01)
        task.cancel()
        await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(scenario())


def test_outside_cancellation_at_deadline_is_raised():
    async def scenario() -> None:
        deadlines = BodyDeadlines(DEADLINE_SECONDS)
        task = asyncio.create_task(read_body(HEADERS, stalled_receive, LIMIT, deadlines))
        check = deadlines._cancel_late

        def check_then_cancel_again() -> None:
            check()
            if task.cancelling() == 1:
                # The server cancels the task too, before it resumes from the late cancel.
                task.cancel()

        deadlines._cancel_late = check_then_cancel_again  # type: ignore[method-assign]
        await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(scenario())


def test_check_timer_stops_when_idle():
    async def scenario() -> tuple[bool, int]:
        deadlines = BodyDeadlines(DEADLINE_SECONDS)
        await read_body(HEADERS, body_in_chunks(b"{}"), LIMIT, deadlines)
        # One check runs after the read, finds no read in progress and sets no further timer.
        await asyncio.sleep(deadlines.interval * 3)
        return deadlines._timer is None, len(deadlines._reads)

    timer_stopped, reads_left = asyncio.run(scenario())

    assert timer_stopped
    assert reads_left == 0
