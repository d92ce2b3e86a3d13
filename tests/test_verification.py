"""Signature checks: the fixture vectors, rotation, tolerance, and the header rules."""

from __future__ import annotations

import httpx
import pytest
from conftest import load_fixture

from omhooks.errors import ConfigurationError, DeliveryRejected
from omhooks.settings import Settings
from ordermesh.sandbox.testing import running_server
from receiver.app import create_app
from receiver.verification import SignatureVerifier

VECTORS = load_fixture("signature-vectors.json")
CONFIGURED = VECTORS["configuredSecrets"]
TEN_YEARS_SECONDS = 10 * 365 * 24 * 3600


def vector_headers(vector: dict) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "webhook-id": vector["id"],
        "webhook-timestamp": str(vector["timestamp"]),
        "webhook-signature": vector["signature"],
    }


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda vector: vector["name"])
def test_signature_vector_gives_expected_result(vector):
    verifier = SignatureVerifier(CONFIGURED)
    body = vector["body"].encode()

    if vector["valid"]:
        verified = verifier.verify(vector_headers(vector), body, now=vector["timestamp"])
        assert verified.event_id == vector["id"]
    else:
        with pytest.raises(DeliveryRejected) as rejected:
            verifier.verify(vector_headers(vector), body, now=vector["timestamp"])
        assert rejected.value.status == 401


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda vector: vector["name"])
def test_signature_vector_through_receiver(vector, redis_url, namespace):
    # The vectors were signed long ago, so this receiver's tolerance spans years.
    settings = Settings(
        redis_url=redis_url,
        namespace=namespace,
        webhook_secrets=CONFIGURED,
        timestamp_tolerance_seconds=TEN_YEARS_SECONDS,
        redis_durability="warn",
    )

    with running_server(create_app(settings)) as url:
        response = httpx.post(
            f"{url}/webhooks/ordermesh",
            content=vector["body"].encode(),
            headers=vector_headers(vector),
        )

    assert response.status_code == (202 if vector["valid"] else 401)


def test_rotation_accepts_either_secret(secrets):
    vector = VECTORS["vectors"][2]  # signed only with the previous secret
    body = vector["body"].encode()
    rotating = SignatureVerifier([secrets["current"], secrets["previous"]])

    verified = rotating.verify(vector_headers(vector), body, now=vector["timestamp"])

    assert vector["name"] == "only a secret we no longer have"
    assert verified.secret_index == 1


@pytest.mark.parametrize(
    ("offset", "accepted"), [(300, True), (-300, True), (301, False), (-301, False)]
)
def test_timestamp_tolerance_is_inclusive(offset, accepted):
    vector = VECTORS["vectors"][0]
    verifier = SignatureVerifier(CONFIGURED, tolerance_seconds=300)
    now = vector["timestamp"] + offset

    if accepted:
        assert verifier.verify(vector_headers(vector), vector["body"].encode(), now=now)
    else:
        with pytest.raises(DeliveryRejected) as rejected:
            verifier.verify(vector_headers(vector), vector["body"].encode(), now=now)
        assert rejected.value.code == "timestamp_out_of_tolerance"


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_is_named(missing):
    vector = VECTORS["vectors"][0]
    headers = vector_headers(vector)
    del headers[missing]

    with pytest.raises(DeliveryRejected) as rejected:
        SignatureVerifier(CONFIGURED).verify(
            headers, vector["body"].encode(), now=vector["timestamp"]
        )

    assert rejected.value.code == "missing_signature_headers"
    assert missing in rejected.value.message


def test_no_secret_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="OMHOOKS_WEBHOOK_SECRETS"):
        SignatureVerifier([])


def test_rejection_message_shows_no_secret(secrets):
    vector = VECTORS["vectors"][2]

    with pytest.raises(DeliveryRejected) as rejected:
        SignatureVerifier(CONFIGURED).verify(
            vector_headers(vector), vector["body"].encode(), now=vector["timestamp"]
        )

    for secret in (*CONFIGURED, secrets["previous"]):
        assert secret not in rejected.value.message
        assert secret.removeprefix("whsec_") not in rejected.value.message
