"""Handlers for the tests: each appends its name and the event id to a Redis list."""

from __future__ import annotations

from handlers import HandlerContext, PermanentError, handler
from ordermesh.events import Event


def _record(event: Event, ctx: HandlerContext) -> None:
    ctx.redis.rpush(f"{ctx.settings.namespace}:record", f"{ctx.handler.name} {event.id}")


@handler("order.created")
def exact(event: Event, ctx: HandlerContext) -> None:
    _record(event, ctx)


@handler("order.*")
def prefix(event: Event, ctx: HandlerContext) -> None:
    _record(event, ctx)


@handler("*")
def everything(event: Event, ctx: HandlerContext) -> None:
    _record(event, ctx)


@handler("order.created")
def always_broken(event: Event, ctx: HandlerContext) -> None:
    raise PermanentError("This handler never works.")
