"""Redis clients from the settings: a plain URL, or a master found through Redis Sentinel."""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel

from .settings import Settings

__all__ = ["async_redis", "sync_redis"]


def sync_redis(settings: Settings, **options: Any) -> redis.Redis:
    """Return a client of the service's Redis; ``options`` go to the connection pool."""
    if not settings.redis_sentinels:
        return redis.Redis.from_url(settings.effective_redis_url, **options)
    sentinel = redis.sentinel.Sentinel(_sentinel_addresses(settings), **_timeouts(options))
    master = sentinel.master_for(
        settings.redis_sentinel_master, **_url_options(settings), **options
    )
    return cast(redis.Redis, master)


def async_redis(settings: Settings, **options: Any) -> redis.asyncio.Redis:
    """Return an asyncio client of the service's Redis; ``options`` go to the connection pool."""
    if not settings.redis_sentinels:
        return redis.asyncio.Redis.from_url(settings.effective_redis_url, **options)
    sentinel = redis.asyncio.sentinel.Sentinel(_sentinel_addresses(settings), **_timeouts(options))
    master = sentinel.master_for(
        settings.redis_sentinel_master, **_url_options(settings), **options
    )
    return cast(redis.asyncio.Redis, master)


def _sentinel_addresses(settings: Settings) -> list[tuple[str, int]]:
    addresses = []
    for entry in settings.redis_sentinels:
        host, _, port = entry.rpartition(":")
        addresses.append((host or entry, int(port) if port.isdigit() else 26379))
    return addresses


def _timeouts(options: dict[str, Any]) -> dict[str, Any]:
    return {key: options[key] for key in ("socket_timeout",) if key in options}


def _url_options(settings: Settings) -> dict[str, Any]:
    """Return the database and password given in the Redis URL, which apply to the master."""
    if not settings.redis_url:
        return {}
    parts = urlsplit(settings.redis_url)
    found: dict[str, Any] = {}
    if parts.password:
        found["password"] = unquote(parts.password)
    if parts.username:
        found["username"] = unquote(parts.username)
    database = parts.path.lstrip("/")
    if database.isdigit():
        found["db"] = int(database)
    return found
