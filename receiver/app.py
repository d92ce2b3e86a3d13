"""The Starlette application that receives OrderMesh webhooks."""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from json.encoder import encode_basestring
from typing import Any

from pydantic import ValidationError
from redis import RedisError
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from omhooks.errors import DeliveryRejected
from omhooks.redis_clients import async_redis
from omhooks.settings import Settings, get_settings
from ordermesh.events import Envelope
from workers.ordering import ordering_key
from workers.queues import dispatch_meta

from .accounts import load_account_verifiers
from .body import BodyDeadlines, read_body
from .durability import check_durability
from .legacy import check_token, load_legacy_token, order_id_from_query, snapshot_event
from .legacy_changes import derive_events, last_snapshot_key
from .metrics import (
    DUPLICATE_RESPONSES,
    ENQUEUE_SECONDS,
    QUEUED_RESPONSES,
    RESPONSES,
    VERIFICATION_FAILURES,
    metrics,
)
from .openapi import openapi
from .parsing import parse_json
from .queueing import EventQueue
from .rejection_log import RejectionLog
from .secret_use import SecretUse
from .verification import SignatureVerifier

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

_JSON_TYPES = ("application/json",)
ENDPOINT = "/webhooks/ordermesh"


class ReceiverApp(Starlette):
    """The receiver's Starlette app, serving ``POST /webhooks/ordermesh`` without Starlette.

    That endpoint takes nearly all the load, so its requests skip the middleware, the router and
    the ``Request`` and ``Response`` objects. In a py-spy profile of bench/receiver.py, a fifth
    of the receiver's samples were in Starlette's code. The checks, responses, logs and metrics
    are the same as through Starlette. Every other request goes through Starlette, and so does
    every request when the app has middleware or a body size limit, or the server a root path.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == ENDPOINT
            and scope["method"] == "POST"
            and not scope.get("root_path")
            and not self.user_middleware
            and self.max_body_size is None
        ):
            scope["app"] = self
            await _serve_delivery(self.state, scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> ReceiverApp:
    """Build the receiver for the given settings (by default, the environment's)."""
    settings = settings or get_settings()
    verifier = SignatureVerifier(
        settings.secret_values(), tolerance_seconds=settings.timestamp_tolerance_seconds
    )
    account_verifiers = load_account_verifiers(
        settings.accounts.get_secret_value(), tolerance_seconds=settings.timestamp_tolerance_seconds
    )
    legacy_token = load_legacy_token(settings.legacy_token)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        redis = async_redis(settings, socket_timeout=2, socket_connect_timeout=2)
        app.state.redis = redis
        app.state.secret_use = SecretUse(redis, settings)
        app.state.queue = EventQueue(
            redis, namespace=settings.namespace, dedup_ttl_seconds=settings.dedup_ttl_seconds
        )
        await check_durability(redis, required=settings.redis_durability == "require")
        # The objects made so far (modules, the app, pydantic's validators) live as long as the
        # process, so full collections need not scan them. Under load in bench/receiver.py,
        # each full collection that scanned them paused every delivery in flight for ~50 ms.
        gc.freeze()
        try:
            yield
        finally:
            app.state.rejection_log.flush()
            await app.state.queue.aclose()
            await redis.aclose()

    routes = [
        Route(ENDPOINT, receive_webhook, methods=["POST"]),
        Route("/webhooks/ordermesh/{account}", receive_account_webhook, methods=["POST"]),
        Route("/hooks/legacy", receive_legacy_snapshot, methods=["POST"]),
        Route("/hooks/legacy/{token}", receive_legacy_snapshot, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    handlers: dict[Any, Any] = {
        DeliveryRejected: _rejected,
        ClientDisconnect: _client_disconnected,
        HTTPException: _http_error,
        Exception: _internal_error,
    }
    app = ReceiverApp(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    # A trailing slash is not redirected: a redirect would echo the request's Host header.
    app.router.redirect_slashes = False
    app.state.settings = settings
    app.state.verifier = verifier
    app.state.account_verifiers = account_verifiers
    app.state.legacy_token = legacy_token
    app.state.rejection_log = RejectionLog(logger)
    app.state.body_deadlines = BodyDeadlines(settings.body_timeout_seconds)
    return app


async def _serve_delivery(state: State, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve ``POST /webhooks/ordermesh`` as the Starlette route and error handlers would."""
    headers = _header_map(scope["headers"])
    try:
        status, content = await _receive(state, headers, receive, state.verifier, account=None)
    except DeliveryRejected as exc:
        await _rejection_response(state, headers, exc)(scope, receive, send)
        return
    except ClientDisconnect:
        _record_disconnect(state, headers)
        return
    except Exception as exc:
        # As Starlette's ServerErrorMiddleware does: respond 500, then raise for the server
        # to log the traceback.
        await _internal_error_response(exc)(scope, receive, send)
        raise
    length = str(len(content)).encode("latin-1")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            # The headers that JSONResponse sends, in its order.
            "headers": [(b"content-length", length), (b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": content})


def _json_response(status: int, content: bytes) -> Response:
    """Return a response of the JSON body ``content``, as ``_receive`` and ``_queue`` build it."""
    return Response(content, status_code=status, media_type="application/json")


def _header_map(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """Return the request's headers by name, keeping the first of repeated ones as Starlette does.

    ASGI servers send header names in lowercase.
    """
    # In reverse order, the first of repeated headers is written last and stays.
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in reversed(raw)}


async def receive_webhook(request: Request) -> Response:
    """Verify one delivery, queue its event once, and respond 202 (queued) or 200 (duplicate).

    ``ReceiverApp`` serves this endpoint itself, except in the cases its documentation lists.
    """
    state = request.app.state
    status, content = await _receive(
        state, request.headers, request.receive, state.verifier, account=None
    )
    return _json_response(status, content)


async def receive_account_webhook(request: Request) -> Response:
    """Receive a delivery for one of the accounts of ``OMHOOKS_ACCOUNTS``, with its secrets."""
    account = request.path_params["account"]
    state = request.app.state
    verifier = state.account_verifiers.get(account)
    if verifier is None:
        raise DeliveryRejected(
            404, "unknown_account", f"No account {account[:64]!r} is configured on this receiver."
        )
    status, content = await _receive(
        state, request.headers, request.receive, verifier, account=account
    )
    return _json_response(status, content)


async def receive_legacy_snapshot(request: Request) -> Response:
    """Queue an unsigned order snapshot as an ``order.snapshot`` event, if the token matches.

    The events derived from the change since the order's last snapshot are queued after it.
    A snapshot whose converted order equals the last one gets 200 ``unchanged``. The
    token is the last path segment or, on ``/hooks/legacy``, the ``token`` query parameter.
    """
    expected: str | None = request.app.state.legacy_token
    if expected is None:
        raise DeliveryRejected(
            404, "not_found", "Legacy deliveries are disabled: OMHOOKS_LEGACY_TOKEN is unset."
        )
    presented = request.path_params.get("token", request.query_params.get("token"))
    check_token(expected, presented)
    order_id = order_id_from_query(request.query_params.get("orderid"))

    state = request.app.state
    settings: Settings = state.settings
    _check_content_type(request.headers)
    body = await read_body(
        request.headers, request.receive, settings.max_body_bytes, state.body_deadlines
    )
    event = snapshot_event(order_id, body, parse_json(body))
    order: dict[str, Any] = event["data"]["order"]

    redis: Redis = state.redis
    last_key = last_snapshot_key(settings.namespace, order_id)
    try:
        stored = await redis.get(last_key)
    except RedisError as exc:
        raise _queue_unavailable(settings, event["id"], exc) from exc
    # NOTE: two snapshots of one order received at once both compare with the same last
    # order, so a change between them derives no event.
    previous = json.loads(stored) if stored is not None else None
    if previous == order:
        logger.info("Acknowledged an unchanged snapshot of order %r.", order_id)
        RESPONSES.labels("200", "unchanged").inc()
        return JSONResponse({"status": "unchanged"}, status_code=200)

    meta = {"type": event["type"], "order_id": order_id, "source": "legacy"}
    status, content = await _queue(state, event["id"], event["type"], _encode(event), meta)
    for derived in derive_events(previous, order, event["createdAt"]):
        derived_meta = {"type": derived["type"], "order_id": order_id, "source": "legacy"}
        await _queue_derived(state, derived, derived_meta)

    # The last order is stored only after its events are queued. If this write fails, the
    # sender's retry derives the same event ids, and the queue drops the ones already queued.
    try:
        await redis.set(last_key, _encode(order), ex=settings.dedup_ttl_seconds)
    except RedisError as exc:
        raise _queue_unavailable(settings, event["id"], exc) from exc
    return _json_response(status, content)


async def _queue_derived(state: State, event: dict[str, Any], meta: dict[str, Any]) -> None:
    """Queue an event derived from a snapshot once, without counting it as a response."""
    try:
        queued = await state.queue.put(event["id"], _encode(event), meta)
    except RedisError as exc:
        raise _queue_unavailable(state.settings, event["id"], exc) from exc
    if queued:
        logger.debug("Queued derived event %r (%s).", event["id"], event["type"])


def _encode(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


async def _receive(
    state: State,
    headers: Mapping[str, str],
    receive: Receive,
    verifier: SignatureVerifier,
    *,
    account: str | None,
) -> tuple[int, bytes]:
    """Check one delivery, queue its event, and return the response's status and JSON body."""
    settings: Settings = state.settings
    _check_content_type(headers)
    body = await read_body(headers, receive, settings.max_body_bytes, state.body_deadlines)
    verified = verifier.verify(headers, body)
    state.secret_use.record(account, verified.secret_index)
    envelope = _parse_envelope(body, verified.event_id)
    meta = dispatch_meta(envelope)
    meta["secret_index"] = verified.secret_index
    if account is not None:
        # NOTE: the duplicate filter is keyed by event id alone, so two accounts sending the
        # same event id would see the second dropped as a redelivery.
        meta["account"] = account
    key = ordering_key(settings.ordering_key, meta["order_id"], meta["merchant_id"])
    return await _queue(state, envelope.id, envelope.type, body, meta, ordering_key=key)


async def _queue(
    state: State,
    event_id: str,
    event_type: str,
    body: bytes,
    meta: dict[str, Any],
    *,
    ordering_key: str | None = None,
) -> tuple[int, bytes]:
    """Queue the event once and return 202 (queued) or 200 (duplicate) with the JSON body.

    With ``ordering_key``, runs of newer events of that key wait until this one is dispatched.
    Raises ``DeliveryRejected`` 503 when Redis fails.
    """
    try:
        started = time.perf_counter()
        queued = await state.queue.put(event_id, body, meta, ordering_key=ordering_key)
        ENQUEUE_SECONDS.observe(time.perf_counter() - started)
    except RedisError as exc:
        raise _queue_unavailable(state.settings, event_id, exc) from exc

    # The bytes JSONResponse renders for {"status": ..., "id": event_id}: json.dumps without
    # ensure_ascii writes a string this way.
    quoted_id = encode_basestring(event_id).encode()
    if not queued:
        logger.info("Dropped a redelivery of event %r (%s).", event_id, event_type)
        DUPLICATE_RESPONSES.inc()
        return 200, b'{"status":"duplicate","id":' + quoted_id + b"}"
    logger.debug("Queued event %r (%s).", event_id, event_type)
    QUEUED_RESPONSES.inc()
    return 202, b'{"status":"queued","id":' + quoted_id + b"}"


def _queue_unavailable(settings: Settings, event_id: str, exc: RedisError) -> DeliveryRejected:
    """Log a failed Redis call for an event and return the 503 rejection with Retry-After."""
    logger.error("Could not queue event %r: %s: %s", event_id, type(exc).__name__, exc)
    return DeliveryRejected(
        503,
        "queue_unavailable",
        "The event could not be queued; retry later.",
        headers={"Retry-After": str(settings.retry_after_seconds)},
    )


async def healthz(request: Request) -> JSONResponse:
    """Answer 200 while the process is alive."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """Answer 200 when Redis is reachable, 503 otherwise."""
    try:
        await request.app.state.queue.ping()
    except RedisError:
        return JSONResponse({"status": "unavailable", "redis": "unreachable"}, status_code=503)
    return JSONResponse({"status": "ready"})


def _check_content_type(headers: Mapping[str, str]) -> None:
    media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type not in _JSON_TYPES:
        raise DeliveryRejected(
            415,
            "unsupported_media_type",
            f"Content-Type must be application/json, not {media_type or 'missing'!r}.",
        )


def _parse_envelope(body: bytes, event_id: str) -> Envelope:
    parsed = parse_json(body)
    try:
        envelope = Envelope.model_validate(parsed)
    except ValidationError as exc:
        raise _envelope_error(exc, event_id) from exc
    if envelope.id != event_id:
        raise DeliveryRejected(
            400,
            "id_mismatch",
            f"The body's id {envelope.id!r} differs from webhook-id {event_id!r}.",
        )
    return envelope


def _envelope_error(exc: ValidationError, event_id: str) -> DeliveryRejected:
    errors = exc.errors(include_url=False, include_input=False)
    fields = sorted({".".join(str(part) for part in error["loc"]) or "body" for error in errors})
    return DeliveryRejected(
        400,
        "invalid_envelope",
        f"The envelope of event {event_id!r} is invalid at: {', '.join(fields)}.",
    )


async def _rejected(request: Request, exc: DeliveryRejected) -> JSONResponse:
    return _rejection_response(request.app.state, request.headers, exc)


def _rejection_response(
    state: State, headers: Mapping[str, str], exc: DeliveryRejected
) -> JSONResponse:
    """Log and count a rejected request, and return its JSON error response."""
    _log_rejection(state.rejection_log, headers, exc)
    RESPONSES.labels(str(exc.status), exc.code).inc()
    if exc.status == 401:
        VERIFICATION_FAILURES.labels(exc.code).inc()
    body: dict[str, Any] = {"code": exc.code, "message": exc.message}
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)


async def _client_disconnected(request: Request, exc: ClientDisconnect) -> Response:
    _record_disconnect(request.app.state, request.headers)
    # The client is gone, so no response reaches it. 499 is the status nginx logs for this.
    return Response(status_code=499)


def _record_disconnect(state: State, headers: Mapping[str, str]) -> None:
    """Log and count a delivery whose client went away before its whole body arrived.

    Nothing was queued, so the sender's retry delivers the event. It is no server error, so it
    is counted under 499, not 500.
    """
    state.rejection_log.log(
        logging.INFO,
        "client_disconnected",
        "The client of a delivery (event %r) disconnected before sending its whole body.",
        _logged_event_id(headers),
    )
    RESPONSES.labels("499", "client_disconnected").inc()


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    codes = {404: "not_found", 405: "method_not_allowed"}
    code = codes.get(exc.status_code, "http_error")
    RESPONSES.labels(str(exc.status_code), code).inc()
    return JSONResponse(
        {"code": code, "message": str(exc.detail)},
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    return _internal_error_response(exc)


def _internal_error_response(exc: Exception) -> JSONResponse:
    """Log an unexpected error, count it, and return the 500 response."""
    logger.error("Failed to respond to a request: %s", type(exc).__name__, exc_info=exc)
    RESPONSES.labels("500", "internal_error").inc()
    body = {"code": "internal_error", "message": "The receiver failed; the sender may retry."}
    return JSONResponse(body, status_code=500)


def _log_rejection(
    rejection_log: RejectionLog, headers: Mapping[str, str], exc: DeliveryRejected
) -> None:
    event_id = _logged_event_id(headers)
    level = logging.ERROR if exc.status >= 500 else logging.WARNING
    rejection_log.log(
        level,
        exc.code,
        "Rejected a delivery (event %r) with %d %s.",
        event_id,
        exc.status,
        exc.code,
    )


def _logged_event_id(headers: Mapping[str, str]) -> str | None:
    """Return the request's webhook-id for a log line, cut to 64 characters, or None."""
    return headers.get("webhook-id", "")[:64] or None
