"""Standard Webhooks signature and timestamp checks on the raw body of a delivery."""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import re
import time
from collections.abc import Mapping
from typing import NamedTuple

from omhooks.errors import ConfigurationError, DeliveryRejected

__all__ = ["SignatureVerifier", "Verified"]

logger = logging.getLogger(__name__)

_MAX_ID_LENGTH = 255
# The start of a version 1 entry of webhook-signature, followed by the base64 signature.
_V1_PREFIX = "v1,"
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
# Standard Webhooks secrets carry 24 to 64 random bytes; fewer than 16 is no secret at all.
_MIN_KEY_BYTES = 16
_SECRET_PREFIX = "whsec_"


class Verified(NamedTuple):
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

    def __init__(
        self,
        secrets: list[str],
        *,
        tolerance_seconds: int = 300,
        source: str = "OMHOOKS_WEBHOOK_SECRETS",
    ) -> None:
        if not secrets:
            raise ConfigurationError(
                f"No webhook secret is configured: set {source} to the endpoint "
                "secret (whsec_...) shown by OrderMesh."
            )
        try:
            # An HMAC keyed once per secret, copied for each delivery: a copy costs less
            # than keying a new HMAC.
            self._macs = [hmac.new(_secret_key(secret), digestmod="sha256") for secret in secrets]
        except ValueError as exc:
            raise ConfigurationError(
                f"A webhook secret in {source} is not a valid whsec_ secret "
                f"(base64 of at least {_MIN_KEY_BYTES} bytes after the prefix, no quotes): {exc}"
            ) from exc
        self._tolerance = tolerance_seconds

    def verify(
        self, headers: Mapping[str, str], body: bytes, *, now: float | None = None
    ) -> Verified:
        """Return what verified the delivery, or raise ``DeliveryRejected`` with status 401."""
        event_id, timestamp, signatures = self._read_headers(headers)
        self._check_timestamp(timestamp, time.time() if now is None else now)

        offered = [
            entry.removeprefix(_V1_PREFIX).encode()
            for entry in signatures.split(" ")
            if entry.startswith(_V1_PREFIX)
        ]
        signed_prefix = f"{event_id}.{timestamp}.".encode()
        for index, keyed_mac in enumerate(self._macs):
            mac = keyed_mac.copy()
            mac.update(signed_prefix)
            # The body as received, byte for byte: the sender signed these bytes.
            mac.update(body)
            expected = binascii.b2a_base64(mac.digest(), newline=False)
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
        if not (event_id.strip() and raw_timestamp.strip() and signatures.strip()):
            missing = [
                name
                for name, value in (
                    ("webhook-id", event_id),
                    ("webhook-timestamp", raw_timestamp),
                    ("webhook-signature", signatures),
                )
                if not value.strip()
            ]
            raise DeliveryRejected(
                401, "missing_signature_headers", f"Missing header(s): {', '.join(missing)}."
            )
        if len(event_id) > _MAX_ID_LENGTH:
            raise DeliveryRejected(
                401, "invalid_webhook_id", f"webhook-id is longer than {_MAX_ID_LENGTH} characters."
            )
        if _TIMESTAMP.fullmatch(raw_timestamp.strip()) is None:
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
        # Padding is added back, since b64decode needs it; any other character is an error,
        # so a quoted or truncated secret is caught here instead of failing every delivery.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError("The secret is not base64.") from exc
    if len(key) < _MIN_KEY_BYTES:
        raise ValueError(f"The secret decodes to fewer than {_MIN_KEY_BYTES} bytes.")
    return key
