"""Parse a JSON body strictly: UTF-8, no duplicate keys, no NaN or Infinity, bounded nesting.

Duplicate keys are rejected because two parsers may keep different copies of a duplicated key,
so what the receiver checked could differ from what a handler reads.
"""

from __future__ import annotations

import json
import re
from typing import Any

from omhooks.errors import DeliveryRejected

__all__ = ["MAX_DEPTH", "parse_json"]

# The deepest nesting of arrays and objects accepted. OrderMesh's envelopes nest about 6 deep.
MAX_DEPTH = 64

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")


class _DuplicateKeyError(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def parse_json(body: bytes) -> Any:
    """Return the parsed body, or raise ``DeliveryRejected`` 400 with the reason."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DeliveryRejected(400, "invalid_utf8", "The body is not valid UTF-8.") from exc
    if _nesting_depth_exceeds(text, MAX_DEPTH):
        raise _too_deep()
    try:
        # json.loads(text) rejects a byte order mark before it decodes, but _DECODER does not.
        if text.startswith("\ufeff"):
            raise ValueError("The JSON text starts with a byte order mark.")
        return _DECODER.decode(text)
    except _DuplicateKeyError as exc:
        raise DeliveryRejected(
            400, "duplicate_keys", f"The body has the key {exc.key[:64]!r} twice in one object."
        ) from exc
    except RecursionError as exc:
        raise _too_deep() from exc
    except ValueError as exc:  # json.JSONDecodeError, or an integer of over 4300 digits
        raise DeliveryRejected(400, "malformed_json", "The body is not valid JSON.") from exc


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKeyError(key)
            seen.add(key)
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON.")


def _nesting_depth_exceeds(text: str, max_depth: int) -> bool:
    """Return True if arrays and objects nest deeper than ``max_depth`` in JSON ``text``."""
    # Fast path: nesting cannot be deeper than the number of opening brackets.
    if text.count("[") + text.count("{") <= max_depth:
        return False
    brackets = _NOT_BRACKETS.sub("", _STRING.sub("", text))
    depth = 0
    for bracket in brackets:
        if bracket in "[{":
            depth += 1
            if depth > max_depth:
                return True
        else:
            depth -= 1
    return False


# One decoder for every body, because json.loads with these options builds one per call.
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_reject_constant)


def _too_deep() -> DeliveryRejected:
    return DeliveryRejected(
        400, "too_deep", f"The body nests arrays and objects deeper than {MAX_DEPTH} levels."
    )
