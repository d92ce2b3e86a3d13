"""The two actors: dispatch an event to its handlers, and run one handler on one event."""

from __future__ import annotations

import logging
from typing import Any

import dramatiq
from pydantic import ValidationError
from redis.exceptions import LockError

from handlers.plugin import Handler, HandlerContext, RetryPolicy
from omhooks.errors import PermanentError, TransientError
from omhooks.settings import Settings
from ordermesh.events import Event

from .queues import (
    DISPATCH_ACTOR,
    DISPATCH_QUEUE,
    ENQUEUE_ONCE_SCRIPT,
    HANDLER_ACTOR,
    body_key,
    encode_message,
    handler_queue,
    queue_keys,
    seen_key,
)
from .runtime import Runtime

__all__ = ["default_retry_policy", "register_actors"]

logger = logging.getLogger(__name__)

# Waiting this long for another run of the same handler on the same order is better than a
# retry's backoff; past it the run is retried later.
_LOCK_WAIT_SECONDS = 30


def register_actors(broker: dramatiq.Broker, runtime: Runtime) -> None:
    """Declare the dispatch actor and the handler actor on the broker, with a queue per handler."""
    dramatiq.Actor(
        lambda event_id, meta: dispatch_event(runtime, event_id, meta),
        broker=broker,
        actor_name=DISPATCH_ACTOR,
        queue_name=DISPATCH_QUEUE,
        priority=0,
        options={"throws": (PermanentError,)},
    )
    dramatiq.Actor(
        lambda name, event_id, meta: run_handler(runtime, name, event_id, meta),
        broker=broker,
        actor_name=HANDLER_ACTOR,
        queue_name=handler_queue("default"),
        priority=0,
        options={"throws": (PermanentError,)},
    )
    for handler in runtime.registry.enabled():
        broker.declare_queue(handler_queue(handler.name))


def dispatch_event(runtime: Runtime, event_id: str, meta: dict[str, Any]) -> None:
    """Give each handler subscribed to the event its own message, once per handler."""
    event = _load(runtime, event_id)
    handlers = runtime.registry.subscribed(event.type)
    runtime.journal.record_event(event.id, event.type, event.order_id, [h.name for h in handlers])
    if not handlers:
        logger.info("No handler is subscribed to event %r of type %r.", event.id, event.type)
        return

    namespace = runtime.settings.namespace
    default_policy = default_retry_policy(runtime.settings)
    script = runtime.redis.register_script(ENQUEUE_ONCE_SCRIPT)
    for handler in handlers:
        queue = handler_queue(handler.name)
        policy = handler.retry or default_policy
        message_id, data = encode_message(
            queue, HANDLER_ACTOR, (handler.name, event.id, meta), policy.message_options()
        )
        keys = [
            seen_key(namespace, event.id, handler.name),
            *queue_keys(namespace, queue),
            body_key(namespace, event.id),
        ]
        script(keys=keys, args=[runtime.settings.dedup_ttl_seconds, message_id, data, ""])
    logger.info(
        "Dispatched event %r (%s, order %r) to %r.",
        event.id,
        event.type,
        event.order_id,
        [handler.name for handler in handlers],
    )


def run_handler(runtime: Runtime, name: str, event_id: str, meta: dict[str, Any]) -> None:
    """Run one handler on one event, holding the lock of the handler and the event's order."""
    handler = runtime.registry.get(name)
    if handler is None:
        raise PermanentError(f"Handler {name!r} is not loaded or is disabled in this worker.")
    event = _load(runtime, event_id)
    context = _context(runtime, handler, event)

    order_id = event.order_id
    if order_id is None:
        handler.function(event, context)
    elif not _run_locked(runtime, handler, event, context, order_id):
        runtime.journal.set_outcome(event.id, handler.name, "skipped")
        context.log.info("Skipped: the handler already processed a newer event of the order.")
        return
    runtime.journal.set_outcome(event.id, handler.name, "succeeded")
    context.log.debug("Handler finished.")


def _run_locked(
    runtime: Runtime, handler: Handler, event: Event, context: HandlerContext, order_id: str
) -> bool:
    """Run the handler under its order's lock; return False if a snapshot handler skipped it."""
    lock = runtime.redis.lock(
        f"{runtime.settings.namespace}:lock:{handler.name}:{order_id}",
        timeout=runtime.settings.order_lock_seconds,
        blocking_timeout=_LOCK_WAIT_SECONDS,
    )
    if not lock.acquire():
        raise TransientError(
            f"Another run of {handler.name!r} holds order {order_id!r}; retrying later."
        )
    try:
        if handler.snapshot and runtime.progress.is_stale(handler.name, order_id, event.created_at):
            return False
        handler.function(event, context)
        if handler.snapshot:
            runtime.progress.advance(handler.name, order_id, event.created_at)
        return True
    finally:
        try:
            lock.release()
        except LockError:
            logger.warning(
                "The lock of order %r expired before %r finished.", order_id, handler.name
            )


def default_retry_policy(settings: Settings) -> RetryPolicy:
    """Return the retry policy of handlers that declare none: the ``OMHOOKS_RETRY_*`` settings."""
    return RetryPolicy(
        max_retries=settings.retry_max_retries,
        min_backoff_seconds=settings.retry_min_backoff_seconds,
        max_backoff_seconds=settings.retry_max_backoff_seconds,
        time_limit_seconds=settings.retry_time_limit_seconds,
    )


def _load(runtime: Runtime, event_id: str) -> Event:
    body = runtime.redis.get(body_key(runtime.settings.namespace, event_id))
    if body is None:
        raise PermanentError(
            f"The body of event {event_id!r} is no longer stored; it expires after "
            "OMHOOKS_DEDUP_TTL_SECONDS."
        )
    try:
        return Event.model_validate_json(str(body))
    except ValidationError as exc:
        raise PermanentError(f"Event {event_id!r} is not a valid envelope.") from exc


def _context(runtime: Runtime, handler: Handler, event: Event) -> HandlerContext:
    extra = {**event.log_context(), "handler": handler.name}
    log = logging.LoggerAdapter(logging.getLogger(f"handlers.{handler.name}"), extra)
    message = dramatiq.middleware.CurrentMessage.get_current_message()
    attempt = int(message.options.get("retries", 0)) if message is not None else 0
    return HandlerContext(
        event=event,
        handler=handler,
        api=runtime.api,
        log=log,
        settings=runtime.settings,
        redis=runtime.redis,
        attempt=attempt,
    )
