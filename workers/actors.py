"""The two actors: dispatch an event to its handlers, and run one handler on one event."""

from __future__ import annotations

import logging
import time
from typing import Any

import dramatiq
from pydantic import ValidationError

from handlers.plugin import Handler, HandlerContext
from omhooks.errors import PermanentError, TransientError
from ordermesh.events import Event

from .metrics import HANDLER_DURATION, HANDLER_RUNS
from .order_changes import seconds
from .ordering import Deferred, ordering_key, waited_since
from .queues import (
    DISPATCH_ACTOR,
    DISPATCH_QUEUE,
    HANDLER_ACTOR,
    body_key,
    dispatch_meta,
    handler_queue,
)
from .runs import Run
from .runtime import Runtime

__all__ = ["register_actors"]

logger = logging.getLogger(__name__)

# The metadata of a dispatch message that its handler runs' messages leave out.
_DISPATCH_ONLY_META = ("merchant_id", "changed_at_ms")


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
    enabled = runtime.registry.enabled()
    # Each run's message names its handler's queue, so the actor's own queue only needs to be
    # declared. One of the handlers' queues spares the workers an empty queue to poll.
    actor_queue = handler_queue(enabled[0].name if enabled else "default")
    dramatiq.Actor(
        lambda name, event_id, meta: run_handler(runtime, name, event_id, meta),
        broker=broker,
        actor_name=HANDLER_ACTOR,
        queue_name=actor_queue,
        priority=0,
        options={"throws": (PermanentError,)},
    )
    for handler in enabled:
        broker.declare_queue(handler_queue(handler.name))


def dispatch_event(runtime: Runtime, event_id: str, meta: dict[str, Any]) -> None:
    """Give each handler subscribed to the event its own message, once per handler.

    The receiver queues it with what this needs (``dispatch_meta``). The body is read only
    for messages queued without it: legacy snapshots, reconciliation and replays of messages
    from earlier versions.
    """
    if "changed_at_ms" not in meta:
        event = _parse(event_id, _load(runtime, event_id))
        meta = {**meta, **dispatch_meta(event)}
    event_type: str = meta["type"]
    order_id: str | None = meta["order_id"]
    handlers = runtime.registry.subscribed(event_type)
    key = ordering_key(runtime.settings.ordering_key, order_id, meta["merchant_id"])
    # A run needs neither the merchant nor the change time, and its messages may be logged.
    run_meta = {name: value for name, value in meta.items() if name not in _DISPATCH_ONLY_META}
    run_meta["ordering_key"] = key
    runtime.fanout.send(
        event_id,
        event_type=event_type,
        order_id=order_id,
        created_at=float(meta["created_at"]),
        changed_at_ms=meta["changed_at_ms"] if order_id is not None else None,
        ordering_key=key,
        handlers=handlers,
        meta=run_meta,
    )
    # Debug, not info: the journal (`omhooks events`) records every dispatch, and a line per
    # event at info would be the bulk of the log during a sale.
    if not logger.isEnabledFor(logging.DEBUG):
        return
    if not handlers:
        logger.debug("No handler is subscribed to event %r of type %r.", event_id, event_type)
        return
    logger.debug(
        "Dispatched event %r (%s, order %r) to %r.",
        event_id,
        event_type,
        order_id,
        [handler.name for handler in handlers],
        extra={"event_id": event_id, "event_type": event_type, "order_id": order_id},
    )


def run_handler(runtime: Runtime, name: str, event_id: str, meta: dict[str, Any]) -> None:
    """Run one handler on one event, in its turn among the events of the same order."""
    handler = runtime.registry.get(name)
    if handler is None:
        raise PermanentError(f"Handler {name!r} is not loaded or is disabled in this worker.")
    if "ordering_key" not in meta:
        # A replayed run's message, or one queued by an earlier version, names only the event,
        # so its order and createdAt come from the body.
        meta = _run_meta(runtime, _parse(event_id, _load(runtime, event_id)), meta)
    message = dramatiq.middleware.CurrentMessage.get_current_message()
    options = message.options if message is not None else {}
    order_id = meta["order_id"]
    started = time.perf_counter()
    try:
        run = runtime.runs.start(
            handler.name,
            event_id,
            ordering_key=meta["ordering_key"],
            order_id=order_id,
            created_at=float(meta["created_at"]),
            in_order=not handler.snapshot,
            waited_seconds=waited_since(options.get("first_deferred_at")),
            deferrals=int(options.get("deferrals", 0)),
        )
    except Deferred as deferral:
        _defer(message, deferral, handler.name, event_id)
        HANDLER_RUNS.labels(handler.name, "deferred").inc()
        return
    if run.waited_for_older:
        logger.warning(
            "Handler %r runs event %r of %r after waiting %.0f s for an older one.",
            handler.name,
            event_id,
            meta["ordering_key"],
            waited_since(options.get("first_deferred_at")),
        )
    try:
        event = _parse(event_id, run.body)
        context = _context(runtime, handler, event, meta)
        outcome = _run(handler, event, context, run)
    except BaseException:
        runtime.runs.finish(run, None)
        raise
    snapshot_done = handler.snapshot and outcome == "succeeded" and order_id is not None
    runtime.runs.finish(
        run,
        outcome,
        order_id=order_id,
        processed_at=event.created_at if snapshot_done else None,
    )
    HANDLER_RUNS.labels(handler.name, outcome).inc()
    HANDLER_DURATION.labels(handler.name).observe(time.perf_counter() - started)


def _run(handler: Handler, event: Event, context: HandlerContext, run: Run) -> str:
    """Run the handler and return the outcome: ``succeeded``, or ``skipped`` if it was stale."""
    if handler.snapshot and event.order_id is not None and run.is_stale(event.created_at):
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
    context.log.debug("Handler finished.")
    return "succeeded"


def _defer(
    message: dramatiq.Message[Any] | None, deferral: Deferred, handler_name: str, event_id: str
) -> None:
    """Put the run back on its queue after a delay; a deferral is not counted as a retry."""
    if message is None:
        raise TransientError(f"The run was deferred ({deferral}) outside of a worker.")
    options = {
        "deferrals": int(message.options.get("deferrals", 0)) + 1,
        "first_deferred_at": message.options.get("first_deferred_at", time.time()),
    }
    dramatiq.get_broker().enqueue(message.copy(options=options), delay=deferral.delay_ms)
    logger.debug(
        "Deferred the run of %r on event %r by %d ms: %s.",
        handler_name,
        event_id,
        deferral.delay_ms,
        deferral,
        extra={"event_id": event_id, "handler": handler_name},
    )


def _fields(exc: ValidationError) -> str:
    locations = {".".join(str(part) for part in error["loc"]) for error in exc.errors()}
    return ", ".join(sorted(locations)) or "the top level"


def _run_meta(runtime: Runtime, event: Event, meta: dict[str, Any]) -> dict[str, Any]:
    """Return a handler message's metadata: the dispatch metadata, the order, the ordering
    key and ``createdAt``, which a run needs to take its turn before it reads the body."""
    return {
        **meta,
        "order_id": event.order_id,
        "ordering_key": ordering_key(
            runtime.settings.ordering_key, event.order_id, event.merchant_id
        ),
        "created_at": seconds(event.created_at),
    }


def _load(runtime: Runtime, event_id: str) -> str:
    body = runtime.redis.get(body_key(runtime.settings.namespace, event_id))
    if body is None:
        raise PermanentError(
            f"The body of event {event_id!r} is no longer stored; it expires after "
            "OMHOOKS_DEDUP_TTL_SECONDS."
        )
    return str(body)


def _parse(event_id: str, body: str) -> Event:
    try:
        return Event.model_validate_json(body)
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
