"""Control endpoints under ``/_sandbox``: snapshots, effects, faults and webhooks.

They load snapshots, read effects, inject faults, and set where the sandbox's webhooks go and
which share of them it drops.

They have no authentication and are meant for local development and tests only; serve the
sandbox on a loopback address.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ordermesh.models import Item, Order

from .relay import WebhookRelay
from .responses import ApiFailure, error_response, json_response, read_json
from .state import OPERATIONS, Fault, SandboxState
from .validation import invalid, pydantic_details, require_object

__all__ = ["control_routes"]


def control_routes() -> list[Route]:
    """Return the routes of the control endpoints, relative to ``/_sandbox``."""
    return [
        Route("/orders/{order_id}", _put_order, methods=["PUT"]),
        Route("/orders/{order_id}", _get_order, methods=["GET"]),
        Route("/orders/{order_id}/items/{item_id}", _put_item, methods=["PUT"]),
        Route("/effects", _effects, methods=["GET"]),
        Route("/requests", _requests, methods=["GET"]),
        Route("/faults", _add_fault, methods=["POST"]),
        Route("/faults", _clear_faults, methods=["DELETE"]),
        Route("/reset", _reset, methods=["POST"]),
        Route("/tokens/revoke", _revoke_tokens, methods=["POST"]),
        Route("/webhooks", _get_webhooks, methods=["GET"]),
        Route("/webhooks", _put_webhooks, methods=["PUT"]),
    ]


def _state(request: Request) -> SandboxState:
    state: SandboxState = request.app.state.sandbox
    return state


async def _put_order(request: Request) -> Response:
    """Apply an order snapshot (API shape) and return the order as now stored."""
    order_id = request.path_params["order_id"]
    try:
        body = require_object(await read_json(request))
        order = Order.model_validate({"id": order_id, **body})
        _check_id("id", order.id, order_id)
        return json_response(200, _state(request).apply_order_snapshot(order))
    except ValidationError as exc:
        return error_response(invalid(pydantic_details(exc)))
    except ApiFailure as failure:
        return error_response(failure)


async def _put_item(request: Request) -> Response:
    """Apply an item snapshot to a known order and return the item as now stored."""
    order_id, item_id = request.path_params["order_id"], request.path_params["item_id"]
    try:
        body = require_object(await read_json(request))
        item = Item.model_validate({"id": item_id, **body})
        _check_id("id", item.id, item_id)
        _check_id("orderId", item.order_id or order_id, order_id)
        return json_response(200, _state(request).apply_item_snapshot(order_id, item))
    except ValidationError as exc:
        return error_response(invalid(pydantic_details(exc)))
    except ApiFailure as failure:
        return error_response(failure)


def _check_id(field: str, value: str, path_value: str) -> None:
    if value != path_value:
        message = f"The body's {field} {value!r} differs from the path's {path_value!r}."
        raise invalid([{"field": field, "message": message}])


async def _get_order(request: Request) -> Response:
    try:
        return json_response(200, _state(request).order(request.path_params["order_id"]))
    except ApiFailure as failure:
        return error_response(failure)


async def _effects(request: Request) -> Response:
    return json_response(200, _state(request).effects())


async def _requests(request: Request) -> Response:
    counts = _state(request).request_counts
    return json_response(200, {operation: counts[operation] for operation in OPERATIONS})


async def _add_fault(request: Request) -> Response:
    """Make an operation fail ``count`` times, or until cleared when ``count`` is null."""
    try:
        body = require_object(await read_json(request))
        operation, fault = _parse_fault(body)
    except ApiFailure as failure:
        return error_response(failure)

    _state(request).set_fault(operation, fault)
    return json_response(200, {"operation": operation, **vars(fault)})


def _parse_fault(body: dict[str, Any]) -> tuple[str, Fault]:
    operation = body.get("operation")
    if operation not in OPERATIONS:
        message = f"Must be one of {', '.join(OPERATIONS)}."
        raise invalid([{"field": "operation", "message": message}])

    status = body.get("status")
    if status is not None and (not isinstance(status, int) or not 400 <= status <= 599):
        raise invalid([{"field": "status", "message": "Must be an HTTP status from 400 to 599."}])

    count = body.get("count")
    if count is not None and (not isinstance(count, int) or count < 1):
        raise invalid([{"field": "count", "message": "Must be a positive integer or null."}])

    retry_after = body.get("retryAfter", 1 if status == 429 else None)
    if retry_after is not None and not _is_seconds(retry_after):
        raise invalid([{"field": "retryAfter", "message": "Must be a number of seconds."}])

    delay = body.get("delaySeconds", 0)
    if not _is_seconds(delay):
        raise invalid([{"field": "delaySeconds", "message": "Must be a number of seconds."}])
    if status is None and not delay:
        message = "Give a status, a delaySeconds, or both."
        raise invalid([{"field": "status", "message": message}])

    header = None if retry_after is None else str(retry_after)
    return operation, Fault(status, count, header, float(delay))


def _is_seconds(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        return False
    return Decimal(value).is_finite() and value >= 0


async def _clear_faults(request: Request) -> Response:
    """Clear the fault of the operation given as ``?operation=``, or every fault."""
    _state(request).clear_faults(request.query_params.get("operation"))
    return Response(status_code=204)


async def _reset(request: Request) -> Response:
    _state(request).reset()
    _relay(request).clear_counts()
    return Response(status_code=204)


async def _revoke_tokens(request: Request) -> Response:
    revoked = _state(request).revoke_tokens()
    return json_response(200, {"revoked": revoked})


def _relay(request: Request) -> WebhookRelay:
    relay: WebhookRelay = request.app.state.webhook_relay
    return relay


def _webhooks_status(request: Request) -> dict[str, Any]:
    return {**_relay(request).status(), "snapshotEvents": _state(request).snapshot_events}


async def _get_webhooks(request: Request) -> Response:
    """Return the webhook URL, the drop rate and seed, and the events emitted and dropped."""
    return json_response(200, _webhooks_status(request))


async def _put_webhooks(request: Request) -> Response:
    """Change any of ``url``, ``dropRate``, ``dropSeed`` and ``snapshotEvents``.

    A field left out keeps its value; ``"url": null`` stops sending webhooks.
    """
    try:
        body = require_object(await read_json(request))
        rate, seed, snapshot_events = _parse_webhook_options(request, body)
        if "url" in body:
            await asyncio.to_thread(_relay(request).set_url, _parse_url(body["url"]))
    except ApiFailure as failure:
        return error_response(failure)
    except ValueError as exc:
        return error_response(invalid([{"field": "url", "message": str(exc)}]))

    _relay(request).set_drops(rate, seed)
    _state(request).snapshot_events = snapshot_events
    return json_response(200, _webhooks_status(request))


def _parse_webhook_options(request: Request, body: dict[str, Any]) -> tuple[float, int, bool]:
    current = _relay(request).status()
    rate = body.get("dropRate", current["dropRate"])
    if isinstance(rate, bool) or not isinstance(rate, int | Decimal | float) or not 0 <= rate <= 1:
        raise invalid([{"field": "dropRate", "message": "Must be a number from 0 to 1."}])

    seed = body.get("dropSeed", current["dropSeed"])
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise invalid([{"field": "dropSeed", "message": "Must be an integer."}])

    snapshot_events = body.get("snapshotEvents", _state(request).snapshot_events)
    if not isinstance(snapshot_events, bool):
        raise invalid([{"field": "snapshotEvents", "message": "Must be true or false."}])
    return float(rate), seed, snapshot_events


def _parse_url(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise invalid([{"field": "url", "message": "Must be an http:// or https:// URL, or null."}])
    return value
