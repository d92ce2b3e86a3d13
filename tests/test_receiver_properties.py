"""Properties of the receiver under random deliveries, against a real uvicorn and Redis.

Each example posts one delivery with random headers and a random body, signed correctly or not,
to the plain endpoint or to the legacy one. Two properties must hold after every example:
the answer is one that README's table documents, and the receiver queued an event exactly for
each 202 it answered, so nothing unauthenticated is queued.
"""

from __future__ import annotations

import gzip
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from redis import Redis

from omhooks.settings import Settings
from ordermesh.sandbox.testing import running_server
from ordermesh.signing import signed_headers
from receiver.app import create_app

README = Path(__file__).parent.parent / "README.md"
LEGACY_TOKEN = "property-token-0123456789abcdefghijkl"
MAX_BODY_BYTES = 4096


def documented_answers() -> set[tuple[int, str]]:
    """Return the (status, code) pairs of README's response table; 2xx pairs carry the status."""
    text = README.read_text(encoding="utf-8")
    table = text.split("| status | code | when |", 1)[1].split("\n\n", 1)[0]
    answers = set()
    for row in table.splitlines()[2:]:
        status_cell, code_cell = row.split("|")[1:3]
        codes = re.findall(r"`([a-z][a-z0-9_]*)`", code_cell) + re.findall(
            r'"status": "(\w+)"', code_cell
        )
        answers.update((int(status_cell), code) for code in codes)
    return answers


DOCUMENTED = documented_answers()

# Header values h11 accepts: visible ASCII, spaces inside only.
header_text = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=80
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
envelopes = st.fixed_dictionaries(
    {
        "id": st.from_regex(r"evt_[a-z0-9]{1,12}", fullmatch=True),
        "type": st.sampled_from(["order.created", "order.updated", "order.tagged"]),
        "createdAt": st.sampled_from(["2026-12-03T10:00:00.000Z"] * 3 + ["yesterday"]),
        "data": st.dictionaries(st.sampled_from(["order", "item", "note"]), json_values),
    }
)
# Repeating a short pattern makes bodies past MAX_BODY_BYTES without a large example buffer.
large_bodies = st.builds(
    lambda pattern, size: (pattern * size)[:size],
    st.binary(min_size=1, max_size=8),
    st.integers(min_value=MAX_BODY_BYTES - 16, max_value=4 * MAX_BODY_BYTES),
)
bodies = st.one_of(
    st.binary(max_size=512),
    json_values.map(lambda value: json.dumps(value).encode()),
    envelopes.map(lambda event: json.dumps(event).encode()),
    envelopes.map(lambda event: json.dumps(event).encode()),
    large_bodies,
)
optional_header = st.none() | header_text


@st.composite
def deliveries(draw: st.DrawFn, secret: str) -> tuple[str, bytes, dict[str, str]]:
    """Draw a path, a body as sent, and headers, some of them signed with ``secret``."""
    body = draw(bodies)

    # Lists repeat some choices to draw them more often.
    path = draw(
        st.sampled_from(
            [
                "/webhooks/ordermesh",
                "/webhooks/ordermesh",
                "/webhooks/ordermesh",
                f"/hooks/legacy/{LEGACY_TOKEN}?orderid=1234",
                f"/hooks/legacy/{LEGACY_TOKEN}?orderid=1234",
                f"/hooks/legacy/{LEGACY_TOKEN}",
                "/hooks/legacy/not-the-token?orderid=1234",
                "/webhooks/ordermesh/no-such-account",
            ]
        )
    )

    headers: dict[str, str] = {"content-type": "application/json"}
    if draw(st.booleans()):
        event_id = _event_id_of(body) or draw(header_text)
        timestamp = int(time.time()) + draw(st.sampled_from([0, 0, 0, -3600, 3600]))
        headers.update(signed_headers([secret], event_id, body, timestamp=timestamp))
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature", "content-type"):
        if draw(st.sampled_from([False, False, False, True])):
            value = draw(optional_header)
            if value is None:
                headers.pop(name, None)
            else:
                headers[name] = value

    encodings = [None, None, None, None, "gzip", "gzip", "identity", "br", "x-gzip"]
    if draw(st.sampled_from([False] * 7 + [True])):
        encodings.append(draw(header_text))
    encoding = draw(st.sampled_from(encodings))
    if encoding is not None:
        headers["content-encoding"] = encoding
        if encoding in ("gzip", "x-gzip") and draw(st.booleans()):
            body = gzip.compress(body)
    return path, body, headers


def _event_id_of(body: bytes) -> str | None:
    try:
        parsed: Any = json.loads(body)
    except (ValueError, RecursionError):
        return None
    event_id = parsed.get("id") if isinstance(parsed, dict) else None
    return event_id if isinstance(event_id, str) else None


@pytest.fixture
def receiver(redis_url: str, namespace: str, secrets: dict[str, str]) -> Iterator[httpx.Client]:
    config = Settings(
        redis_url=redis_url,
        namespace=namespace,
        webhook_secrets=[secrets["current"]],
        legacy_token=LEGACY_TOKEN,
        max_body_bytes=MAX_BODY_BYTES,
        redis_durability="warn",
    )
    with running_server(create_app(config)) as url, httpx.Client(base_url=url) as client:
        yield client


def test_readme_table_is_parsed():
    assert (202, "queued") in DOCUMENTED
    assert (200, "duplicate") in DOCUMENTED
    assert (400, "invalid_utf8") in DOCUMENTED
    assert (401, "invalid_signature") in DOCUMENTED
    assert (503, "queue_unavailable") in DOCUMENTED


def test_random_deliveries_keep_properties(
    receiver: httpx.Client, redis_client: Redis, namespace: str, secrets: dict[str, str]
):
    accepted = 0

    @settings(
        max_examples=150,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(delivery=deliveries(secrets["current"]))
    def check(delivery: tuple[str, bytes, dict[str, str]]) -> None:
        nonlocal accepted
        path, body, headers = delivery

        response = receiver.post(path, content=body, headers=headers)

        answer = response.json()
        key = (response.status_code, answer.get("code", answer.get("status")))
        event(f"{key[0]} {key[1]}")
        assert key in DOCUMENTED, f"undocumented answer {key} to {path} with {headers}"
        if response.status_code == 202:
            accepted += 1
        assert redis_client.llen(f"{namespace}:dispatch") == accepted
        assert len(redis_client.keys(f"{namespace}:seen:*")) == accepted

    check()
