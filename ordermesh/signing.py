"""Standard Webhooks signatures, as OrderMesh computes them, for senders (the sandbox, the CLI)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

__all__ = ["sign", "signed_headers"]


def sign(secret: str, event_id: str, timestamp: int, body: bytes) -> str:
    """Return the ``v1,<base64>`` signature of a body for one ``whsec_`` secret."""
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return Webhook(secret).sign(msg_id=event_id, timestamp=moment, data=body)


def signed_headers(
    secrets: list[str], event_id: str, body: bytes, *, timestamp: int | None = None
) -> dict[str, str]:
    """Return the headers of a delivery signed with every given secret (several during rotation)."""
    when = int(time.time()) if timestamp is None else timestamp
    signatures = " ".join(sign(secret, event_id, when, body) for secret in secrets)
    return {
        "content-type": "application/json",
        "webhook-id": event_id,
        "webhook-timestamp": str(when),
        "webhook-signature": signatures,
        "user-agent": "OrderMesh-Webhooks/1.0",
    }
