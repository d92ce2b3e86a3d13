"""Parse a JSON body strictly: UTF-8, no duplicate keys, no NaN or Infinity, bounded nesting.

Duplicate keys are rejected because two parsers may keep different copies of a duplicated key,
so what the receiver checked could differ from what a handler reads.

Bodies are parsed by jiter, the parser that pydantic-core is built on and the workers use when
they validate an event, so the receiver and the workers agree on what is JSON. pydantic has no
option to reject duplicate keys, so the receiver calls jiter itself. When jiter rejects a body,
the ``json`` module, with hooks for each check, finds the reason again for the response. jiter
is the stricter of the two: it also rejects escapes of lone UTF-16 surrogates (``"\\ud800"``),
which ``json`` accepts and pydantic does not.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import jiter

from omhooks.errors import DeliveryRejected

__all__ = ["MAX_DEPTH", "parse_json"]

# The deepest nesting of arrays and objects accepted. OrderMesh's envelopes nest about 6 deep.
MAX_DEPTH = 64

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_NOT_BRACKETS = re.compile(rb"[^\[\]{}]+")


class _DuplicateKeyError(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class _ConstantError(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def parse_json(body: bytes) -> Any:
    """Return the parsed body, or raise ``DeliveryRejected`` 400 with the reason."""
    if _nesting_depth_exceeds(body, MAX_DEPTH):
        raise _rejection(body, parser_error=None)
    try:
        # Only object keys are cached: values, such as ids, rarely repeat.
        return jiter.from_json(
            body, allow_inf_nan=False, catch_duplicate_keys=True, cache_mode="keys"
        )
    except ValueError as exc:
        raise _rejection(body, parser_error=str(exc)) from None


def _rejection(body: bytes, parser_error: str | None) -> DeliveryRejected:
    """Return the error for a body that ``parse_json`` rejected, naming the first check failed.

    ``parser_error`` is jiter's message, which names the error and its line and column.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return DeliveryRejected(400, "invalid_utf8", "The body is not valid UTF-8.")
    if _nesting_depth_exceeds(body, MAX_DEPTH):
        return _too_deep()
    if text.startswith("\ufeff"):
        return _malformed("The body starts with a byte order mark; send the JSON without it.")
    try:
        _DECODER.decode(text)
    except _DuplicateKeyError as exc:
        return DeliveryRejected(
            400, "duplicate_keys", f"The body has the key {exc.key[:64]!r} twice in one object."
        )
    except _ConstantError as exc:
        return _malformed(f"The body has {exc.name}, which is not a JSON number.")
    except RecursionError:
        return _too_deep()
    except json.JSONDecodeError:
        pass
    except ValueError:
        # Python refuses to convert longer integers, since the conversion time grows with the
        # square of the length.
        limit = sys.get_int_max_str_digits()
        return _malformed(f"The body has an integer of more than {limit} digits.")
    else:
        # The json module accepts escapes of lone surrogates, which jiter rejects.
        if _SURROGATE_ESCAPE.search(text):
            return _malformed(
                "The body has an escape of an unpaired UTF-16 surrogate (\\ud800 to \\udfff)."
            )
    if parser_error is None:
        return _malformed("The body is not valid JSON.")
    return _malformed(f"The body is not valid JSON: {parser_error}.")


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
    raise _ConstantError(name)


def _nesting_depth_exceeds(body: bytes, max_depth: int) -> bool:
    """Return True if arrays and objects nest deeper than ``max_depth`` in the JSON ``body``."""
    # Fast path: nesting cannot be deeper than the number of opening brackets.
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return False
    # Neither quotes nor backslashes occur inside UTF-8 sequences of other characters, so the
    # strings can be found in the bytes.
    brackets = _NOT_BRACKETS.sub(b"", _STRING.sub(b"", body))
    depth = 0
    for bracket in brackets:
        if bracket in b"[{":
            depth += 1
            if depth > max_depth:
                return True
        else:
            depth -= 1
    return False


# One decoder for every body, because json.loads with these options builds one per call.
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_reject_constant)


def _malformed(message: str) -> DeliveryRejected:
    return DeliveryRejected(400, "malformed_json", message)


def _too_deep() -> DeliveryRejected:
    return DeliveryRejected(
        400, "too_deep", f"The body nests arrays and objects deeper than {MAX_DEPTH} levels."
    )
