"""The receiver's strict JSON parser, against an oracle built on the json module."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omhooks.errors import DeliveryRejected
from ordermesh.events import Event, ValidationError
from receiver.parsing import MAX_DEPTH, parse_json


class _Rejected(Exception):
    pass


def _pairs_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise _Rejected("duplicate_keys")
    return dict(pairs)


def _not_a_constant(name: str) -> Any:
    raise _Rejected("malformed_json")


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(item) for item in value), default=0)
    return 0


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any(0xD800 <= ord(char) <= 0xDFFF for char in value)
    if isinstance(value, dict):
        return any(_has_surrogate(key) or _has_surrogate(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_surrogate(item) for item in value)
    return False


def oracle(body: bytes) -> Any:
    """Parse as the json module does with every check added; raise ``_Rejected`` otherwise."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _Rejected("invalid_utf8") from None
    try:
        value = json.loads(
            text, object_pairs_hook=_pairs_without_duplicates, parse_constant=_not_a_constant
        )
    except RecursionError:
        raise _Rejected("too_deep") from None
    except ValueError:
        raise _Rejected("malformed_json") from None
    if _depth(value) > MAX_DEPTH:
        raise _Rejected("too_deep")
    return value


def rejection_code(body: bytes) -> str:
    with pytest.raises(DeliveryRejected) as caught:
        parse_json(body)
    assert caught.value.status == 400
    return caught.value.code


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(value=JSON_VALUES, ensure_ascii=st.booleans())
def test_parser_returns_dumped_value(value: Any, ensure_ascii: bool) -> None:
    body = json.dumps(value, ensure_ascii=ensure_ascii).encode()

    assert parse_json(body) == value


# Text near JSON, so that many cases are valid and the rest fail in varied ways.
_FRAGMENTS = [
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b'"',
    b"\\",
    b'"a"',
    b'"b"',
    b"1",
    b"-0",
    b"1e400",
    b"NaN",
    b"Infinity",
    b"true",
    b"null",
    b" ",
    b"\xff",
    b"\xc3\xa9",
    b"\\ud800",
    b"\\u00e9",
    b"\xef\xbb\xbf",
    b'"\\ud83d\\ude00"',
    b"\x01",
]


@settings(max_examples=2000, suppress_health_check=[HealthCheck.too_slow])
@given(parts=st.lists(st.sampled_from(_FRAGMENTS), max_size=16))
def test_parser_agrees_with_oracle(parts: list[bytes]) -> None:
    body = b"".join(parts)
    try:
        expected = oracle(body)
    except _Rejected as exc:
        assert rejection_code(body) == exc.args[0]
        return
    if _has_surrogate(expected):
        # Escapes of lone surrogates pass the json module but not pydantic.
        assert rejection_code(body) == "malformed_json"
        return
    assert parse_json(body) == expected


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b'{"a": 1, "a": 1}', "duplicate_keys"),
        (b'{"a": [{"b": {"c": 1, "c": 2}}]}', "duplicate_keys"),
        (b'{"a": NaN}', "malformed_json"),
        (b'{"a": -Infinity}', "malformed_json"),
        (b"\xef\xbb\xbf{}", "malformed_json"),
        (b'{"a": "\xff"}', "invalid_utf8"),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "too_deep"),
        # Depth is checked before syntax, as the body can be too deep to parse.
        (b"[" * 5000, "too_deep"),
        (b"1" * 5000, "malformed_json"),
        (b"", "malformed_json"),
        (b'{"a": 1} {}', "malformed_json"),
    ],
)
def test_parser_rejection_reasons(body: bytes, code: str) -> None:
    assert rejection_code(body) == code


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"\xef\xbb\xbf{}", "byte order mark"),
        (b'{"a": NaN}', "NaN, which is not a JSON number"),
        (b'{"a": -Infinity}', "-Infinity, which is not a JSON number"),
        (b'{"a": ' + b"1" * 5000 + b"}", "integer of more than 4300 digits"),
        (b'{"a": "\\ud800"}', "unpaired UTF-16 surrogate"),
        (b'{"a": 1,}', "at line 1 column 9"),
    ],
)
def test_parser_rejection_messages(body: bytes, words: str) -> None:
    with pytest.raises(DeliveryRejected) as caught:
        parse_json(body)

    assert caught.value.code == "malformed_json"
    assert words in caught.value.message


def test_parser_names_duplicate_key() -> None:
    with pytest.raises(DeliveryRejected) as caught:
        parse_json(b'{"amount": 1, "amount": 2}')

    assert "'amount'" in caught.value.message


def test_nesting_ignores_string_brackets() -> None:
    deep = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    # Brackets inside strings, after escaped quotes and multi-byte characters, are text.
    text = b'"\\"[[[\xc3\xa9' + b"[" * 100 + b'"'
    body = b"[" * (MAX_DEPTH - 1) + text + b"]" * (MAX_DEPTH - 1)

    assert _depth(parse_json(deep)) == MAX_DEPTH
    assert _depth(parse_json(body)) == MAX_DEPTH - 1


def test_parser_rejects_lone_surrogates() -> None:
    # The workers validate events with pydantic, which rejects them too.
    body = (
        b'{"id": "evt_1", "type": "order.created", "created_at": "2026-01-01T00:00:00Z",'
        b' "data": {"note": "\\ud800"}}'
    )

    with pytest.raises(ValidationError):
        Event.model_validate_json(body)
    assert rejection_code(body) == "malformed_json"
