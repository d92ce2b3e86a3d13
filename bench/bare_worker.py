"""The workers benchmark's baseline: a bare Dramatiq actor that does nothing.

``python -m dramatiq bench.bare_worker`` runs it with Dramatiq's Redis broker as it comes (its
default middleware, no project code), on ``OMHOOKS_REDIS_URL`` under the ``OMHOOKS_NAMESPACE``
key prefix, as the project's workers are configured. With ``BENCH_BARE_BROKER=project`` it
runs on the project's broker class instead (``PatientRedisBroker``, with the consumer of
``omhooks worker`` and ``OMHOOKS_WORKER_POLL_MAX_MS``), still with no project middleware or
actors, so that a comparison with ``omhooks worker`` leaves the consumer out.
"""

from __future__ import annotations

import os
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from omhooks.settings import Settings
from workers.resilience import PatientRedisBroker

QUEUE = "bare"
ACTOR = "do_nothing"

_URL = os.environ.get("OMHOOKS_REDIS_URL", "redis://127.0.0.1:6379/0")
_NAMESPACE = os.environ.get("OMHOOKS_NAMESPACE", "omhooks-bench")

broker: RedisBroker
if os.environ.get("BENCH_BARE_BROKER") == "project":
    default_poll_max_ms = Settings.model_fields["worker_poll_max_ms"].default
    poll_max_ms = int(os.environ.get("OMHOOKS_WORKER_POLL_MAX_MS", default_poll_max_ms))
    broker = PatientRedisBroker(url=_URL, namespace=_NAMESPACE, poll_max_ms=poll_max_ms)
else:
    broker = RedisBroker(url=_URL, namespace=_NAMESPACE)  # type: ignore[no-untyped-call]
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE, actor_name=ACTOR)
def do_nothing(event_id: str, meta: dict[str, Any]) -> None:
    """Take the same arguments as the dispatch actor and do nothing with them."""
