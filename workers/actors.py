"""The two actors: dispatch an event to its handlers, and run one handler on one event."""

from __future__ import annotations

import logging
import time
from typing import Any

import dramatiq
from pydantic import ValidationError

from handlers.plugin import Handler, HandlerContext, RetryPolicy
from omhooks.errors import PermanentError, TransientError
from omhooks.settings import Settings
from ordermesh.events import Event

from .metrics import HANDLER_DURATION, HANDLER_RUNS
from .order_changes import record_known_change
from .ordering import Deferred, ordering_key_of, waited_since
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
    key = ordering_key_of(runtime.settings.ordering_key, _routing_fields(event))
    # One round trip for every handler: each pending entry goes before its handler's message,
    # so a run never starts before its own entry exists.
    pipe = runtime.redis.pipeline(transaction=False)
    for handler in handlers:
        if key is not None and not handler.snapshot:
            runtime.ordering.add(pipe, handler.name, key, event.id, event.created_at)
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
        script(
            keys=keys, args=[runtime.settings.dedup_ttl_seconds, message_id, data, ""], client=pipe
        )
    pipe.execute()
    record_known_change(runtime.redis, runtime.settings, event)
    logger.info(
        "Dispatched event %r (%s, order %r) to %r.",
        event.id,
        event.type,
        event.order_id,
        [handler.name for handler in handlers],
        extra=event.log_context(),
    )


def run_handler(runtime: Runtime, name: str, event_id: str, meta: dict[str, Any]) -> None:
    """Run one handler on one event, in its turn among the events of the same order."""
    handler = runtime.registry.get(name)
    if handler is None:
        raise PermanentError(f"Handler {name!r} is not loaded or is disabled in this worker.")
    event = _load(runtime, event_id)
    context = _context(runtime, handler, event, meta)
    key = ordering_key_of(runtime.settings.ordering_key, _routing_fields(event))

    started = time.perf_counter()
    if key is None:
        outcome = _run(runtime, handler, event, context)
    else:
        message = dramatiq.middleware.CurrentMessage.get_current_message()
        options = message.options if message is not None else {}
        try:
            with runtime.ordering.turn(
                handler.name,
                key,
                event.created_at,
                in_order=not handler.snapshot,
                waited_seconds=waited_since(options.get("first_deferred_at")),
                deferrals=int(options.get("deferrals", 0)),
            ):
                outcome = _run(runtime, handler, event, context)
        except Deferred as deferral:
            _defer(message, deferral, context)
            HANDLER_RUNS.labels(handler.name, "deferred").inc()
            return
        runtime.ordering.done(handler.name, key, event.id)
    runtime.journal.set_outcome(event.id, handler.name, outcome)
    HANDLER_RUNS.labels(handler.name, outcome).inc()
    HANDLER_DURATION.labels(handler.name).observe(time.perf_counter() - started)


def _run(runtime: Runtime, handler: Handler, event: Event, context: HandlerContext) -> str:
    """Run the handler and return the outcome: ``succeeded``, or ``skipped`` if it was stale."""
    order_id = event.order_id
    snapshot = handler.snapshot and order_id is not None
    if snapshot and runtime.progress.is_stale(handler.name, str(order_id), event.created_at):
        context.log.info("Skipped: the handler already processed a newer event of the order.")
        return "skipped"

    try:
        handler.function(event, context)
    except ValidationError as exc:
        # A pydantic error repeats the invalid input, which may be an address or a phone
        # number; only the fields' names go on, and retrying cannot fix the event.
        raise PermanentError(
            f"Handler {handler.name!r} found event {event.id!r} invalid at: {_fields(exc)}."
        ) from None
    if snapshot:
        runtime.progress.advance(handler.name, str(order_id), event.created_at)
    context.log.debug("Handler finished.")
    return "succeeded"


def _defer(
    message: dramatiq.Message[Any] | None, deferral: Deferred, context: HandlerContext
) -> None:
    """Put the run back on its queue after a delay; a deferral is not counted as a retry."""
    if message is None:
        raise TransientError(f"The run was deferred ({deferral}) outside of a worker.")
    options = {
        "deferrals": int(message.options.get("deferrals", 0)) + 1,
        "first_deferred_at": message.options.get("first_deferred_at", time.time()),
    }
    dramatiq.get_broker().enqueue(message.copy(options=options), delay=deferral.delay_ms)
    context.log.debug("Deferred the run by %d ms: %s.", deferral.delay_ms, deferral)


def _fields(exc: ValidationError) -> str:
    locations = {".".join(str(part) for part in error["loc"]) for error in exc.errors()}
    return ", ".join(sorted(locations)) or "the top level"


def _routing_fields(event: Event) -> dict[str, Any]:
    return {"type": event.type, "merchantId": event.merchant_id, "data": event.data}


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


def _context(
    runtime: Runtime, handler: Handler, event: Event, meta: dict[str, Any]
) -> HandlerContext:
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
        account=meta.get("account"),
    )
