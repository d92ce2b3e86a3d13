"""Checks of request bodies; each raises a 422 ApiFailure with one detail per invalid field."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from .responses import ApiFailure

__all__ = [
    "invalid",
    "pydantic_details",
    "require_amount",
    "require_object",
    "require_string_list",
    "require_strings",
]


def invalid(details: list[dict[str, Any]]) -> ApiFailure:
    """Return the 422 failure of a request body with the given field details."""
    fields = ", ".join(str(detail["field"]) for detail in details)
    return ApiFailure(
        422, "validation_error", f"The request body has invalid fields: {fields}.", details=details
    )


def require_object(body: Any) -> dict[str, Any]:
    """Return the body if it is a JSON object; raise a 422 ApiFailure otherwise."""
    if not isinstance(body, dict):
        raise ApiFailure(422, "validation_error", "The request body must be a JSON object.")
    return body


def require_strings(
    body: dict[str, Any], required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> None:
    """Raise a 422 ApiFailure unless each required field is a non-empty string.

    Optional fields may be missing or null, but when present they must be strings too.
    """
    details: list[dict[str, Any]] = []
    for name in required:
        value = body.get(name)
        if value is None:
            details.append({"field": name, "message": "Field required."})
        elif not isinstance(value, str) or not value:
            details.append({"field": name, "message": "Must be a non-empty string."})
    for name in optional:
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            details.append({"field": name, "message": "Must be a string or null."})
    if details:
        raise invalid(details)


def require_string_list(body: dict[str, Any], name: str) -> list[str]:
    """Return a field that must be a non-empty list of distinct non-empty strings."""
    value = body.get(name)
    if value is None:
        raise invalid([{"field": name, "message": "Field required."}])
    if not isinstance(value, list) or not value:
        raise invalid([{"field": name, "message": "Must be a non-empty list."}])
    if not all(isinstance(entry, str) and entry for entry in value):
        raise invalid([{"field": name, "message": "Every entry must be a non-empty string."}])
    if len(set(value)) != len(value):
        raise invalid([{"field": name, "message": "Entries must not repeat."}])
    return list(value)


def require_amount(value: Any, field: str) -> Decimal:
    """Return a JSON number greater than zero as a ``Decimal``; raise a 422 ApiFailure otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise invalid([{"field": field, "message": "Must be a JSON number."}])
    amount = Decimal(value)
    if not amount.is_finite() or amount <= 0:
        raise invalid([{"field": field, "message": "Must be greater than 0."}])
    return amount


def pydantic_details(error: ValidationError, prefix: str = "") -> list[dict[str, Any]]:
    """Convert a pydantic error into the contract's details, one per invalid field."""
    details = []
    for entry in error.errors():
        path = ".".join(str(part) for part in entry["loc"])
        details.append({"field": prefix + path, "message": entry["msg"]})
    return details
