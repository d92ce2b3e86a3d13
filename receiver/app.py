"""The Starlette application that receives OrderMesh webhooks."""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pydantic import ValidationError
from redis import RedisError
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from omhooks.errors import DeliveryRejected
from omhooks.redis_clients import async_redis
from omhooks.settings import Settings, get_settings
from ordermesh.events import Envelope, order_id_of

from .accounts import load_account_verifiers
from .body import read_body
from .durability import check_durability
from .legacy import check_token, load_legacy_token, order_id_from_query, snapshot_event
from .legacy_changes import derive_events, last_snapshot_key
from .metrics import ENQUEUE_SECONDS, RESPONSES, VERIFICATION_FAILURES, metrics
from .openapi import openapi
from .parsing import parse_json
from .queueing import EventQueue
from .rejection_log import RejectionLog
from .secret_use import SecretUse
from .verification import SignatureVerifier

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

_JSON_TYPES = ("application/json",)


def create_app(settings: Settings | None = None) -> Starlette:
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
        Route("/webhooks/ordermesh", receive_webhook, methods=["POST"]),
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
        HTTPException: _http_error,
        Exception: _internal_error,
    }
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    # A trailing slash is not redirected: a redirect would echo the request's Host header.
    app.router.redirect_slashes = False
    app.state.settings = settings
    app.state.verifier = verifier
    app.state.account_verifiers = account_verifiers
    app.state.legacy_token = legacy_token
    app.state.rejection_log = RejectionLog(logger)
    return app


async def receive_webhook(request: Request) -> JSONResponse:
    """Verify one delivery, queue its event once, and answer 202 (queued) or 200 (duplicate)."""
    return await _receive(request, request.app.state.verifier, account=None)


async def receive_account_webhook(request: Request) -> JSONResponse:
    """Receive a delivery for one of the accounts of ``OMHOOKS_ACCOUNTS``, with its secrets."""
    account = request.path_params["account"]
    verifier = request.app.state.account_verifiers.get(account)
    if verifier is None:
        raise DeliveryRejected(
            404, "unknown_account", f"No account {account[:64]!r} is configured on this receiver."
        )
    return await _receive(request, verifier, account=account)


async def receive_legacy_snapshot(request: Request) -> JSONResponse:
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

    settings: Settings = request.app.state.settings
    _check_content_type(request)
    body = await read_body(request, settings.max_body_bytes, settings.body_timeout_seconds)
    event = snapshot_event(order_id, body, parse_json(body))
    order: dict[str, Any] = event["data"]["order"]

    redis: Redis = request.app.state.redis
    last_key = last_snapshot_key(settings.namespace, order_id)
    try:
        stored = await redis.get(last_key)
    except RedisError as exc:
        raise _queue_unavailable(request, event["id"], exc) from exc
    # NOTE: two snapshots of one order received at once both compare with the same last
    # order, so a change between them derives no event.
    previous = json.loads(stored) if stored is not None else None
    if previous == order:
        logger.info("Acknowledged an unchanged snapshot of order %r.", order_id)
        RESPONSES.labels("200", "unchanged").inc()
        return JSONResponse({"status": "unchanged"}, status_code=200)

    meta = {"type": event["type"], "order_id": order_id, "source": "legacy"}
    response = await _queue(request, event["id"], event["type"], _encode(event), meta)
    for derived in derive_events(previous, order, event["createdAt"]):
        derived_meta = {"type": derived["type"], "order_id": order_id, "source": "legacy"}
        await _queue_derived(request, derived, derived_meta)

    # The last order is stored only after its events are queued. If this write fails, the
    # sender's retry derives the same event ids, and the queue drops the ones already queued.
    try:
        await redis.set(last_key, _encode(order), ex=settings.dedup_ttl_seconds)
    except RedisError as exc:
        raise _queue_unavailable(request, event["id"], exc) from exc
    return response


async def _queue_derived(request: Request, event: dict[str, Any], meta: dict[str, Any]) -> None:
    """Queue an event derived from a snapshot once, without counting it as a response."""
    try:
        queued = await request.app.state.queue.put(event["id"], _encode(event), meta)
    except RedisError as exc:
        raise _queue_unavailable(request, event["id"], exc) from exc
    if queued:
        logger.debug("Queued derived event %r (%s).", event["id"], event["type"])


def _encode(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


async def _receive(
    request: Request, verifier: SignatureVerifier, *, account: str | None
) -> JSONResponse:
    settings: Settings = request.app.state.settings
    _check_content_type(request)
    body = await read_body(request, settings.max_body_bytes, settings.body_timeout_seconds)
    verified = verifier.verify(request.headers, body)
    request.app.state.secret_use.record(account, verified.secret_index)
    envelope = _parse_envelope(body, verified.event_id)
    meta = {
        "type": envelope.type,
        "order_id": order_id_of(envelope.type, envelope.data),
        "secret_index": verified.secret_index,
    }
    if account is not None:
        # NOTE: the duplicate filter is keyed by event id alone, so two accounts sending the
        # same event id would see the second dropped as a redelivery.
        meta["account"] = account
    return await _queue(request, envelope.id, envelope.type, body, meta)


async def _queue(
    request: Request, event_id: str, event_type: str, body: bytes, meta: dict[str, Any]
) -> JSONResponse:
    """Queue the event once and answer 202 (queued) or 200 (duplicate), or raise 503."""
    try:
        started = time.perf_counter()
        queued = await request.app.state.queue.put(event_id, body, meta)
        ENQUEUE_SECONDS.observe(time.perf_counter() - started)
    except RedisError as exc:
        raise _queue_unavailable(request, event_id, exc) from exc

    if not queued:
        logger.info("Dropped a redelivery of event %r (%s).", event_id, event_type)
        RESPONSES.labels("200", "duplicate").inc()
        return JSONResponse({"status": "duplicate", "id": event_id}, status_code=200)
    logger.debug("Queued event %r (%s).", event_id, event_type)
    RESPONSES.labels("202", "queued").inc()
    return JSONResponse({"status": "queued", "id": event_id}, status_code=202)


def _queue_unavailable(request: Request, event_id: str, exc: RedisError) -> DeliveryRejected:
    """Log a failed Redis call for an event and return the 503 rejection with Retry-After."""
    logger.error("Could not queue event %r: %s: %s", event_id, type(exc).__name__, exc)
    settings: Settings = request.app.state.settings
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


def _check_content_type(request: Request) -> None:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
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
    _log_rejection(request, exc)
    RESPONSES.labels(str(exc.status), exc.code).inc()
    if exc.status == 401:
        VERIFICATION_FAILURES.labels(exc.code).inc()
    body: dict[str, Any] = {"code": exc.code, "message": exc.message}
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)


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
    logger.error("Failed to respond to a request: %s", type(exc).__name__, exc_info=exc)
    RESPONSES.labels("500", "internal_error").inc()
    body = {"code": "internal_error", "message": "The receiver failed; the sender may retry."}
    return JSONResponse(body, status_code=500)


def _log_rejection(request: Request, exc: DeliveryRejected) -> None:
    event_id = request.headers.get("webhook-id", "")[:64] or None
    level = logging.ERROR if exc.status >= 500 else logging.WARNING
    rejection_log: RejectionLog = request.app.state.rejection_log
    rejection_log.log(
        level,
        exc.code,
        "Rejected a delivery (event %r) with %d %s.",
        event_id,
        exc.status,
        exc.code,
    )
