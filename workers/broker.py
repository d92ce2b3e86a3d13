"""The Dramatiq broker of the workers, configured from the settings."""

from __future__ import annotations

import dramatiq
from dramatiq.middleware import CurrentMessage, Retries, TimeLimit

from omhooks.redis_clients import sync_redis
from omhooks.settings import Settings

from .actors import register_actors
from .middleware import DeadLetters
from .resilience import PatientRedisBroker
from .runtime import Runtime

__all__ = ["create_broker"]


def create_broker(settings: Settings, runtime: Runtime | None = None) -> PatientRedisBroker:
    """Build the Redis broker with the actors, the dead-letter middleware and the handler queues.

    The broker becomes Dramatiq's global broker, which its command line expects.
    """
    runtime = runtime or Runtime.from_settings(settings)
    broker = PatientRedisBroker(
        client=sync_redis(settings),
        namespace=settings.namespace,
        dead_message_ttl=settings.dead_letter_retention_seconds * 1000,
        heartbeat_timeout=int(settings.broker_heartbeat_timeout_seconds * 1000),
        maintenance_chance=settings.broker_maintenance_per_million,
        poll_max_ms=settings.worker_poll_max_ms,
        # Of Dramatiq's default middleware, only these act on the service's messages. The
        # others (age limits, shutdown notifications, callbacks, pipelines) serve options that
        # no message here sets, and every middleware is called several times per message.
        middleware=[TimeLimit(), Retries()],
    )
    broker.add_middleware(CurrentMessage())
    broker.add_middleware(DeadLetters(runtime))
    dramatiq.set_broker(broker)
    register_actors(broker, runtime)
    return broker
