"""Handlers of the workers benchmark that do nothing, so a run measures the workers alone.

Each subscribes to every event type. The benchmark loads this module with
``OMHOOKS_HANDLER_MODULES=bench.noop_handlers`` and turns off, with
``OMHOOKS_DISABLED_HANDLERS``, the built-in handlers and those it does not measure.
"""

from __future__ import annotations

from handlers import HandlerContext, handler
from ordermesh.events import Event

NAMES = ("noop_a", "noop_b", "noop_c")


@handler("*")
def noop_a(event: Event, ctx: HandlerContext) -> None:
    """Do nothing."""


@handler("*")
def noop_b(event: Event, ctx: HandlerContext) -> None:
    """Do nothing."""


@handler("*")
def noop_c(event: Event, ctx: HandlerContext) -> None:
    """Do nothing."""
