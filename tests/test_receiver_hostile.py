"""The receiver under a real uvicorn against hostile input: slow, compressed or odd bodies."""

from __future__ import annotations

import gzip
import json
import logging
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_client import REGISTRY
from test_receiver import PassThroughMiddleware, make_event, queued_bodies, signed

from omhooks.settings import Settings
from ordermesh.sandbox.testing import running_server
from ordermesh.signing import signed_headers
from receiver.app import create_app

ENDPOINT = "/webhooks/ordermesh"
BODY_TIMEOUT_SECONDS = 2.0
# Long enough for any response of a loopback server on a loaded machine.
SOCKET_TIMEOUT_SECONDS = 30.0


@pytest.fixture
def settings(redis_url: str, namespace: str, secrets: dict[str, str]) -> Settings:
    return Settings(
        redis_url=redis_url,
        namespace=namespace,
        webhook_secrets=[secrets["current"]],
        max_body_bytes=4096,
        body_timeout_seconds=BODY_TIMEOUT_SECONDS,
        redis_durability="warn",
    )


@pytest.fixture
def server_url(settings: Settings) -> Iterator[str]:
    with running_server(create_app(settings)) as url:
        yield url


@pytest.fixture
def receiver(server_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server_url) as client:
        yield client


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 response with a Content-Length from a blocking socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"The connection closed before a whole response: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(status_line.split(" ")[1]), headers, body[:length]


def test_stalled_body_gets_408_while_others_are_served(server_url, receiver, secrets):
    address = urlsplit(server_url)
    stalled_body, stalled_headers = signed(secrets["current"], make_event("evt_stalled"))
    head = [f"POST {ENDPOINT} HTTP/1.1", f"Host: {address.netloc}"]
    head += [f"{name}: {value}" for name, value in stalled_headers.items()]
    head.append(f"Content-Length: {len(stalled_body)}")
    request_head = ("\r\n".join(head) + "\r\n\r\n").encode()
    body, headers = signed(secrets["current"], make_event("evt_meanwhile"))

    with socket.create_connection((address.hostname, address.port)) as sock:
        sock.settimeout(SOCKET_TIMEOUT_SECONDS)
        started = time.monotonic()
        sock.sendall(request_head + stalled_body[:10])
        meanwhile = receiver.post(ENDPOINT, content=body, headers=headers)
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.recv(1)
        sock.setblocking(True)
        sock.settimeout(SOCKET_TIMEOUT_SECONDS)
        status, _, response_body = read_response(sock)
        waited = time.monotonic() - started

    assert meanwhile.status_code == 202
    assert status == 408
    assert json.loads(response_body)["code"] == "body_timeout"
    assert waited >= BODY_TIMEOUT_SECONDS


@pytest.mark.parametrize("through_starlette", [False, True], ids=["direct", "starlette"])
def test_client_gone_mid_body_counts_as_499(
    settings, secrets, redis_client, namespace, through_starlette, caplog
):
    app = create_app(settings)
    if through_starlette:
        app.add_middleware(PassThroughMiddleware)
    labels = {"status": "499", "code": "client_disconnected"}
    errors = {"status": "500", "code": "internal_error"}
    before = REGISTRY.get_sample_value("omhooks_receiver_responses_total", labels) or 0.0
    errors_before = REGISTRY.get_sample_value("omhooks_receiver_responses_total", errors) or 0.0
    body, headers = signed(secrets["current"], make_event("evt_gone"))

    with running_server(app) as url:
        address = urlsplit(url)
        head = [f"POST {ENDPOINT} HTTP/1.1", f"Host: {address.netloc}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        head.append(f"Content-Length: {len(body)}")
        with socket.create_connection((address.hostname, address.port)) as sock:
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body[:100])
        deadline = time.monotonic() + SOCKET_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            after = REGISTRY.get_sample_value("omhooks_receiver_responses_total", labels) or 0.0
            if after > before:
                break
            time.sleep(0.05)

    assert after == before + 1
    errors_after = REGISTRY.get_sample_value("omhooks_receiver_responses_total", errors) or 0.0
    assert errors_after == errors_before
    # The test's Redis keeps no append-only file, which the durability check logs as an error.
    logged_errors = [
        record
        for record in caplog.records
        if record.levelno >= logging.ERROR and record.name != "receiver.durability"
    ]
    assert logged_errors == []
    assert queued_bodies(redis_client, namespace) == []


def test_stalled_body_is_not_queued(server_url, secrets, redis_client, namespace):
    address = urlsplit(server_url)
    body, headers = signed(secrets["current"], make_event("evt_stalled"))
    head = [f"POST {ENDPOINT} HTTP/1.1", f"Host: {address.netloc}"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    head.append(f"Content-Length: {len(body)}")

    with socket.create_connection((address.hostname, address.port)) as sock:
        sock.settimeout(SOCKET_TIMEOUT_SECONDS)
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body[:-1])
        status, _, _ = read_response(sock)

    assert status == 408
    assert queued_bodies(redis_client, namespace) == []


def test_gzip_body_is_verified_decoded_and_queued(receiver, secrets, redis_client, namespace):
    body, headers = signed(secrets["current"], make_event())
    headers["content-encoding"] = "gzip"

    response = receiver.post(ENDPOINT, content=gzip.compress(body), headers=headers)

    assert response.status_code == 202
    assert queued_bodies(redis_client, namespace) == [body.decode()]


def test_gzip_of_several_members_is_decoded_whole(receiver, secrets, redis_client, namespace):
    body, headers = signed(secrets["current"], make_event())
    headers["content-encoding"] = "gzip"
    compressed = gzip.compress(body[:20]) + gzip.compress(body[20:])

    response = receiver.post(ENDPOINT, content=compressed, headers=headers)

    assert response.status_code == 202
    assert queued_bodies(redis_client, namespace) == [body.decode()]


def test_gzip_signed_over_compressed_bytes_is_rejected(receiver, secrets, redis_client, namespace):
    body = json.dumps(make_event()).encode()
    compressed = gzip.compress(body)
    headers = signed_headers([secrets["current"]], "evt_r1", compressed)
    headers["content-encoding"] = "gzip"

    response = receiver.post(ENDPOINT, content=compressed, headers=headers)

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_signature"
    assert queued_bodies(redis_client, namespace) == []


def test_gzip_bomb_is_rejected_with_413(receiver, secrets, redis_client, namespace):
    # One million spaces compress to about 1 KB, under the 4096-byte limit of the body as
    # received, so only the limit on the decoded size stops it.
    bomb = gzip.compress(b" " * 1_000_000)
    headers = signed_headers([secrets["current"]], "evt_r1", b"{}")
    headers["content-encoding"] = "gzip"

    response = receiver.post(ENDPOINT, content=bomb, headers=headers)

    assert len(bomb) < 4096
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert queued_bodies(redis_client, namespace) == []


@pytest.mark.parametrize("encoding", ["br", "deflate", "gzip, gzip", "compress"])
def test_unknown_content_encoding_is_rejected_with_415(receiver, secrets, encoding):
    body, headers = signed(secrets["current"], make_event())
    headers["content-encoding"] = encoding

    response = receiver.post(ENDPOINT, content=body, headers=headers)

    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_content_encoding"


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"{}", id="not-gzip"),
        pytest.param(gzip.compress(b"{}")[:-4], id="truncated"),
        pytest.param(gzip.compress(b"{}") + b"trailing", id="trailing-bytes"),
        pytest.param(b"", id="empty"),
    ],
)
def test_invalid_gzip_is_rejected_with_400(receiver, secrets, redis_client, namespace, content):
    headers = signed_headers([secrets["current"]], "evt_r1", b"{}")
    headers["content-encoding"] = "gzip"

    response = receiver.post(ENDPOINT, content=content, headers=headers)

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_encoding"
    assert queued_bodies(redis_client, namespace) == []


def event_text(data: str) -> bytes:
    """Return an envelope of id evt_r1 whose data is the given JSON text, as is."""
    envelope = json.dumps(make_event(data={}))
    return envelope.replace('"data": {}', f'"data": {data}').encode()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            event_text("{}").replace(b'"id": "evt_r1"', b'"id": "evt_r1", "id": "evt_r1"'),
            id="top-level",
        ),
        pytest.param(event_text('{"order": {"id": "ord_1", "id": "ord_2"}}'), id="nested"),
        pytest.param(event_text('{"a": [{"b": 1, "b": 1}]}'), id="in-array"),
    ],
)
def test_duplicate_keys_are_rejected_with_400(receiver, secrets, redis_client, namespace, body):
    headers = signed_headers([secrets["current"]], "evt_r1", body)

    response = receiver.post(ENDPOINT, content=body, headers=headers)

    assert response.status_code == 400
    assert response.json()["code"] == "duplicate_keys"
    assert queued_bodies(redis_client, namespace) == []


@pytest.mark.parametrize(
    "data",
    [
        # The envelope is the first level, so 64 more make 65 in all.
        pytest.param("[" * 64 + "]" * 64, id="65-levels"),
        pytest.param('{"a":' * 64 + "1" + "}" * 64, id="65-levels-of-objects"),
        pytest.param("[" * 1000, id="1000-levels-unclosed"),
    ],
)
def test_deep_nesting_is_rejected_with_400(receiver, secrets, redis_client, namespace, data):
    body = event_text(data)
    headers = signed_headers([secrets["current"]], "evt_r1", body)

    response = receiver.post(ENDPOINT, content=body, headers=headers)

    assert response.status_code == 400
    assert response.json()["code"] == "too_deep"
    assert queued_bodies(redis_client, namespace) == []


@pytest.mark.parametrize(
    "data",
    [
        pytest.param('{"a": ' + "[" * 62 + "]" * 62 + "}", id="64-levels"),
        pytest.param('{"note": "' + "[{" * 100 + '"}', id="brackets-in-a-string"),
    ],
)
def test_nesting_within_limit_is_queued(receiver, secrets, redis_client, namespace, data):
    body = event_text(data)
    headers = signed_headers([secrets["current"]], "evt_r1", body)

    response = receiver.post(ENDPOINT, content=body, headers=headers)

    assert response.status_code == 202
    assert queued_bodies(redis_client, namespace) == [body.decode()]


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_constants_are_rejected_as_malformed(receiver, secrets, constant):
    body = event_text(f'{{"amount": {constant}}}')
    headers = signed_headers([secrets["current"]], "evt_r1", body)

    response = receiver.post(ENDPOINT, content=body, headers=headers)

    assert response.status_code == 400
    assert response.json()["code"] == "malformed_json"
