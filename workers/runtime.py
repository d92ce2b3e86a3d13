"""What the worker's actors share: settings, Redis, the handlers, the API client, the stores."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from redis import Redis

from handlers.registry import Registry, discover
from omhooks.redis_clients import sync_redis
from omhooks.settings import Settings
from ordermesh.client import OrderMeshClient

from .deadletters import DeadLetterStore
from .journal import Journal
from .ordering import Ordering
from .progress import Progress

__all__ = ["Runtime"]


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
    _api: OrderMeshClient | None = field(default=None, repr=False)
    _api_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings, registry: Registry | None = None) -> Runtime:
        """Connect to Redis and load the handlers named by the settings."""
        redis = sync_redis(settings, socket_timeout=10, decode_responses=True)
        if registry is None:
            registry = discover(settings.handler_modules, settings.disabled_handlers)
        return cls(
            settings=settings,
            redis=redis,
            registry=registry,
            dead_letters=DeadLetterStore(
                redis,
                namespace=settings.namespace,
                retention_seconds=settings.dead_letter_retention_seconds,
            ),
            journal=Journal(
                redis, namespace=settings.namespace, ttl_seconds=settings.journal_ttl_seconds
            ),
            progress=Progress(
                redis,
                namespace=settings.namespace,
                ttl_seconds=settings.dead_letter_retention_seconds,
            ),
            ordering=Ordering(
                redis,
                namespace=settings.namespace,
                lock_seconds=settings.order_lock_seconds,
                wait_seconds=settings.ordering_wait_seconds,
                ttl_seconds=settings.dedup_ttl_seconds,
            ),
        )

    @property
    def api(self) -> OrderMeshClient:
        """The API client shared by the process's threads, made on first use."""
        with self._api_lock:
            if self._api is None:
                self._api = OrderMeshClient.from_settings(self.settings)
            return self._api
