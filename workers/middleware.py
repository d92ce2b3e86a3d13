"""Dramatiq middleware that records failed attempts and turns failed runs into dead letters."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from omhooks.errors import PermanentError

from .deadletters import build_dead_letter, error_message
from .metrics import DEAD_LETTERS, HANDLER_RETRIES, HANDLER_RUNS
from .ordering import ordering_key, ordering_key_of
from .queues import DISPATCH_ACTOR, HANDLER_ACTOR, body_key
from .resilience import patiently
from .runtime import Runtime

__all__ = ["DeadLetters"]

logger = logging.getLogger(__name__)


class DeadLetters(Middleware):
    """Record each failed attempt in the journal and each given-up run as a dead letter.

    Dramatiq calls ``after_*`` hooks in reverse order of the middleware list, so this one,
    added last, sees a failure before the retry middleware schedules the retry: the time of
    the first failure it stores in the message options travels with the retried message.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if exception is None:
            return
        message.options.setdefault("first_failed_at", time.time())
        handler_name, event_id = _run_of(message)
        logger.warning(
            "Handler %r failed on event %r (attempt %d): %s: %s",
            handler_name,
            event_id,
            int(message.options.get("retries", 0)) + 1,
            type(exception).__name__,
            error_message(exception, message.options),
            extra=_ids(message, handler_name, event_id),
        )
        if message.actor_name == HANDLER_ACTOR and event_id:
            self.runtime.journal.set_outcome(event_id, handler_name, "retrying")
            HANDLER_RUNS.labels(handler_name, "failed").inc()
            if not isinstance(exception, PermanentError) and _will_retry(message):
                HANDLER_RETRIES.labels(handler_name).inc()

    def before_nack(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        # Before the nack, the message still counts as in progress, so whoever waits for the
        # queues to drain sees the dead letter once they have.
        exception = getattr(message, "_exception", None)
        if exception is None:
            return
        handler_name, event_id = _run_of(message)
        stored = self.runtime.redis.get(body_key(self.runtime.settings.namespace, event_id))
        body = "" if stored is None else str(stored)
        envelope = _envelope(body)
        entry = build_dead_letter(
            handler_name,
            event_id,
            envelope,
            body,
            message.options,
            exception,
            permanent=isinstance(exception, PermanentError),
        )
        patiently(lambda: self.runtime.dead_letters.add(entry), "storing a dead letter")
        DEAD_LETTERS.labels(handler_name).inc()
        if message.actor_name == HANDLER_ACTOR and entry.event_id:
            self.runtime.journal.set_outcome(entry.event_id, handler_name, "dead")
            # A run's message names its ordering key, since the body may be gone.
            meta = _meta_of(message)
            if "ordering_key" in meta:
                key = meta["ordering_key"]
            else:
                key = ordering_key_of(self.runtime.settings.ordering_key, envelope)
            if key is not None:
                self.runtime.ordering.done(handler_name, key, entry.event_id)
        elif message.actor_name == DISPATCH_ACTOR and entry.event_id:
            # Runs of newer events of the key no longer wait for this event's dispatch.
            meta = _meta_of(message)
            key = ordering_key(
                self.runtime.settings.ordering_key, meta.get("order_id"), meta.get("merchant_id")
            )
            if key is not None:
                self.runtime.ordering.dispatch_done(key, entry.event_id)
        logger.error(
            "Dead-lettered the run of %r on event %r after %d attempt(s) as %r: %s: %s",
            handler_name,
            entry.event_id,
            entry.attempts,
            entry.id,
            entry.error_type,
            entry.error_message,
            extra=_ids(message, handler_name, event_id),
        )


def _ids(message: dramatiq.MessageProxy, handler_name: str, event_id: str) -> dict[str, Any]:
    """Return the ids a log line about a run carries, from the message's metadata."""
    meta = _meta_of(message)
    return {
        "event_id": event_id,
        "event_type": meta.get("type"),
        "order_id": meta.get("order_id"),
        "handler": handler_name,
    }


def _meta_of(message: dramatiq.MessageProxy) -> dict[str, Any]:
    """Return the metadata dict, the last argument of a dispatch or run message, or {}."""
    meta = message.args[-1] if message.args else None
    return meta if isinstance(meta, dict) else {}


def _will_retry(message: dramatiq.MessageProxy) -> bool:
    # This middleware sees a failure before the retry middleware counts it.
    retries = int(message.options.get("retries", 0))
    return retries < int(message.options.get("max_retries", 0))


def _run_of(message: dramatiq.MessageProxy) -> tuple[str, str]:
    """Return the handler's name and the event id of a message."""
    if message.actor_name == DISPATCH_ACTOR:
        return "dispatch", str(message.args[0])
    return str(message.args[0]), str(message.args[1])


def _envelope(body: str) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}
