"""The plugin interface: subscribe a function to event types with the ``handler`` decorator.

A handler is a plain function taking the typed event and a context::

    from handlers import HandlerContext, handler
    from ordermesh.events import Event

    @handler("order.customer_care_hold")
    def tell_support(event: Event, ctx: HandlerContext) -> None:
        ctx.log.info("Order %s is on hold.", event.order_id)

It runs in a worker, once per event it subscribes to, with its own retries and dead letters.
Raise ``PermanentError`` for a failure retrying cannot fix; any other exception is retried.
docs/plugins.md describes the whole interface with a complete example.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

from omhooks.errors import PermanentError
from ordermesh.events import Event

if TYPE_CHECKING:
    from redis import Redis

    from omhooks.settings import Settings
    from ordermesh.client import OrderMeshClient

__all__ = ["Handler", "HandlerContext", "HandlerFunction", "RetryPolicy", "handler"]

HANDLER_ATTRIBUTE = "__omhooks_handler__"
PLUGIN_SETTINGS_PREFIX = "OMHOOKS_PLUGIN_"

_T = TypeVar("_T")
_NOT_IN_VARIABLE_NAME = re.compile(r"[^A-Z0-9]+")


@dataclass(frozen=True)
class RetryPolicy:
    """How a handler's failed runs are retried.

    The defaults back off from 15 s, doubling up to 10 min, over 20 retries. Dramatiq 2.2
    draws each wait between the nominal backoff and twice that, and a wait over the maximum
    between half and all of the maximum, so the retries span 101 to 146 minutes (the range
    of 20,000 simulated runs): a run outlives an hour-long outage of the API.
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
    required_settings: tuple[str, ...] = ()

    @property
    def settings_prefix(self) -> str:
        """The prefix of this handler's plugin settings, e.g. ``OMHOOKS_PLUGIN_NOTE_ON_HOLD_``.

        It is the handler's name in upper case, with each run of other characters than
        letters and digits replaced by one underscore.
        """
        name = _NOT_IN_VARIABLE_NAME.sub("_", self.name.upper()).strip("_")
        return f"{PLUGIN_SETTINGS_PREFIX}{name}_"

    def plugin_settings(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        """Return this handler's plugin settings from the environment, keyed by lower-case name.

        ``OMHOOKS_PLUGIN_SYNC_TRACKING_URL=https://shop.example`` gives the handler named
        ``sync_tracking`` the setting ``{"url": "https://shop.example"}``.
        """
        environ = os.environ if environ is None else environ
        prefix = self.settings_prefix
        return {
            variable.removeprefix(prefix).lower(): value
            for variable, value in environ.items()
            if variable.startswith(prefix) and len(variable) > len(prefix)
        }

    def missing_settings(self, environ: Mapping[str, str] | None = None) -> list[str]:
        """Return the variables of required plugin settings that are unset or empty."""
        configured = self.plugin_settings(environ)
        return [
            f"{self.settings_prefix}{key.upper()}"
            for key in self.required_settings
            if not configured.get(key.lower())
        ]

    def subscribes_to(self, event_type: str) -> bool:
        """Return True if the handler takes events of this type.

        A subscription is an exact type, a prefix ending in ``.*`` (``order.*`` takes
        ``order.created`` but not ``order_item.status_changed``), or ``*`` for every type.
        A handler whose required plugin settings are missing takes no event, so an installed
        plugin stays off until it is configured.
        """
        if self.missing_settings():
            return False
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
    required_settings: tuple[str, ...] = (),
) -> Callable[[HandlerFunction], HandlerFunction]:
    """Subscribe the decorated function to the given event types.

    ``name`` defaults to the function's name and must be unique among the loaded handlers;
    it names the handler's queue, its dead letters and the setting that disables it.
    ``retry`` defaults to the policy of the ``OMHOOKS_RETRY_*`` settings.

    ``snapshot=True`` declares that the handler acts on the order's current state, not on
    what the event says: such a handler is not given an event older than the newest one it
    already processed for that order (the run is recorded as skipped), and its dead letters
    are superseded once it has processed a newer event of the order.

    ``required_settings`` names plugin settings (``("url",)`` for
    ``OMHOOKS_PLUGIN_<NAME>_URL``) without which the handler takes no event.
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
            required_settings=tuple(required_settings),
        )
        setattr(function, HANDLER_ATTRIBUTE, subscribed)
        return function

    return decorate


@dataclass
class HandlerContext:
    """The context of one handler run: the event, the API client, a logger, settings, Redis.

    ``idempotency_key``, ``once`` and ``plugin_settings`` help a handler make each effect once
    and read its own configuration. ``attempt`` counts the retries before this run, and
    ``account`` names the OrderMesh account the event came through (``None`` for the default
    endpoint).
    """

    event: Event
    handler: Handler
    api: OrderMeshClient
    log: logging.LoggerAdapter[logging.Logger]
    settings: Settings
    redis: Redis
    attempt: int = 0
    account: str | None = None

    def idempotency_key(self, step: str) -> str:
        """Return the Idempotency-Key of one API call of this run.

        It is derived from the event, the handler and the step, so a retry or a replay of the
        run sends the same key and the API does not repeat a completed call.
        """
        return f"{self.event.id}:{self.handler.name}:{step}"

    @property
    def plugin_settings(self) -> dict[str, str]:
        """This handler's ``OMHOOKS_PLUGIN_<NAME>_*`` variables, keyed by lower-case name."""
        return self.handler.plugin_settings()

    def once(self, step: str, effect: Callable[[], _T]) -> _T:
        """Run ``effect`` unless an earlier run of this event and handler completed ``step``.

        After ``effect`` returns, its result is stored in Redis as JSON, so a retry or a replay
        of the run returns the stored result without calling ``effect`` again. The result is
        decoded from JSON on a repeat, so a tuple comes back as a list. A run that dies between
        the effect and the store repeats the effect, so calls that change another system should
        also send ``idempotency_key(step)`` where that system accepts one.

        Raises ``PermanentError`` when the result is not JSON, because retrying would repeat
        an effect that already happened.
        """
        key = self._once_key(step)
        stored = self.redis.get(key)
        if stored is not None:
            self.log.info("Skipped step %r: an earlier run of this event completed it.", step)
            return cast(_T, json.loads(stored))

        result = effect()
        try:
            encoded = json.dumps(result)
        except (TypeError, ValueError) as exc:
            raise PermanentError(
                f"Step {step!r} ran, but its result is a {type(result).__name__}, which is not "
                "JSON. Return a dict, list, str, number, bool or None from the function given "
                "to once()."
            ) from exc
        # Kept as long as the run can be retried or replayed from a dead letter.
        settings = self.settings
        retention = max(settings.dedup_ttl_seconds, settings.dead_letter_retention_seconds)
        self.redis.set(key, encoded, ex=retention)
        return result

    def remember(self, fact: str, ttl_seconds: int = 90 * 24 * 3600) -> None:
        """Record a fact for this handler across events, e.g. that shipping was refunded."""
        self.redis.set(self._fact_key(fact), self.event.id, ex=ttl_seconds)

    def recalls(self, fact: str) -> bool:
        """Return True if ``remember`` recorded this fact for this handler."""
        return bool(self.redis.exists(self._fact_key(fact)))

    def _fact_key(self, fact: str) -> str:
        return f"{self.settings.namespace}:fact:{self.handler.name}:{fact}"

    def _once_key(self, step: str) -> str:
        return f"{self.settings.namespace}:once:{self.handler.name}:{self.event.id}:{step}"
