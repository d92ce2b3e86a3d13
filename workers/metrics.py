"""Prometheus metrics of the workers: handler runs, retries, durations, dead letters, queues.

Dramatiq runs handlers in several processes, so their counters use prometheus-client's
multiprocess mode: each process writes to files in ``PROMETHEUS_MULTIPROC_DIR``, which
``omhooks worker`` sets, and the ``omhooks worker`` process itself serves the sum on
``OMHOOKS_WORKER_METRICS_PORT``, with the queues' state read from Redis at each scrape.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from redis import Redis, RedisError

from .queues import DISPATCH_QUEUE, handler_queue

__all__ = [
    "DEAD_LETTERS",
    "HANDLER_DURATION",
    "HANDLER_RETRIES",
    "HANDLER_RUNS",
    "QueueCollector",
    "worker_registry",
]

logger = logging.getLogger(__name__)

HANDLER_RUNS = Counter(
    "omhooks_handler_runs",
    "Handler runs by outcome: succeeded, failed, skipped (an older event of a snapshot "
    "handler) or deferred (waiting for an older event of the same order).",
    ["handler", "outcome"],
)
HANDLER_RETRIES = Counter(
    "omhooks_handler_retries", "Failed handler runs that will be retried.", ["handler"]
)
HANDLER_DURATION = Histogram(
    "omhooks_handler_duration_seconds",
    "Time one handler run took, failed runs included.",
    ["handler"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
DEAD_LETTERS = Counter(
    "omhooks_dead_letters", "Handler runs that became dead letters.", ["handler"]
)


class QueueCollector(Collector):
    """Read, at each scrape, the depth and oldest message age of each queue, and dead letters."""

    def __init__(self, redis: Redis, namespace: str, queues: list[str]) -> None:
        self._redis = redis
        self._namespace = namespace
        self._queue_names = queues

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "omhooks_queue_depth", "Messages waiting on each queue.", labels=["queue"]
        )
        age = GaugeMetricFamily(
            "omhooks_queue_oldest_message_age_seconds",
            "Age of the oldest message waiting on each queue (0 when empty).",
            labels=["queue"],
        )
        dead = GaugeMetricFamily("omhooks_dead_letters_kept", "Dead letters kept now.")
        try:
            for queue, count, oldest in self._queues():
                depth.add_metric([queue], count)
                age.add_metric([queue], oldest)
            dead.add_metric([], self._redis.zcard(f"{self._namespace}:deadletters"))
        except RedisError as exc:
            logger.warning("Could not read the queues for the metrics: %s", exc)
            return
        yield depth
        yield age
        yield dead

    def _queues(self) -> Iterator[tuple[str, int, float]]:
        now_ms = time.time() * 1000
        for queue in self._queue_names:
            key = f"{self._namespace}:{queue}"
            count = int(self._redis.llen(key))
            yield queue, count, self._oldest_age(key, count, now_ms)

    def _oldest_age(self, key: str, count: int, now_ms: float) -> float:
        if count == 0:
            return 0.0
        first = self._redis.lindex(key, 0)
        data = self._redis.hget(f"{key}.msgs", str(first)) if first is not None else None
        if data is None:
            return 0.0
        timestamp = json.loads(data).get("message_timestamp", now_ms)
        return max(0.0, (now_ms - float(timestamp)) / 1000)


def worker_registry(redis: Redis, namespace: str, handler_names: list[str]) -> CollectorRegistry:
    """Return a registry of every worker process's metrics and the queues' state."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    queues = [DISPATCH_QUEUE, *(handler_queue(name) for name in handler_names)]
    registry.register(QueueCollector(redis, namespace, queues))
    return registry
