"""Wait out a short loss of Redis where giving up would lose a message.

Dramatiq acknowledges a message after its retry has been queued, in two separate commands; if
Redis restarts between them, queueing the retry fails, the failure is only logged, and the
acknowledgement then drops the message. The broker here makes queueing, acknowledging and
dead-lettering wait for Redis to come back instead, for up to ``PATIENCE_SECONDS``.

When a consumer loses its connection, Dramatiq also forgets the messages it had fetched but
not yet handed out (and those it holds for a delayed retry), while their ids stay in the
worker's set of unacknowledged messages, where nothing requeues them as long as the worker
heartbeats. So the broker then takes a new worker id: the old one stops heartbeating, and
after the heartbeat timeout its messages are queued again. A message that was being processed
at that moment may run twice, which the handlers' idempotency keys make harmless.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import dq_name
from dramatiq.errors import ConnectionClosed

__all__ = ["PATIENCE_SECONDS", "PatientRedisBroker", "patiently"]

logger = logging.getLogger(__name__)

PATIENCE_SECONDS = 120.0
_FIRST_PAUSE_SECONDS = 0.1
_LONGEST_PAUSE_SECONDS = 2.0
_BUSY_PAUSE_SECONDS = 0.005
_LOST_CONNECTION = (ConnectionClosed, redis.ConnectionError, redis.TimeoutError)

_Result = TypeVar("_Result")


def patiently(action: Callable[[], _Result], what: str) -> _Result:
    """Run ``action``, again and again while Redis is unreachable, for up to PATIENCE_SECONDS."""
    deadline = time.monotonic() + PATIENCE_SECONDS
    pause = _FIRST_PAUSE_SECONDS
    while True:
        try:
            return action()
        except _LOST_CONNECTION as exc:
            if time.monotonic() + pause > deadline:
                raise
            logger.warning("Redis is unreachable while %s (%s); trying again.", what, exc)
            time.sleep(pause)
            pause = min(pause * 2, _LONGEST_PAUSE_SECONDS)


class _PatientConsumer(_RedisConsumer):
    def __next__(self) -> dramatiq.MessageProxy | None:
        if not self.message_cache and self.outstanding_message_count >= self.prefetch:
            # Every prefetched message is in progress. Dramatiq would back off as from an
            # empty queue and double its pause each time. An acknowledgement is due soon, so
            # this waits a short, fixed time for it instead.
            time.sleep(_BUSY_PAUSE_SECONDS)
            return None
        try:
            return super().__next__()  # type: ignore[no-untyped-call,no-any-return]
        except ConnectionClosed:
            self.broker.broker_id = str(uuid.uuid4())
            logger.warning(
                "Lost the connection to Redis; messages fetched before are queued again after "
                "the heartbeat timeout."
            )
            raise

    def ack(self, message: dramatiq.MessageProxy) -> None:
        parent: Any = super()
        patiently(lambda: parent.ack(message), "acknowledging a message")

    def nack(self, message: dramatiq.MessageProxy) -> None:
        parent: Any = super()
        patiently(lambda: parent.nack(message), "dead-lettering a message")


class PatientRedisBroker(RedisBroker):
    """Dramatiq's Redis broker, with queueing and acknowledging that wait out a Redis restart.

    ``poll_max_ms`` caps the pause between polls of a queue that gave nothing, for the queues
    of new messages only. In Dramatiq 2.2 their consumers' pause starts at 5 to 10 ms and
    doubles after each such poll. Under a steady load, a few empty polls in a row would then
    leave messages waiting for up to the worker's timeout (1 s by default). The delay queues, which
    hold retries and deferred runs, keep the worker's timeout, since each poll costs CPU.
    """

    def __init__(self, *args: Any, poll_max_ms: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self.poll_max_ms = poll_max_ms

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _PatientConsumer

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Any:
        if self.poll_max_ms is not None and queue_name != dq_name(queue_name):
            timeout = min(timeout, self.poll_max_ms)
        return super().consume(queue_name, prefetch, timeout)

    def enqueue(self, message: dramatiq.Message[Any], *, delay: int | None = None) -> Any:
        parent: Any = super()
        return patiently(lambda: parent.enqueue(message, delay=delay), "queueing a message")
