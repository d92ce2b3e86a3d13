"""The receiver's own signature check agrees with the standardwebhooks package senders use."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from omhooks.errors import ConfigurationError, DeliveryRejected
from receiver.verification import SignatureVerifier

TIMESTAMP = 1764756000
EVENT_IDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=64)
# The receiver takes keys of 16 bytes or more, as Standard Webhooks secrets (24 to 64) are.
SECRET_KEYS = st.binary(min_size=16, max_size=64)


def whsec(key: bytes, *, padded: bool) -> str:
    encoded = base64.b64encode(key).decode()
    return "whsec_" + (encoded if padded else encoded.rstrip("="))


def library_headers(secret: str, event_id: str, body: bytes) -> dict[str, str]:
    moment = datetime.fromtimestamp(TIMESTAMP, tz=UTC)
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(TIMESTAMP),
        "webhook-signature": Webhook(secret).sign(event_id, moment, body),
    }


@given(body=st.binary(max_size=2048), event_id=EVENT_IDS, key=SECRET_KEYS, padded=st.booleans())
def test_library_signature_verifies(body, event_id, key, padded):
    secret = whsec(key, padded=padded)
    headers = library_headers(secret, event_id, body)

    verified = SignatureVerifier([secret]).verify(headers, body, now=TIMESTAMP)

    assert verified.event_id == event_id
    assert verified.secret_index == 0


@given(
    body=st.binary(min_size=1, max_size=2048),
    event_id=EVENT_IDS,
    key=SECRET_KEYS,
    position=st.integers(min_value=0),
)
def test_changed_body_is_rejected(body, event_id, key, position):
    secret = whsec(key, padded=True)
    headers = library_headers(secret, event_id, body)
    index = position % len(body)
    changed = body[:index] + bytes([body[index] ^ 1]) + body[index + 1 :]

    with pytest.raises(DeliveryRejected) as rejected:
        SignatureVerifier([secret]).verify(headers, changed, now=TIMESTAMP)

    assert rejected.value.code == "invalid_signature"


@given(event_id=EVENT_IDS, signing_key=SECRET_KEYS, other_key=SECRET_KEYS)
def test_signature_of_other_secret_is_rejected(event_id, signing_key, other_key):
    body = b'{"id": "evt_1"}'
    headers = library_headers(whsec(signing_key, padded=True), event_id, body)
    verifier = SignatureVerifier([whsec(other_key, padded=True)])

    if signing_key == other_key:
        assert verifier.verify(headers, body, now=TIMESTAMP).event_id == event_id
    else:
        with pytest.raises(DeliveryRejected):
            verifier.verify(headers, body, now=TIMESTAMP)


@pytest.mark.parametrize("secret", ["whsec_", "whsec_!!!!", "whsec_A"])
def test_invalid_secret_is_a_configuration_error(secret):
    with pytest.raises(ConfigurationError):
        SignatureVerifier([secret])
