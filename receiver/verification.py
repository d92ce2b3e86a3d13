"""Standard Webhooks signature and timestamp checks on the raw body of a delivery."""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from omhooks.errors import ConfigurationError, DeliveryRejected

__all__ = ["SignatureVerifier", "Verified"]

logger = logging.getLogger(__name__)

_MAX_ID_LENGTH = 255
_SIGNATURE_VERSION = "v1"
_SECRET_PREFIX = "whsec_"


@dataclass(frozen=True)
class Verified:
    """A delivery whose signature matched: its id, timestamp and which secret verified it."""

    event_id: str
    timestamp: int
    secret_index: int


class SignatureVerifier:
    """Check ``webhook-signature`` against every configured secret, in constant time.

    Any ``v1`` entry matching any secret verifies the delivery, so a rotation works while the
    sender signs with both the old and the new secret. Entries of other versions are ignored.
    A ``v1`` signature is the base64 HMAC-SHA256, keyed with the secret, of
    ``<webhook-id>.<webhook-timestamp>.<body>`` (the Standard Webhooks specification).
    """

    def __init__(self, secrets: list[str], *, tolerance_seconds: int = 300) -> None:
        if not secrets:
            raise ConfigurationError(
                "No webhook secret is configured: set OMHOOKS_WEBHOOK_SECRETS to the endpoint "
                "secret (whsec_...) shown by OrderMesh."
            )
        try:
            self._keys = [_secret_key(secret) for secret in secrets]
        except ValueError as exc:
            raise ConfigurationError(
                "A webhook secret in OMHOOKS_WEBHOOK_SECRETS is not a valid whsec_ secret "
                "(base64 after the prefix)."
            ) from exc
        self._tolerance = tolerance_seconds

    def verify(
        self, headers: Mapping[str, str], body: bytes, *, now: float | None = None
    ) -> Verified:
        """Return what verified the delivery, or raise ``DeliveryRejected`` with status 401."""
        event_id, timestamp, signatures = self._read_headers(headers)
        self._check_timestamp(timestamp, time.time() if now is None else now)

        offered = [
            entry[3:].encode()
            for entry in signatures.split(" ")
            if entry.startswith(_SIGNATURE_VERSION + ",")
        ]
        # The body as received, byte for byte: the sender signed these bytes.
        signed_content = f"{event_id}.{timestamp}.".encode() + body
        for index, key in enumerate(self._keys):
            expected = base64.b64encode(hmac.digest(key, signed_content, "sha256"))
            # Every offered entry is compared, so the time taken does not depend on which matched.
            matches = [hmac.compare_digest(expected, candidate) for candidate in offered]
            if any(matches):
                return Verified(event_id, timestamp, index)

        raise DeliveryRejected(
            401, "invalid_signature", "No webhook-signature entry matches a configured secret."
        )

    def _read_headers(self, headers: Mapping[str, str]) -> tuple[str, int, str]:
        event_id = headers.get("webhook-id", "")
        raw_timestamp = headers.get("webhook-timestamp", "")
        signatures = headers.get("webhook-signature", "")
        missing = [
            name
            for name, value in (
                ("webhook-id", event_id),
                ("webhook-timestamp", raw_timestamp),
                ("webhook-signature", signatures),
            )
            if not value.strip()
        ]
        if missing:
            raise DeliveryRejected(
                401, "missing_signature_headers", f"Missing header(s): {', '.join(missing)}."
            )
        if len(event_id) > _MAX_ID_LENGTH:
            raise DeliveryRejected(
                401, "invalid_webhook_id", f"webhook-id is longer than {_MAX_ID_LENGTH} characters."
            )
        if not raw_timestamp.strip().isdigit():
            raise DeliveryRejected(
                401, "invalid_timestamp", "webhook-timestamp must be an integer of Unix seconds."
            )
        return event_id, int(raw_timestamp), signatures

    def _check_timestamp(self, timestamp: int, now: float) -> None:
        if abs(now - timestamp) > self._tolerance:
            raise DeliveryRejected(
                401,
                "timestamp_out_of_tolerance",
                f"webhook-timestamp is more than {self._tolerance} seconds from the receiver's "
                "clock; check the sender's and this machine's clocks.",
            )


def _secret_key(secret: str) -> bytes:
    """Return the HMAC key of a ``whsec_`` secret: the base64 after the prefix, decoded.

    Raises ``ValueError`` for text that is not base64 or decodes to nothing. Padding is
    optional, as in the standardwebhooks package that senders sign with.
    """
    encoded = secret.removeprefix(_SECRET_PREFIX)
    try:
        # b64decode ignores "=" past the padding it needs, so unpadded secrets decode too.
        key = base64.b64decode(encoded + "==")
    except binascii.Error as exc:
        raise ValueError("The secret is not base64.") from exc
    if not key:
        raise ValueError("The secret is empty.")
    return key
