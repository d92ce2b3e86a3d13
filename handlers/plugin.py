"""The plugin interface: subscribe a function to event types with the ``handler`` decorator.

A handler is a plain function taking the typed event and a context::

    from handlers import HandlerContext, handler
    from ordermesh.events import Event

    @handler("order.customer_care_hold")
    def tell_support(event: Event, ctx: HandlerContext) -> None:
        ctx.log.info("Order %s is on hold.", event.order_id)

It runs in a worker, once per event it subscribes to, with its own retries and dead letters.
Raise ``PermanentError`` for a failure retrying cannot fix; any other exception is retried.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ordermesh.events import Event

if TYPE_CHECKING:
    from redis import Redis

    from omhooks.settings import Settings
    from ordermesh.client import OrderMeshClient

__all__ = ["Handler", "HandlerContext", "HandlerFunction", "RetryPolicy", "handler"]

HANDLER_ATTRIBUTE = "__omhooks_handler__"


@dataclass(frozen=True)
class RetryPolicy:
    """How a handler's failed runs are retried.

    The defaults back off from 15 s, doubling up to 10 min, over 20 retries. Dramatiq draws
    each backoff between half and all of its nominal value, so the retries span 78 to 156
    minutes: a run outlives an hour-long outage of the API before it is dead-lettered.
    """

    max_retries: int = 20
    min_backoff_seconds: float = 15.0
    max_backoff_seconds: float = 600.0
    time_limit_seconds: float = 120.0

    def message_options(self) -> dict[str, int]:
        """Return the Dramatiq message options that apply this policy."""
        return {
            "max_retries": self.max_retries,
            "min_backoff": int(self.min_backoff_seconds * 1000),
            "max_backoff": int(self.max_backoff_seconds * 1000),
            "time_limit": int(self.time_limit_seconds * 1000),
        }


HandlerFunction = Callable[[Event, "HandlerContext"], Any]


@dataclass(frozen=True)
class Handler:
    """A subscribed function with its name, event types, retry policy and origin."""

    name: str
    function: HandlerFunction
    event_types: tuple[str, ...]
    retry: RetryPolicy | None = None
    snapshot: bool = False
    origin: str = ""

    def subscribes_to(self, event_type: str) -> bool:
        """Return True if the handler takes events of this type.

        A subscription is an exact type, a prefix ending in ``.*`` (``order.*`` takes
        ``order.created`` but not ``order_item.status_changed``), or ``*`` for every type.
        """
        for pattern in self.event_types:
            if pattern in ("*", event_type):
                return True
            if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
                return True
        return False


def handler(
    *event_types: str,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    snapshot: bool = False,
) -> Callable[[HandlerFunction], HandlerFunction]:
    """Subscribe the decorated function to the given event types.

    ``name`` defaults to the function's name and must be unique among the loaded handlers;
    it names the handler's queue, its dead letters and the setting that disables it.
    ``retry`` defaults to the policy of the ``OMHOOKS_RETRY_*`` settings.

    ``snapshot=True`` declares that the handler acts on the order's current state, not on
    what the event says: such a handler is not given an event older than the newest one it
    already processed for that order (the run is recorded as skipped), and its dead letters
    are superseded once it has processed a newer event of the order.
    """
    if not event_types:
        raise TypeError("handler() needs at least one event type, e.g. @handler('order.*').")

    def decorate(function: HandlerFunction) -> HandlerFunction:
        subscribed = Handler(
            name=name or function.__name__,
            function=function,
            event_types=tuple(event_types),
            retry=retry,
            snapshot=snapshot,
            origin=function.__module__,
        )
        setattr(function, HANDLER_ATTRIBUTE, subscribed)
        return function

    return decorate


@dataclass
class HandlerContext:
    """What a handler run gets besides its event: the API client, a logger, settings, Redis."""

    event: Event
    handler: Handler
    api: OrderMeshClient
    log: logging.LoggerAdapter[logging.Logger]
    settings: Settings
    redis: Redis
    attempt: int = 0

    def idempotency_key(self, step: str) -> str:
        """Return the Idempotency-Key of one API call of this run.

        It is derived from the event, the handler and the step, so a retry or a replay of the
        run sends the same key and the API does not repeat a completed call.
        """
        return f"{self.event.id}:{self.handler.name}:{step}"

    def remember(self, fact: str, ttl_seconds: int = 90 * 24 * 3600) -> None:
        """Record a fact for this handler across events, e.g. that shipping was refunded."""
        self.redis.set(self._fact_key(fact), self.event.id, ex=ttl_seconds)

    def recalls(self, fact: str) -> bool:
        """Return True if ``remember`` recorded this fact for this handler."""
        return bool(self.redis.exists(self._fact_key(fact)))

    def _fact_key(self, fact: str) -> str:
        return f"{self.settings.namespace}:fact:{self.handler.name}:{fact}"
