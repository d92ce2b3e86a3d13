"""When each configured secret last verified a delivery, kept in Redis for ``omhooks secrets``.

Secrets are named by a fingerprint, the first 12 hex digits of their SHA-256, which stays the
same when a rotation reorders them and reveals nothing of a random secret. Each receiver
process writes a secret's time at most once a minute, off the request's path.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time

from redis import Redis as SyncRedis
from redis import RedisError
from redis.asyncio import Redis

from omhooks.settings import Settings

from .accounts import load_account_secrets
from .metrics import record_secret_use

__all__ = ["SecretUse", "configured_secrets", "fingerprint", "last_verified"]

logger = logging.getLogger(__name__)

_WRITE_INTERVAL_SECONDS = 60.0


def fingerprint(secret: str) -> str:
    """Return the name under which a secret's use is recorded."""
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


def configured_secrets(settings: Settings) -> dict[str, list[str]]:
    """Return the fingerprints of the secrets of each source: "default" and each account."""
    sources = {"default": [fingerprint(secret) for secret in settings.secret_values()]}
    accounts = load_account_secrets(settings.accounts.get_secret_value())
    for name, secrets in accounts.items():
        sources[name] = [fingerprint(secret) for secret in secrets]
    return sources


def _key(namespace: str) -> str:
    return f"{namespace}:secrets:last_verified"


class SecretUse:
    """Record, now and then, which secret verified a delivery."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._key = _key(settings.namespace)
        self._sources = configured_secrets(settings)
        self._written: dict[tuple[str, int], float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def record(self, source: str | None, index: int) -> None:
        """Record that secret ``index`` of ``source`` (None: the default) verified a delivery.

        The metric of this process is set every time, and Redis at most once a minute.
        """
        record_secret_use(index, source)
        name = source or "default"
        now = time.time()
        if now - self._written.get((name, index), 0.0) < _WRITE_INTERVAL_SECONDS:
            return
        fingerprints = self._sources.get(name, [])
        if index >= len(fingerprints):
            return
        self._written[name, index] = now
        task = asyncio.get_running_loop().create_task(self._write(fingerprints[index], now))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, secret_fingerprint: str, moment: float) -> None:
        try:
            await self._redis.hset(self._key, secret_fingerprint, moment)
        except RedisError as exc:
            logger.warning("Could not record when a secret was last used: %s", exc)


def last_verified(redis: SyncRedis, namespace: str) -> dict[str, float]:
    """Return, by fingerprint, when each secret last verified a delivery."""
    raw = redis.hgetall(_key(namespace))
    return {str(name): float(value) for name, value in raw.items()}
