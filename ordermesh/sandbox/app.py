"""The sandbox's Starlette app: the OrderMesh API under ``/v1``, controls under ``/_sandbox``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from . import operations
from .control import control_routes
from .idempotency import fingerprint
from .listing import list_orders
from .refunds import add_refund
from .relay import WebhookRelay
from .responses import ApiFailure, error_response, json_response, read_json
from .state import TOKEN_LIFETIME_SECONDS, Fault, SandboxState
from .validation import require_object, require_strings

__all__ = ["create_app", "run"]

logger = logging.getLogger(__name__)

Result = tuple[int, Any]
Action = Callable[[SandboxState, Request, Any], Result]
"""A function that runs one operation, given the state, the request and its parsed body.

The body is None for a GET.
"""

_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def create_app(
    *,
    client_id: str = "sandbox",
    client_secret: str = "sandbox-secret",
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    drop_rate: float = 0.0,
    drop_seed: int = 0,
    snapshot_events: bool = False,
) -> Starlette:
    """Create a sandbox of the OrderMesh API with an empty in-memory state.

    The state is ``app.state.sandbox``. When ``webhook_url`` is given, each change made through
    the API is sent there as a delivery signed with ``webhook_secret``; ``PUT
    /_sandbox/webhooks`` can set the URL later. ``drop_rate`` (0 to 1) is the share of events
    dropped on purpose, drawn with ``drop_seed``. With ``snapshot_events``, order and item
    snapshots applied through the control endpoints emit ``order.created`` or
    ``order.updated`` as well.
    """
    if webhook_url is not None and not webhook_secret:
        raise ValueError(
            f"webhook_url {webhook_url!r} needs a webhook_secret (whsec_...) to sign deliveries."
        )

    state = SandboxState(client_id, client_secret)
    state.snapshot_events = snapshot_events
    relay = WebhookRelay(
        secret=webhook_secret, url=webhook_url, drop_rate=drop_rate, drop_seed=drop_seed
    )
    state.listeners.append(relay)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(relay.close)

    app = Starlette(
        routes=[Mount("/v1", routes=_api_routes()), Mount("/_sandbox", routes=control_routes())],
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
        lifespan=lifespan,
    )
    app.state.sandbox = state
    app.state.webhook_relay = relay
    return app


def run(host: str, port: int, **app_kwargs: Any) -> None:
    """Serve a new sandbox with uvicorn until interrupted; ``app_kwargs`` go to ``create_app``."""
    if host not in _LOOPBACK_HOSTS:
        # The control endpoints have no authentication.
        logger.warning("The sandbox listens on %r, which is not a loopback address.", host)
    uvicorn.run(create_app(**app_kwargs), host=host, port=port)


def _api_routes() -> list[Route]:
    return [
        _route("/client/token", "client_token", _issue_token, "POST"),
        _route("/orders", "list_orders", _list_orders, "GET"),
        _route("/orders/{order_id}", "get_order", _get_order, "GET"),
        _route("/orders/{order_id}/shipments", "list_shipments", _list_shipments, "GET"),
        _route("/orders/{order_id}/refunds", "add_refund", _add_refund, "POST"),
        _route("/orders/{order_id}/customer-care-hold", "put_on_hold", _put_on_hold, "POST"),
        _route("/shipments", "create_shipment", _create_shipment, "POST"),
        _route("/shipments/{shipment_id}/packages", "create_packages", _create_packages, "POST"),
        _route("/notes", "create_note", _create_note, "POST"),
    ]


def _route(path: str, operation: str, action: Action, method: str) -> Route:
    async def endpoint(request: Request) -> Response:
        return await _handle(request, operation, action)

    return Route(path, endpoint, methods=[method], name=operation)


async def _handle(request: Request, operation: str, action: Action) -> Response:
    state: SandboxState = request.app.state.sandbox
    state.count_request(operation)
    try:
        if operation != "client_token":
            _authenticate(request, state)

        fault = state.take_fault(operation)
        if fault is not None:
            await asyncio.sleep(fault.delay_seconds)
            if fault.status is not None:
                return _fault_response(operation, fault)

        if request.method == "GET":
            return json_response(*action(state, request, None))
        body = await read_json(request)
        return _run_idempotent(request, state, action, body)
    except ApiFailure as failure:
        return error_response(failure)


def _authenticate(request: Request, state: SandboxState) -> None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not state.token_is_valid(token.strip()):
        raise ApiFailure(
            401,
            "unauthorized",
            "The access token is missing, expired or revoked; get one from POST /client/token.",
            headers={"WWW-Authenticate": "Bearer"},
        )


def _fault_response(operation: str, fault: Fault) -> Response:
    code = "rate_limited" if fault.status == 429 else "sandbox_fault"
    headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
    message = f"Injected fault: {operation} fails with {fault.status}; see /_sandbox/faults."
    return error_response(ApiFailure(fault.status or 500, code, message, headers=headers))


def _run_idempotent(request: Request, state: SandboxState, action: Action, body: Any) -> Response:
    key = request.headers.get("Idempotency-Key")
    if not key:
        return _respond(state, request, action, body)

    digest = fingerprint(request.method, request.url.path, body)
    with state.lock:
        stored = state.idempotency.lookup(key, digest)
        if stored is not None:
            headers = {"Idempotent-Replayed": "true"}
            return Response(stored.body, stored.status, headers, media_type="application/json")

        response = _respond(state, request, action, body)
        # A server error never ran the operation, so a retry with the same key runs it again.
        if response.status_code < 500:
            state.idempotency.store(key, digest, response.status_code, bytes(response.body))
        return response


def _respond(state: SandboxState, request: Request, action: Action, body: Any) -> Response:
    try:
        return json_response(*action(state, request, body))
    except ApiFailure as failure:
        return error_response(failure)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
    message = f"{request.method} {request.url.path} is not an operation of the sandbox."
    return error_response(ApiFailure(status, code, message))


async def _internal_error(request: Request, exc: Exception) -> Response:
    logger.exception("The sandbox failed on %s %r.", request.method, request.url.path)
    message = "The sandbox failed with an internal error; its log has the traceback."
    return error_response(ApiFailure(500, "internal_error", message))


# Actions, one per operation


def _issue_token(state: SandboxState, request: Request, body: Any) -> Result:
    body = require_object(body)
    require_strings(body, ("clientId", "clientSecret"))
    token = state.issue_token(body["clientId"], body["clientSecret"])
    return 200, {"accessToken": token, "tokenType": "Bearer", "expiresIn": TOKEN_LIFETIME_SECONDS}


def _list_orders(state: SandboxState, request: Request, body: Any) -> Result:
    return list_orders(state, request.query_params)


def _get_order(state: SandboxState, request: Request, body: Any) -> Result:
    return operations.get_order(state, request.path_params["order_id"])


def _list_shipments(state: SandboxState, request: Request, body: Any) -> Result:
    return operations.list_shipments(state, request.path_params["order_id"])


def _add_refund(state: SandboxState, request: Request, body: Any) -> Result:
    return add_refund(state, request.path_params["order_id"], body)


def _put_on_hold(state: SandboxState, request: Request, body: Any) -> Result:
    return operations.put_on_hold(state, request.path_params["order_id"], body)


def _create_shipment(state: SandboxState, request: Request, body: Any) -> Result:
    return operations.create_shipment(state, body)


def _create_packages(state: SandboxState, request: Request, body: Any) -> Result:
    return operations.create_packages(state, request.path_params["shipment_id"], body)


def _create_note(state: SandboxState, request: Request, body: Any) -> Result:
    return operations.create_note(state, body)
