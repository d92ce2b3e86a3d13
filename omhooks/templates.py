"""Events to send by hand or in tests, built from the shapes of the fixture lifecycle.

``make_event("order.cancelled", order_id="ord_1")`` returns the lifecycle's ``order.cancelled``
event with a fresh id, ``createdAt`` set to now and every mention of its order's id replaced.
"""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime
from typing import Any

from ordermesh.events import order_id_of

from .errors import ConfigurationError
from .lifecycle import load_lifecycle

__all__ = ["make_event", "new_event_id", "retarget_order", "template_names", "utc_timestamp"]


def template_names() -> list[str]:
    """Return the event types that have a template, sorted."""
    return sorted(_templates())


def make_event(
    event_type: str, *, order_id: str | None = None, event_id: str | None = None
) -> dict[str, Any]:
    """Return a new event of a type that has a template, ready to sign and send.

    The event gets ``event_id`` (default: a fresh ``evt_`` id) and ``createdAt`` now. With
    ``order_id``, every value equal to the template's order id is replaced by it.
    Raises ``ConfigurationError`` for a type without a template.
    """
    templates = _templates()
    if event_type not in templates:
        raise ConfigurationError(
            f"No event template of type {event_type!r}; the templates are: "
            f"{', '.join(sorted(templates))}."
        )
    event = copy.deepcopy(templates[event_type])
    event["id"] = event_id or new_event_id()
    event["createdAt"] = utc_timestamp()
    if order_id is not None:
        event = retarget_order(event, order_id)
    return event


def retarget_order(event: dict[str, Any], order_id: str) -> dict[str, Any]:
    """Return a copy of the event with every value equal to its order's id replaced by another.

    An event that names no order is returned unchanged.
    """
    current = order_id_of(str(event.get("type", "")), event.get("data") or {})
    if current is None:
        return copy.deepcopy(event)
    retargeted: dict[str, Any] = _replace_value(event, current, order_id)
    return retargeted


def new_event_id() -> str:
    """Return a fresh event id in the API's style, e.g. ``evt_3f2a9c1e0b7d4e55``."""
    return f"evt_{uuid.uuid4().hex[:16]}"


def utc_timestamp(moment: datetime | None = None) -> str:
    """Return a time as the API writes it: UTC, milliseconds, ``Z`` (default: now)."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _templates() -> dict[str, dict[str, Any]]:
    # The first event of each type in the lifecycle is that type's template.
    templates: dict[str, dict[str, Any]] = {}
    for event in load_lifecycle()["events"]:
        templates.setdefault(event["type"], event)
    return templates


def _replace_value(value: Any, old: str, new: str) -> Any:
    if isinstance(value, dict):
        return {key: _replace_value(inner, old, new) for key, inner in value.items()}
    if isinstance(value, list):
        return [_replace_value(inner, old, new) for inner in value]
    return new if value == old else value
