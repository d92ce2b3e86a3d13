"""Stored responses of POST requests by ``Idempotency-Key``, kept for 24 hours."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .responses import ApiFailure

__all__ = ["IDEMPOTENCY_TTL_SECONDS", "IdempotencyStore", "StoredResponse", "fingerprint"]

IDEMPOTENCY_TTL_SECONDS = 24 * 3600


@dataclass(frozen=True)
class StoredResponse:
    """The first response given to one idempotency key, and what the request was."""

    fingerprint: str
    status: int
    body: bytes
    stored_at: float


def _canonical(value: Any) -> Any:
    if isinstance(value, Decimal):
        # 0.3 and 0.30 are the same amount, so they must give the same fingerprint.
        return format(value.normalize(), "f")
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable.")


def fingerprint(method: str, path: str, body: Any) -> str:
    """Return a digest of a request that ignores key order and trailing zeros of amounts."""
    canonical = json.dumps([method, path, body], default=_canonical, sort_keys=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class IdempotencyStore:
    """Responses by idempotency key; not thread-safe, so callers hold the sandbox's lock."""

    def __init__(self, ttl_seconds: float = IDEMPOTENCY_TTL_SECONDS) -> None:
        self._ttl_seconds = ttl_seconds
        self._responses: dict[str, StoredResponse] = {}

    def lookup(self, key: str, request_fingerprint: str) -> StoredResponse | None:
        """Return the stored response of a key, or None if the key is new or expired.

        Raises ApiFailure with status 422 when the key was used for a different request.
        """
        self._drop_expired()
        stored = self._responses.get(key)
        if stored is None:
            return None
        if stored.fingerprint != request_fingerprint:
            raise ApiFailure(
                422,
                "idempotency_key_reused",
                f"The Idempotency-Key {key!r} was already used for a different request; "
                "send a new key for a new request.",
            )
        return stored

    def store(self, key: str, request_fingerprint: str, status: int, body: bytes) -> None:
        """Store the response given to the first request with this key."""
        self._responses[key] = StoredResponse(request_fingerprint, status, body, time.monotonic())

    def clear(self) -> None:
        """Forget every stored response."""
        self._responses.clear()

    def _drop_expired(self) -> None:
        oldest = time.monotonic() - self._ttl_seconds
        expired = [key for key, stored in self._responses.items() if stored.stored_at < oldest]
        for key in expired:
            del self._responses[key]
