"""The workers benchmark's baseline: a bare Dramatiq actor that does nothing.

``python -m dramatiq bench.bare_worker`` runs it with the broker Dramatiq's Redis broker has
by default (its default middleware, no project code), on ``OMHOOKS_REDIS_URL`` under the
``OMHOOKS_NAMESPACE`` key prefix, as the project's workers are configured.
"""

from __future__ import annotations

import os
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker

QUEUE = "bare"
ACTOR = "do_nothing"

broker = RedisBroker(  # type: ignore[no-untyped-call]
    url=os.environ.get("OMHOOKS_REDIS_URL", "redis://127.0.0.1:6379/0"),
    namespace=os.environ.get("OMHOOKS_NAMESPACE", "omhooks-bench"),
)
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE, actor_name=ACTOR)
def do_nothing(event_id: str, meta: dict[str, Any]) -> None:
    """Take the same arguments as the dispatch actor and do nothing with them."""
