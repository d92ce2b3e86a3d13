"""Calls to the merchant's own services, with failures sorted into retried and permanent ones."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from handlers import HandlerContext, PermanentError, TransientError

__all__ = ["ServiceSettings", "post_json"]

DEFAULT_TIMEOUT_SECONDS = 10.0
# Statuses after which the same request may succeed later: timeouts, rate limits, early data.
_RETRYABLE_STATUSES = frozenset({408, 425, 429})


@dataclass(frozen=True)
class ServiceSettings:
    """The URL, token and timeout of a handler's service, from the handler's plugin settings."""

    url: str
    token: str | None
    timeout_seconds: float

    @classmethod
    def from_context(cls, ctx: HandlerContext) -> ServiceSettings:
        """Read ``url``, ``token`` and ``timeout_seconds`` from ``ctx.plugin_settings``.

        Raises ``PermanentError`` when the URL is missing or a value is invalid, because a
        retry with the same settings fails the same way.
        """
        configured = ctx.plugin_settings
        prefix = ctx.handler.settings_prefix
        url = configured.get("url", "").rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise PermanentError(f"{prefix}URL must be an http:// or https:// URL.")
        try:
            timeout = float(configured.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS))
        except ValueError:
            raise PermanentError(f"{prefix}TIMEOUT_SECONDS must be a number of seconds.") from None
        return cls(url=url, token=configured.get("token") or None, timeout_seconds=timeout)


def post_json(
    service: ServiceSettings, path: str, payload: dict[str, Any], *, idempotency_key: str
) -> dict[str, Any]:
    """POST a JSON object to the service and return the JSON object of its response.

    Raises ``TransientError`` for a transport error, a 5xx, 408, 425 or 429 (the run is
    retried) and ``PermanentError`` for any other status of 400 or more.
    """
    headers = {"Idempotency-Key": idempotency_key}
    if service.token:
        headers["Authorization"] = f"Bearer {service.token}"
    try:
        response = httpx.post(
            f"{service.url}{path}", json=payload, headers=headers, timeout=service.timeout_seconds
        )
    except httpx.TransportError as exc:
        raise TransientError(f"POST {path} failed: {type(exc).__name__}: {exc}") from exc

    # The response body stays out of the message: the message is logged and kept in dead
    # letters, and a body may repeat the customer's data.
    status = response.status_code
    if status >= 500 or status in _RETRYABLE_STATUSES:
        raise TransientError(f"POST {path} failed with status {status}.")
    if status >= 400:
        raise PermanentError(f"POST {path} was rejected with status {status}.")
    return _json_object(response)


def _json_object(response: httpx.Response) -> dict[str, Any]:
    if not response.content:
        return {}
    try:
        parsed = response.json()
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {"answer": parsed}
