"""JSON in and out of the sandbox: money as ``Decimal`` inside, JSON numbers outside."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

__all__ = [
    "ApiFailure",
    "dumps",
    "error_response",
    "format_time",
    "json_response",
    "read_json",
]


class ApiFailure(Exception):
    """An error response of the sandbox, sent as ``{"code", "message", "details"}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: list[Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.headers = headers or {}


def format_time(moment: datetime) -> str:
    """Format a time as the API does: ISO 8601 in UTC with milliseconds and a ``Z``."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    utc = moment.astimezone(UTC)
    return utc.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _encode(value: Any) -> Any:
    if isinstance(value, Decimal):
        # Integral amounts go out as integers so that 5 stays 5 rather than 5.0.
        if value == value.to_integral_value():
            return int(value)
        return float(value)
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, BaseModel):
        # Python mode keeps the Decimals of extra fields, which JSON mode would turn into strings.
        return value.model_dump(mode="python", by_alias=True, exclude_none=True)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable.")


def dumps(value: Any) -> bytes:
    """Encode a value as JSON, with models in the API's shape and money as numbers."""
    return json.dumps(value, default=_encode, ensure_ascii=False).encode("utf-8")


def json_response(status: int, payload: Any, *, headers: dict[str, str] | None = None) -> Response:
    """Return a JSON response of any payload that ``dumps`` encodes."""
    return Response(
        dumps(payload), status_code=status, media_type="application/json", headers=headers
    )


def error_response(failure: ApiFailure) -> Response:
    """Return the contract's error body for a failure."""
    body = {"code": failure.code, "message": failure.message, "details": failure.details}
    return json_response(failure.status, body, headers=failure.headers)


async def read_json(request: Request) -> Any:
    """Read a request body as JSON with every non-integer number as ``Decimal``.

    Raises ApiFailure with status 400 when the body is empty or not JSON.
    """
    raw = await request.body()
    if not raw.strip():
        raise ApiFailure(400, "invalid_json", "The request body is empty; send a JSON object.")
    try:
        return json.loads(raw, parse_float=Decimal)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        message = f"The request body is not valid JSON: {exc}."
        raise ApiFailure(400, "invalid_json", message) from exc
