"""Prometheus metrics of the receiver, served on its own ``/metrics``.

Each uvicorn process counts its own deliveries; run one process per container (scale with
more containers) so that each scrape sees a whole process. Labels carry status codes, error
codes and secret positions, never a secret, an event id or anything from a body.
"""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response

__all__ = [
    "ACCOUNT_SECRET_LAST_VERIFIED",
    "DUPLICATE_RESPONSES",
    "ENQUEUE_SECONDS",
    "QUEUED_RESPONSES",
    "RESPONSES",
    "SECRET_LAST_VERIFIED",
    "VERIFICATION_FAILURES",
    "metrics",
    "record_secret_use",
]

RESPONSES = Counter(
    "omhooks_receiver_responses",
    "Answers to deliveries, by HTTP status and code (queued, duplicate or the error code).",
    ["status", "code"],
)
# The children of RESPONSES that nearly every delivery counts, looked up once.
QUEUED_RESPONSES = RESPONSES.labels("202", "queued")
DUPLICATE_RESPONSES = RESPONSES.labels("200", "duplicate")
VERIFICATION_FAILURES = Counter(
    "omhooks_receiver_verification_failures",
    "Deliveries refused as unauthenticated, by reason.",
    ["reason"],
)
ENQUEUE_SECONDS = Histogram(
    "omhooks_receiver_enqueue_seconds",
    "Time from a verified delivery to Redis confirming it was queued (or seen before).",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
SECRET_LAST_VERIFIED = Gauge(
    "omhooks_receiver_secret_last_verified_timestamp_seconds",
    "When each configured secret, by its position in OMHOOKS_WEBHOOK_SECRETS, last verified "
    "a delivery: after a rotation, the old secret can go once its time stops moving.",
    ["secret"],
)


ACCOUNT_SECRET_LAST_VERIFIED = Gauge(
    "omhooks_receiver_account_secret_last_verified_timestamp_seconds",
    "When each secret of an account of OMHOOKS_ACCOUNTS, by account name and position in its "
    "secrets, last verified a delivery.",
    ["account", "secret"],
)


# The gauges of record_secret_use by account (None for the default secrets) and position. It
# stays small, with one entry per configured secret that verified a delivery.
_secret_gauges: dict[tuple[str | None, int], Gauge] = {}


def record_secret_use(index: int, account: str | None = None) -> None:
    """Record that the secret at this position (of ``account``, if given) verified a delivery."""
    gauge = _secret_gauges.get((account, index))
    if gauge is None:
        if account is None:
            gauge = SECRET_LAST_VERIFIED.labels(str(index))
        else:
            gauge = ACCOUNT_SECRET_LAST_VERIFIED.labels(account, str(index))
        _secret_gauges[account, index] = gauge
    gauge.set(time.time())


async def metrics(request: Request) -> Response:
    """Serve the receiver's metrics in Prometheus's text format."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
