"""Handlers for the reliability tests; each records what it did in Redis."""

from __future__ import annotations

import json
import os
import signal
import time

from handlers import HandlerContext, handler
from ordermesh.events import Event

_RENDEZVOUS_SECONDS = 10.0
_GATE_SECONDS = 60.0


def _key(ctx: HandlerContext, name: str) -> str:
    return f"{ctx.settings.namespace}:test:{name}"


@handler("order.*")
def ordered(event: Event, ctx: HandlerContext) -> None:
    """Record start and end of each run; with ``rendezvous`` wait for the other order's run."""
    ctx.redis.rpush(_key(ctx, "runs"), json.dumps({"order": event.order_id, "id": event.id}))
    if event.data.get("rendezvous"):
        ctx.redis.set(_key(ctx, f"started:{event.order_id}"), 1)
        other = _key(ctx, f"started:{event.data['rendezvous']}")
        deadline = time.monotonic() + _RENDEZVOUS_SECONDS
        while not ctx.redis.exists(other):
            if time.monotonic() > deadline:
                ctx.redis.rpush(_key(ctx, "rendezvous_missed"), event.id)
                return
            time.sleep(0.01)
    time.sleep(0.02)
    ctx.redis.rpush(_key(ctx, "ends"), event.id)


@handler("test.crash")
def crash_after_call(event: Event, ctx: HandlerContext) -> None:
    """Create a note, then kill this worker process before the message is acknowledged, once."""
    ctx.api.create_note(
        event.order_id or "-", f"note for {event.id}", idempotency_key=ctx.idempotency_key("note")
    )
    if ctx.redis.set(_key(ctx, f"crashed:{event.id}"), 1, nx=True):
        os.kill(os.getpid(), signal.SIGKILL)
    ctx.redis.rpush(_key(ctx, "completed"), event.id)


@handler("test.slow")
def slow_once(event: Event, ctx: HandlerContext) -> None:
    """Hang on the first run, so the test can kill the worker mid-run; finish on the next."""
    if ctx.redis.set(_key(ctx, f"started:{event.id}"), 1, nx=True):
        time.sleep(60)
    ctx.redis.rpush(_key(ctx, "completed"), event.id)


@handler("test.bad_order")
def reads_the_order(event: Event, ctx: HandlerContext) -> None:
    """Read the order snapshot, which fails on a malformed address."""
    order = event.order
    ctx.log.info("Read order %s.", order.id if order else None)


@handler("test.steady")
def steady(event: Event, ctx: HandlerContext) -> None:
    """Record the start, wait until the test sets the gate key, then record the end.

    A test can then stop the worker while every thread is in a run, however fast the machine is.
    """
    ctx.redis.rpush(_key(ctx, "started"), event.id)
    deadline = time.monotonic() + _GATE_SECONDS
    while not ctx.redis.exists(_key(ctx, "gate")) and time.monotonic() < deadline:
        time.sleep(0.01)
    ctx.redis.rpush(_key(ctx, "completed"), event.id)


@handler("test.account")
def records_the_account(event: Event, ctx: HandlerContext) -> None:
    """Record the account the event came through."""
    ctx.redis.rpush(_key(ctx, "accounts"), ctx.account or "-")
