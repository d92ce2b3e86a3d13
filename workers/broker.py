"""The Dramatiq broker of the workers, configured from the settings."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage

from omhooks.settings import Settings

from .actors import register_actors
from .middleware import DeadLetters
from .runtime import Runtime

__all__ = ["create_broker"]


def create_broker(settings: Settings, runtime: Runtime | None = None) -> RedisBroker:
    """Build the Redis broker with the actors, the dead-letter middleware and the handler queues.

    The broker becomes Dramatiq's global broker, which its command line expects.
    """
    runtime = runtime or Runtime.from_settings(settings)
    broker = RedisBroker(  # type: ignore[no-untyped-call]
        url=settings.effective_redis_url,
        namespace=settings.namespace,
        dead_message_ttl=settings.dead_letter_retention_seconds * 1000,
    )
    broker.add_middleware(CurrentMessage())
    broker.add_middleware(DeadLetters(runtime))
    dramatiq.set_broker(broker)
    register_actors(broker, runtime)
    return broker
