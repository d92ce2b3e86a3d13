"""The receiver against its OpenAPI description, with schemathesis, on uvicorn and Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from redis import Redis
from schemathesis.specs.openapi.checks import positive_data_acceptance

from omhooks.settings import Settings
from ordermesh.sandbox.testing import running_server
from receiver.app import create_app
from receiver.openapi import OPENAPI_SCHEMA

LEGACY_TOKEN = "openapi-token-0123456789abcdefghijklmn"

schema = schemathesis.openapi.from_dict(OPENAPI_SCHEMA)


@pytest.fixture(scope="module")
def receiver_url(redis_url: str, secrets: dict[str, str]) -> Iterator[str]:
    """A receiver shared by the module's tests, with the legacy route on and its own keys."""
    namespace = f"omhooks-test-{uuid.uuid4().hex[:12]}"
    config = Settings(
        redis_url=redis_url,
        namespace=namespace,
        webhook_secrets=[secrets["current"]],
        accounts='{"shop-eu": {"secrets": ["whsec_c2hvcC1ldS1lbmRwb2ludC1zZWNyZXQtMDAwMQ=="]}}',
        legacy_token=LEGACY_TOKEN,
        max_body_bytes=4096,
        redis_durability="warn",
    )
    with running_server(create_app(config)) as url:
        yield url

    client = Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def test_openapi_json_is_served(receiver_url):
    response = httpx.get(f"{receiver_url}/openapi.json")

    assert response.status_code == 200
    assert response.json() == OPENAPI_SCHEMA


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_receiver_conforms_to_openapi(case, receiver_url):
    # Random deliveries are unsigned, so the receiver rejects even a valid body with 401.
    case.call_and_validate(base_url=receiver_url, excluded_checks=[positive_data_acceptance])
