"""Dramatiq middleware that records failed attempts and turns failed runs into dead letters."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from omhooks.errors import PermanentError

from .deadletters import build_dead_letter
from .queues import DISPATCH_ACTOR, HANDLER_ACTOR, body_key
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
            exception,
        )
        if message.actor_name == HANDLER_ACTOR and event_id:
            self.runtime.journal.set_outcome(event_id, handler_name, "retrying")

    def after_nack(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
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
        self.runtime.dead_letters.add(entry)
        if message.actor_name == HANDLER_ACTOR and entry.event_id:
            self.runtime.journal.set_outcome(entry.event_id, handler_name, "dead")
        logger.error(
            "Dead-lettered the run of %r on event %r after %d attempt(s) as %r: %s: %s",
            handler_name,
            entry.event_id,
            entry.attempts,
            entry.id,
            entry.error_type,
            entry.error_message,
        )


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
