"""The handler of the workers benchmark's latency run: it stores the time it started.

It writes ``time.time()`` under the event's id in the ``<namespace>:bench:started`` hash,
so the benchmark can subtract the time the delivery's 202 response arrived.
"""

from __future__ import annotations

import time

from handlers import HandlerContext, handler
from ordermesh.events import Event

NAME = "record_start_time"
STARTED_SUFFIX = ":bench:started"


@handler("*", name=NAME)
def record_start_time(event: Event, ctx: HandlerContext) -> None:
    """Store the wall-clock time at which this run of the handler started."""
    started = time.time()
    ctx.redis.hset(ctx.settings.namespace + STARTED_SUFFIX, event.id, repr(started))
