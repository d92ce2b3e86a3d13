"""A thread-safe client of the OrderMesh API, for handlers running in worker threads.

Every failure surfaces as an ``omhooks.errors.ApiError``: ``ApiTransientError`` when a later
retry may succeed (timeouts, connection errors, 5xx, rate limits), ``ApiPermanentError`` when it
cannot (400, 403, 404, 422, a second 401) and ``ConflictError`` for 409.
"""

from __future__ import annotations

import email.utils
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from omhooks.errors import (
    ApiError,
    ApiPermanentError,
    ApiTransientError,
    ConfigurationError,
    ConflictError,
)

from .models import ApiModel, Order, Package, RefundLine, Shipment

if TYPE_CHECKING:
    from omhooks.settings import Settings

__all__ = ["OrderMeshClient"]

logger = logging.getLogger(__name__)

_TOKEN_MARGIN_SECONDS = 60.0
_BACKOFF_BASE_SECONDS = 0.2
_RETRYABLE_STATUSES = frozenset({408, 425, 429})

_Model = TypeVar("_Model", bound=ApiModel)


class OrderMeshClient:
    """A client of the OrderMesh API that one instance shares among several threads.

    It fetches a service token from ``POST /client/token`` and reuses it until 60 s before it
    expires. A 401 response makes it fetch a new token and repeat the call once. Timeouts,
    connection errors, 5xx and 429 responses are retried up to ``max_attempts`` times in all,
    honouring ``Retry-After`` up to ``max_retry_after`` seconds. Every POST sends the given
    ``Idempotency-Key``, the same one on each retry, so a retried POST changes nothing twice.
    """

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        timeout: float = 10.0,
        max_attempts: int = 3,
        max_retry_after: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"Invalid OrderMesh API base URL {base_url!r}: it must start with http:// or "
                "https://; set OMHOOKS_API_BASE_URL."
            )
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {max_attempts!r}.")

        self._client_id = client_id
        self._client_secret = client_secret
        self._max_attempts = max_attempts
        self._max_retry_after = max_retry_after
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), timeout=timeout, transport=transport
        )
        self._token_lock = threading.Lock()
        self._token: str | None = None
        self._token_expires_at = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> OrderMeshClient:
        """Create a client from the ``OMHOOKS_API_*`` settings."""
        return cls(
            settings.api_base_url,
            settings.api_client_id,
            settings.api_client_secret.get_secret_value(),
            timeout=settings.api_timeout_seconds,
        )

    def close(self) -> None:
        """Close the connection pool; the client cannot be used afterwards."""
        self._http.close()

    def __enter__(self) -> OrderMeshClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # Operations

    def get_order(self, order_id: str) -> Order:
        """Fetch an order with its items, ``refundedAmount`` included."""
        path = f"/orders/{_segment(order_id)}"
        body = self._call("GET", path)
        return _parse(Order, body, "GET", path)

    def list_shipments(self, order_id: str) -> list[Shipment]:
        """Fetch every shipment of an order."""
        path = f"/orders/{_segment(order_id)}/shipments"
        body = self._call("GET", path)
        return [_parse(Shipment, item, "GET", path) for item in _field(body, "shipments", list)]

    def create_shipment(
        self,
        order_id: str,
        vendor_id: str,
        item_ids: list[str],
        facility_id: str | None,
        *,
        idempotency_key: str,
    ) -> str:
        """Create a shipment of some items of one vendor and return its id."""
        payload: dict[str, Any] = {
            "orderId": order_id,
            "vendorId": vendor_id,
            "orderItemIds": list(item_ids),
        }
        if facility_id is not None:
            payload["facilityId"] = facility_id

        body = self._call("POST", "/shipments", payload, idempotency_key=idempotency_key)
        return str(_field(body, "shipmentId", str))

    def add_refund(self, order_id: str, lines: list[RefundLine], *, idempotency_key: str) -> str:
        """Request a refund of some items or of the shipping and return the refund's id."""
        path = f"/orders/{_segment(order_id)}/refunds"
        payload = {"orderId": order_id, "refunds": [line.to_api() for line in lines]}
        body = self._call("POST", path, payload, idempotency_key=idempotency_key)
        return str(_field(body, "refundId", str))

    def create_note(
        self,
        resource_id: str,
        text: str,
        *,
        resource_type: str = "Order",
        idempotency_key: str,
    ) -> str:
        """Attach a note to a resource, an order by default, and return the note's id."""
        payload = {"resourceType": resource_type, "resourceId": resource_id, "text": text}
        body = self._call("POST", "/notes", payload, idempotency_key=idempotency_key)
        return str(_field(body, "id", str))

    def create_packages(
        self,
        shipment_id: str,
        packages: Sequence[Package | Mapping[str, Any]],
        *,
        idempotency_key: str,
    ) -> list[str]:
        """Add packages to a shipment and return their ids, in the order given.

        A package is a ``Package`` or a mapping of its fields (``carrier``, ``trackingNumber``,
        ``weight``), in camelCase or snake_case.
        """
        path = f"/shipments/{_segment(shipment_id)}/packages"
        try:
            models = [Package.model_validate(package) for package in packages]
        except ValidationError as exc:
            raise ValueError(f"Invalid package for shipment {shipment_id!r}: {exc}") from exc

        payload = {"packages": [model.to_api() for model in models]}
        body = self._call("POST", path, payload, idempotency_key=idempotency_key)
        return [str(package_id) for package_id in _field(body, "packageIds", list)]

    def put_on_hold(self, order_id: str, reason: str, *, idempotency_key: str) -> Order:
        """Put an order on customer care hold and return the order as changed."""
        path = f"/orders/{_segment(order_id)}/customer-care-hold"
        body = self._call("POST", path, {"reason": reason}, idempotency_key=idempotency_key)
        return _parse(Order, body, "POST", path)

    def iter_orders(self, updated_since: datetime, *, page_size: int = 100) -> Iterator[Order]:
        """Yield the orders updated at or after ``updated_since``, oldest first, page by page.

        A naive ``updated_since`` is taken as UTC.
        """
        if updated_since.tzinfo is None:
            updated_since = updated_since.replace(tzinfo=UTC)
        params = {"updatedSince": updated_since.isoformat(), "pageSize": str(page_size)}

        while True:
            body = self._call("GET", "/orders", params=params)
            for order in _field(body, "orders", list):
                yield _parse(Order, order, "GET", "/orders")

            cursor = body.get("nextCursor")
            if not cursor:
                return
            params = {**params, "cursor": str(cursor)}

    # Authentication

    def _call(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None = None,
        *,
        params: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        token = self._current_token()
        headers["Authorization"] = f"Bearer {token}"
        response = self._send(method, path, payload, params, headers)

        if response.status_code == 401:
            logger.info(
                "The API rejected the token for %s %r, so a new one is fetched.", method, path
            )
            headers["Authorization"] = f"Bearer {self._renew_token(token)}"
            response = self._send(method, path, payload, params, headers)

        return _json_or_raise(response, method, path)

    def _current_token(self) -> str:
        with self._token_lock:
            if self._token is not None and time.monotonic() < self._token_expires_at:
                return self._token
            return self._fetch_token()

    def _renew_token(self, rejected: str) -> str:
        with self._token_lock:
            # Another thread may have renewed it since this one got its 401.
            if self._token is not None and self._token != rejected:
                return self._token
            return self._fetch_token()

    def _fetch_token(self) -> str:
        credentials = {"clientId": self._client_id, "clientSecret": self._client_secret}
        response = self._send("POST", "/client/token", credentials, None, {})
        body = _json_or_raise(response, "POST", "/client/token")

        token = str(_field(body, "accessToken", str))
        expires_in = float(_field(body, "expiresIn", (int, float, Decimal)))
        # A token shorter-lived than twice the margin is still used for half its life.
        margin = min(_TOKEN_MARGIN_SECONDS, expires_in / 2)
        self._token = token
        self._token_expires_at = time.monotonic() + expires_in - margin
        logger.debug("Fetched an API token valid for %r seconds.", expires_in)
        return token

    # Transport and retries

    def _send(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None,
        params: dict[str, str] | None,
        headers: dict[str, str],
    ) -> httpx.Response:
        for attempt in range(1, self._max_attempts + 1):
            last = attempt == self._max_attempts
            try:
                response = self._http.request(
                    method, path, json=payload, params=params, headers=headers
                )
            except httpx.RequestError as exc:
                if last:
                    raise ApiTransientError(
                        f"{method} {path} failed after {attempt} attempts: {exc!r}."
                    ) from exc
                logger.warning("Request %s %r failed with %r and is retried.", method, path, exc)
                time.sleep(_backoff(attempt))
                continue

            status = response.status_code
            if status < 500 and status not in _RETRYABLE_STATUSES:
                return response
            if last:
                return response
            delay = self._retry_delay(response, attempt, method, path)
            logger.warning(
                "Request %s %r returned %r and is retried in %r seconds.",
                method,
                path,
                status,
                delay,
            )
            time.sleep(delay)

        raise AssertionError("Internal error: _send ended without a response or an error.")

    def _retry_delay(self, response: httpx.Response, attempt: int, method: str, path: str) -> float:
        retry_after = _retry_after_seconds(response)
        if retry_after is None:
            return _backoff(attempt)
        if retry_after > self._max_retry_after:
            raise _error_from(response, method, path, ApiTransientError)
        return retry_after


def _segment(value: str) -> str:
    """Return an id quoted as one path segment, so an id from an event cannot change the path."""
    return quote(value, safe="")


def _backoff(attempt: int) -> float:
    return float(_BACKOFF_BASE_SECONDS * 2 ** (attempt - 1))


def _retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass

    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def _json_or_raise(response: httpx.Response, method: str, path: str) -> dict[str, Any]:
    status = response.status_code
    if 200 <= status < 300:
        try:
            body = response.json(parse_float=Decimal)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiTransientError(
                f"{method} {path} returned {status} with a body that is not JSON.", status=status
            ) from exc
        if not isinstance(body, dict):
            raise ApiPermanentError(
                f"{method} {path} returned {status} with JSON that is not an object.",
                status=status,
            )
        return body

    if status == 409:
        raise _error_from(response, method, path, ConflictError)
    if status >= 500 or status in _RETRYABLE_STATUSES:
        raise _error_from(response, method, path, ApiTransientError)
    raise _error_from(response, method, path, ApiPermanentError)


def _error_from(response: httpx.Response, method: str, path: str, kind: type[ApiError]) -> ApiError:
    code: str | None = None
    detail = ""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict):
        code = body.get("code") if isinstance(body.get("code"), str) else None
        detail = f": {body['message']}" if isinstance(body.get("message"), str) else ""

    status = response.status_code
    message = f"{method} {path} failed with {status} ({code or 'no error code'}){detail}"
    return kind(message, status=status, code=code)


def _field(body: Mapping[str, Any], name: str, kind: type[Any] | tuple[type[Any], ...]) -> Any:
    value = body.get(name)
    if not isinstance(value, kind):
        raise ApiPermanentError(f"The API response has a missing or invalid {name!r} field.")
    return value


def _parse(model: type[_Model], value: Any, method: str, path: str) -> _Model:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise ApiPermanentError(
            f"{method} {path} returned an invalid {model.__name__}: "
            f"{exc.error_count()} errors, first at {exc.errors()[0]['loc']!r}."
        ) from exc
