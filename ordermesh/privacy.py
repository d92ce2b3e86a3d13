"""Hide the personal data of OrderMesh objects before anything is printed or logged."""

from __future__ import annotations

from typing import Any

__all__ = ["HIDDEN", "redact"]

HIDDEN = "[hidden]"

# Keys whose values are personal data wherever they appear, and keys of whole objects that are.
_PERSONAL_KEYS = frozenset(
    {
        "email",
        "phone",
        "firstname",
        "lastname",
        "line1",
        "line2",
        "city",
        "postalcode",
        "state",
    }
)
_PERSONAL_OBJECT_SUFFIXES = ("address",)


def redact(value: Any) -> Any:
    """Return a copy of a JSON value with addresses, names, emails and phones hidden."""
    if isinstance(value, list):
        return [redact(item) for item in value]
    if not isinstance(value, dict):
        return value

    hidden: dict[str, Any] = {}
    for key, item in value.items():
        lowered = key.lower()
        if lowered.endswith(_PERSONAL_OBJECT_SUFFIXES) or lowered in _PERSONAL_KEYS:
            hidden[key] = HIDDEN
        else:
            hidden[key] = redact(item)
    return hidden
