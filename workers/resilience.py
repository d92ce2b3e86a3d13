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
at that moment may run again, more than once if its run also failed on the lost connection
and was retried. The handlers' idempotency keys make that harmless.
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
# The pause after the first poll of a queue that gave nothing. It doubles after each such poll
# in a row, up to the consumer's timeout.
_FIRST_EMPTY_POLL_PAUSE_SECONDS = 0.002
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
    """Dramatiq's Redis consumer, with its own pauses between polls.

    Dramatiq 2.2 pauses 5 to 10 ms after the first poll that finds a queue empty. Under a
    steady load a queue is often empty for a moment, so that pause was what a message usually
    waited for, once on the dispatch queue and once on its handler's. Here the first pause is
    2 ms and each one after it doubles, so an idle queue is soon polled as rarely as before.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self.empty_polls = 0

    def __next__(self) -> dramatiq.MessageProxy | None:
        try:
            if not self.message_cache and not self._fetch():
                return None
            return super().__next__()  # type: ignore[no-untyped-call,no-any-return]
        except ConnectionClosed:
            self.broker.broker_id = str(uuid.uuid4())
            logger.warning(
                "Lost the connection to Redis; messages fetched before are queued again after "
                "the heartbeat timeout."
            )
            raise

    def _fetch(self) -> bool:
        """Fetch messages into the empty cache, or pause and return False when none came."""
        if self.outstanding_message_count >= self.prefetch:
            # Every prefetched message is in progress. An acknowledgement is due soon, so
            # this waits a short, fixed time for it.
            time.sleep(_BUSY_PAUSE_SECONDS)
            return False
        room = self.prefetch - self.outstanding_message_count
        try:
            self.message_cache = self.broker.do_fetch(self.queue_name, room)
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None  # type: ignore[no-untyped-call]
        if self.message_cache:
            self.empty_polls = 0
            return True
        longest = self.timeout / 1000
        time.sleep(min(_FIRST_EMPTY_POLL_PAUSE_SECONDS * 2**self.empty_polls, longest))
        # After 20 doublings the pause is past any timeout, so the count need not grow.
        self.empty_polls = min(self.empty_polls + 1, 20)
        return False

    def ack(self, message: dramatiq.MessageProxy) -> None:
        parent: Any = super()
        patiently(lambda: parent.ack(message), "acknowledging a message")

    def nack(self, message: dramatiq.MessageProxy) -> None:
        parent: Any = super()
        patiently(lambda: parent.nack(message), "dead-lettering a message")


class PatientRedisBroker(RedisBroker):
    """Dramatiq's Redis broker, with queueing and acknowledging that wait out a Redis restart.

    ``poll_max_ms`` caps the pause between polls of a queue that gave nothing, for the queues
    of new messages only. The pause starts at 2 ms and doubles after each such poll, so
    without the cap a few empty polls in a row would leave messages waiting for up to the
    worker's timeout (1 s by default). The delay queues, which hold retries and deferred runs,
    keep the worker's timeout, since each poll costs CPU.
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
