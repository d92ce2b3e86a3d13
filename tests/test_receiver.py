"""The receiver under a real uvicorn, with a real Redis: each answer it can give."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from redis import Redis
from starlette.types import ASGIApp, Receive, Scope, Send

from omhooks.errors import ConfigurationError
from omhooks.redis_server import LocalRedis
from omhooks.settings import Settings
from ordermesh.sandbox.testing import running_server
from ordermesh.signing import signed_headers
from receiver.app import create_app
from workers.queues import DISPATCH_QUEUE, body_key, queue_keys

ENDPOINT = "/webhooks/ordermesh"


def make_event(event_id: str = "evt_r1", **changes: Any) -> dict[str, Any]:
    event = {
        "id": event_id,
        "type": "order.created",
        "apiVersion": "2024-06-01",
        "createdAt": "2026-12-03T10:00:00.000Z",
        "merchantId": "mer_7Q2X9",
        "data": {"order": {"id": "ord_1", "status": "New", "items": []}},
    }
    event.update(changes)
    return event


def signed(
    secret: str, event: dict[str, Any], **header_changes: str
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event).encode()
    headers = signed_headers([secret], event["id"], body)
    headers.update(header_changes)
    return body, headers


def queued_bodies(redis: Redis, namespace: str) -> list[str]:
    """Return the bodies of the events on the dispatch queue, in queue order."""
    messages_key, list_key = queue_keys(namespace, DISPATCH_QUEUE)
    bodies = []
    for message_id in redis.lrange(list_key, 0, -1):
        message = json.loads(redis.hget(messages_key, message_id))
        event_id = message["args"][0]
        bodies.append(redis.get(body_key(namespace, event_id)))
    return bodies


@pytest.fixture
def settings(redis_url: str, namespace: str, secrets: dict[str, str]) -> Settings:
    return Settings(
        redis_url=redis_url,
        namespace=namespace,
        webhook_secrets=[secrets["current"], secrets["previous"]],
        max_body_bytes=4096,
        redis_durability="warn",
    )


@pytest.fixture
def receiver(settings: Settings) -> Iterator[httpx.Client]:
    with running_server(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        yield client


def test_valid_delivery_is_queued(receiver, secrets, redis_client, namespace):
    body, headers = signed(secrets["current"], make_event())

    response = receiver.post(ENDPOINT, content=body, headers=headers)

    assert response.status_code == 202
    assert response.json() == {"status": "queued", "id": "evt_r1"}
    assert queued_bodies(redis_client, namespace) == [body.decode()]


def test_dispatch_metadata_carries_what_dispatch_needs(receiver, secrets, redis_client, namespace):
    order = {
        "id": "ord_1",
        "createdAt": "2026-12-03T09:00:00.000Z",
        "updatedAt": "2026-12-03T10:00:00.000Z",
        "items": [{"id": "itm_1", "updatedAt": "2026-12-03T10:30:00.250Z"}],
    }
    body, headers = signed(secrets["current"], make_event(data={"order": order}))

    response = receiver.post(ENDPOINT, content=body, headers=headers)

    assert response.status_code == 202
    messages_key, list_key = queue_keys(namespace, DISPATCH_QUEUE)
    [message_id] = redis_client.lrange(list_key, 0, -1)
    meta = json.loads(redis_client.hget(messages_key, message_id))["args"][1]
    assert meta["type"] == "order.created"
    assert meta["order_id"] == "ord_1"
    assert meta["merchant_id"] == "mer_7Q2X9"
    assert meta["created_at"] == datetime(2026, 12, 3, 10, tzinfo=UTC).timestamp()
    changed = datetime(2026, 12, 3, 10, 30, 0, 250000, tzinfo=UTC)
    assert meta["changed_at_ms"] == int(changed.timestamp() * 1000)


def test_naive_created_at_of_year_one_is_queued(receiver, secrets, redis_client, namespace):
    body, headers = signed(secrets["current"], make_event(createdAt="0001-01-01T00:00:00"))

    response = receiver.post(ENDPOINT, content=body, headers=headers)

    assert response.status_code == 202
    assert queued_bodies(redis_client, namespace) == [body.decode()]


def test_delivery_signed_with_previous_secret_is_queued(receiver, secrets, redis_client, namespace):
    body, headers = signed(secrets["previous"], make_event())

    response = receiver.post(ENDPOINT, content=body, headers=headers)

    assert response.status_code == 202
    assert len(queued_bodies(redis_client, namespace)) == 1


def test_duplicate_delivery_is_queued_once(receiver, secrets, redis_client, namespace):
    body, headers = signed(secrets["current"], make_event())

    first = receiver.post(ENDPOINT, content=body, headers=headers)
    second = receiver.post(ENDPOINT, content=body, headers=headers)

    assert first.status_code == 202
    assert second.status_code == 200
    assert second.json()["status"] == "duplicate"
    assert len(queued_bodies(redis_client, namespace)) == 1


def test_unknown_type_and_fields_are_kept(receiver, secrets, redis_client, namespace):
    event = make_event(type="order.tagged", someFutureField={"nested": True})
    body, headers = signed(secrets["current"], event)

    response = receiver.post(ENDPOINT, content=body, headers=headers)

    assert response.status_code == 202
    queued = json.loads(queued_bodies(redis_client, namespace)[0])
    assert queued["type"] == "order.tagged"
    assert queued["someFutureField"] == {"nested": True}


@pytest.mark.parametrize(
    ("header_changes", "code"),
    [
        (
            {"webhook-signature": "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="},
            "invalid_signature",
        ),
        ({"webhook-signature": ""}, "missing_signature_headers"),
        ({"webhook-timestamp": "soon"}, "invalid_timestamp"),
        ({"webhook-timestamp": str(int(time.time()) - 3600)}, "timestamp_out_of_tolerance"),
        ({"webhook-timestamp": str(int(time.time()) + 3600)}, "timestamp_out_of_tolerance"),
    ],
)
def test_unauthenticated_delivery_is_rejected_with_401(
    receiver, secrets, redis_client, namespace, header_changes, code
):
    body, headers = signed(secrets["current"], make_event(), **header_changes)

    response = receiver.post(ENDPOINT, content=body, headers=headers)

    assert response.status_code == 401
    assert response.json()["code"] == code
    assert response.json()["message"]
    assert queued_bodies(redis_client, namespace) == []


def test_stale_timestamp_signed_correctly_is_rejected(receiver, secrets, redis_client, namespace):
    event = make_event()
    body = json.dumps(event).encode()
    headers = signed_headers(
        [secrets["current"]], event["id"], body, timestamp=int(time.time()) - 600
    )

    response = receiver.post(ENDPOINT, content=body, headers=headers)

    assert response.status_code == 401
    assert response.json()["code"] == "timestamp_out_of_tolerance"
    assert queued_bodies(redis_client, namespace) == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "malformed_json"),
        (b"[1, 2, 3]", "invalid_envelope"),
        (
            json.dumps({"id": "evt_r1", "createdAt": "2026-12-03T10:00:00Z"}).encode(),
            "invalid_envelope",
        ),
        (json.dumps(make_event(createdAt="yesterday")).encode(), "invalid_envelope"),
        (b"\xff\xfe{}", "invalid_utf8"),
    ],
)
def test_malformed_body_is_rejected_with_400(
    receiver, secrets, redis_client, namespace, body, code
):
    headers = signed_headers([secrets["current"]], "evt_r1", body)

    response = receiver.post(ENDPOINT, content=body, headers=headers)

    assert response.status_code == 400
    assert response.json()["code"] == code
    assert queued_bodies(redis_client, namespace) == []


def test_id_differing_from_webhook_id_is_rejected(receiver, secrets, redis_client, namespace):
    body = json.dumps(make_event("evt_other")).encode()
    headers = signed_headers([secrets["current"]], "evt_r1", body)

    response = receiver.post(ENDPOINT, content=body, headers=headers)

    assert response.status_code == 400
    assert response.json()["code"] == "id_mismatch"
    assert queued_bodies(redis_client, namespace) == []


def test_body_over_limit_is_rejected_with_413(receiver, secrets, redis_client, namespace):
    event = make_event(data={"padding": "x" * 5000})
    body, headers = signed(secrets["current"], event)

    response = receiver.post(ENDPOINT, content=body, headers=headers)

    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert queued_bodies(redis_client, namespace) == []


def test_chunked_body_over_limit_is_rejected_with_413(receiver, secrets, redis_client, namespace):
    event = make_event(data={"padding": "x" * 5000})
    body, headers = signed(secrets["current"], event)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    response = receiver.post(ENDPOINT, content=chunks(), headers=headers)

    assert "content-length" not in {name.lower() for name in response.request.headers}
    assert response.status_code == 413
    assert queued_bodies(redis_client, namespace) == []


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_wrong_content_type_is_rejected_with_415(receiver, secrets, content_type):
    body, headers = signed(secrets["current"], make_event(), **{"content-type": content_type})

    response = receiver.post(ENDPOINT, content=body, headers=headers)

    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


def test_charset_suffix_is_accepted(receiver, secrets):
    body, headers = signed(
        secrets["current"], make_event(), **{"content-type": "application/json; charset=utf-8"}
    )

    response = receiver.post(ENDPOINT, content=body, headers=headers)

    assert response.status_code == 202


def test_health_and_readiness_answer_200(receiver):
    assert receiver.get("/healthz").status_code == 200
    assert receiver.get("/readyz").status_code == 200


def test_unreachable_redis_gives_503_and_the_retry_is_queued(secrets, namespace):
    redis_server = LocalRedis().start()
    settings = Settings(
        redis_url=redis_server.url, namespace=namespace, webhook_secrets=[secrets["current"]]
    )
    body, headers = signed(secrets["current"], make_event())
    try:
        with running_server(create_app(settings)) as url, httpx.Client(base_url=url) as client:
            redis_server.halt()

            refused = client.post(ENDPOINT, content=body, headers=headers)
            not_ready = client.get("/readyz")
            redis_server.start()
            retried = client.post(ENDPOINT, content=body, headers=headers)
            queued = queued_bodies(
                Redis.from_url(redis_server.url, decode_responses=True), namespace
            )
    finally:
        redis_server.stop()

    assert refused.status_code == 503
    assert refused.json()["code"] == "queue_unavailable"
    assert refused.headers["retry-after"] == "5"
    assert not_ready.status_code == 503
    assert retried.status_code == 202
    assert queued == [body.decode()]


@pytest.mark.parametrize("timestamp", ["9" * 309, "9" * 5000, "²", "١٢٣", "1.5", "-5", "0x10"])
def test_odd_timestamp_is_rejected_with_401(receiver, secrets, timestamp):
    body, headers = signed(secrets["current"], make_event())
    raw_headers = [(name.encode(), value.encode()) for name, value in headers.items()]
    raw_headers = [(n, v) for n, v in raw_headers if n != b"webhook-timestamp"]
    raw_headers.append((b"webhook-timestamp", timestamp.encode("utf-8")))

    response = receiver.post(ENDPOINT, content=body, headers=raw_headers)

    assert response.status_code == 401
    assert response.json()["code"] in ("invalid_timestamp", "timestamp_out_of_tolerance")


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_get_405_with_allow(receiver, method):
    response = receiver.request(method, ENDPOINT)

    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["code"] == "method_not_allowed"


def test_unknown_path_gets_json_404_and_no_redirect(receiver):
    missing = receiver.get("/nothing-here")
    slashed = receiver.post(ENDPOINT + "/", headers={"host": "evil.example"})

    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"
    assert slashed.status_code == 404
    assert "location" not in slashed.headers


def test_metrics_count_answers_and_secret_use(receiver, secrets):
    body, headers = signed(secrets["previous"], make_event("evt_metrics"))
    receiver.post(ENDPOINT, content=body, headers=headers)
    bad, bad_headers = signed(
        secrets["current"], make_event("evt_bad"), **{"webhook-signature": "v1,x"}
    )
    receiver.post(ENDPOINT, content=bad, headers=bad_headers)

    text = receiver.get("/metrics").text

    assert 'omhooks_receiver_responses_total{code="queued",status="202"}' in text
    assert 'omhooks_receiver_verification_failures_total{reason="invalid_signature"}' in text
    assert 'omhooks_receiver_secret_last_verified_timestamp_seconds{secret="1"}' in text
    assert "omhooks_receiver_enqueue_seconds_count" in text
    assert secrets["previous"] not in text


@pytest.mark.parametrize(
    "secret", ['"whsec_b3JkZXJtZXNoLWZpeHR1cmUtc2VjcmV0LTAwMDE="', "plainsecret"]
)
def test_malformed_secret_stops_the_receiver(secret, redis_url, namespace):
    settings = Settings(redis_url=redis_url, namespace=namespace, webhook_secrets=[secret])

    with pytest.raises(ConfigurationError, match="not a valid whsec_ secret"):
        create_app(settings)


def test_secrets_command_shows_when_each_secret_last_verified(
    receiver, secrets, redis_url, namespace
):
    body, headers = signed(secrets["previous"], make_event("evt_rotation"))
    receiver.post(ENDPOINT, content=body, headers=headers)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OMHOOKS_")},
        "OMHOOKS_REDIS_URL": redis_url,
        "OMHOOKS_NAMESPACE": namespace,
        "OMHOOKS_WEBHOOK_SECRETS": f"{secrets['current']},{secrets['previous']}",
    }

    def listed() -> list[dict[str, Any]]:
        completed = subprocess.run(
            [sys.executable, "-m", "omhooks", "secrets", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        return json.loads(completed.stdout)

    deadline = time.monotonic() + 10
    rows = listed()
    while rows[1]["last_verified"] is None and time.monotonic() < deadline:
        rows = listed()

    assert [row["position"] for row in rows] == [0, 1]
    assert rows[0]["last_verified"] is None
    assert rows[1]["last_verified"] is not None
    assert secrets["previous"] not in json.dumps(rows)


class PassThroughMiddleware:
    """An ASGI middleware that changes nothing, so the app serves every request via Starlette."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def test_direct_and_starlette_paths_respond_alike(settings, secrets):
    routed_app = create_app(settings.model_copy(update={"namespace": f"{settings.namespace}:r"}))
    routed_app.add_middleware(PassThroughMiddleware)
    body, signed_with_text = signed(secrets["current"], make_event("evt_é1"))
    # The webhook-id header as a sender sends it: HTTP header values are decoded as Latin-1.
    headers: dict[str, str | bytes] = {
        **signed_with_text,
        "webhook-id": "evt_é1".encode("latin-1"),
    }
    wrong_signature = {
        **headers,
        "webhook-signature": "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    }
    malformed = b"{not json"
    second_body, second_signed = signed(secrets["current"], make_event("evt_r3"))
    second_headers = list(second_signed.items())
    third_body, third_signed = signed(secrets["current"], make_event("evt_r4"))
    third_headers = [item for item in third_signed.items() if item[0] != "content-type"]
    third_headers.append(("content-type", "application/json"))
    deliveries: list[tuple[str, bytes, Any]] = [
        ("queued", body, headers),
        ("duplicate", body, headers),
        ("invalid signature", body, wrong_signature),
        ("malformed", malformed, signed_headers([secrets["current"]], "evt_r2", malformed)),
        ("media type", body, {**headers, "content-type": "text/plain"}),
        # Of repeated headers, the first counts.
        ("first of two types", second_body, [*second_headers, ("content-type", "text/plain")]),
        ("text first", third_body, [("content-type", "text/plain"), *third_headers]),
    ]

    def responses(app: ASGIApp) -> list[tuple[int, str, str, bytes]]:
        with running_server(app) as url, httpx.Client(base_url=url) as client:
            answers = []
            for _, content, request_headers in deliveries:
                response = client.post(ENDPOINT, content=content, headers=request_headers)
                answers.append(
                    (
                        response.status_code,
                        response.headers["content-type"],
                        response.headers["content-length"],
                        response.content,
                    )
                )
            return answers

    direct = responses(create_app(settings))
    routed = responses(routed_app)

    for (name, _, _), direct_answer, routed_answer in zip(deliveries, direct, routed, strict=True):
        assert direct_answer == routed_answer, name
    assert [status for status, _, _, _ in direct] == [202, 200, 401, 400, 415, 202, 415]
    assert json.loads(direct[0][3]) == {"status": "queued", "id": "evt_é1"}
