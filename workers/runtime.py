"""What the worker's actors share: settings, Redis, the handlers, the API client, the stores."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from redis import Redis

from handlers.plugin import RetryPolicy
from handlers.registry import Registry, discover
from omhooks.redis_clients import sync_redis
from omhooks.settings import Settings
from ordermesh.client import OrderMeshClient

from .deadletters import DeadLetterStore
from .fanout import Fanout
from .journal import Journal
from .ordering import Ordering
from .progress import Progress
from .runs import Runs

__all__ = ["Runtime", "default_retry_policy"]


@dataclass
class Runtime:
    """The state of one worker process, built once from the settings."""

    settings: Settings
    redis: Redis
    registry: Registry
    dead_letters: DeadLetterStore
    journal: Journal
    progress: Progress
    ordering: Ordering
    fanout: Fanout
    runs: Runs
    _api: OrderMeshClient | None = field(default=None, repr=False)
    _api_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings, registry: Registry | None = None) -> Runtime:
        """Connect to Redis and load the handlers named by the settings."""
        redis = sync_redis(settings, socket_timeout=10, decode_responses=True)
        if registry is None:
            registry = discover(settings.handler_modules, settings.disabled_handlers)
        journal = Journal(
            redis, namespace=settings.namespace, ttl_seconds=settings.journal_ttl_seconds
        )
        progress = Progress(
            redis,
            namespace=settings.namespace,
            ttl_seconds=settings.dead_letter_retention_seconds,
        )
        ordering = Ordering(
            redis,
            namespace=settings.namespace,
            lock_seconds=settings.order_lock_seconds,
            wait_seconds=settings.ordering_wait_seconds,
        )
        return cls(
            settings=settings,
            redis=redis,
            registry=registry,
            dead_letters=DeadLetterStore(
                redis,
                namespace=settings.namespace,
                retention_seconds=settings.dead_letter_retention_seconds,
            ),
            journal=journal,
            progress=progress,
            ordering=ordering,
            fanout=Fanout(
                redis,
                settings=settings,
                journal=journal,
                ordering=ordering,
                default_policy=default_retry_policy(settings),
            ),
            runs=Runs(
                redis,
                namespace=settings.namespace,
                ordering=ordering,
                journal=journal,
                progress=progress,
            ),
        )

    @property
    def api(self) -> OrderMeshClient:
        """The API client shared by the process's threads, made on first use."""
        with self._api_lock:
            if self._api is None:
                self._api = OrderMeshClient.from_settings(self.settings)
            return self._api


def default_retry_policy(settings: Settings) -> RetryPolicy:
    """Return the retry policy of handlers that declare none: the ``OMHOOKS_RETRY_*`` settings."""
    return RetryPolicy(
        max_retries=settings.retry_max_retries,
        min_backoff_seconds=settings.retry_min_backoff_seconds,
        max_backoff_seconds=settings.retry_max_backoff_seconds,
        time_limit_seconds=settings.retry_time_limit_seconds,
    )
