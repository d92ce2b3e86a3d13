"""Check that Redis keeps what the receiver accepts: an answered ``2xx`` must survive a restart."""

from __future__ import annotations

import logging

from redis import RedisError
from redis.asyncio import Redis

from omhooks.errors import ConfigurationError

__all__ = ["check_durability", "durability_problems"]

logger = logging.getLogger(__name__)


async def durability_problems(redis: Redis) -> list[str]:
    """Return what makes Redis lose accepted events on a restart or under memory pressure."""
    persistence = await redis.info("persistence")
    memory = await redis.info("memory")
    problems = []
    if int(persistence.get("aof_enabled", 0)) != 1:
        problems.append(
            "the append-only file is off (set appendonly yes): a restart loses queued events"
        )
    policy = memory.get("maxmemory_policy", "noeviction")
    if policy != "noeviction":
        problems.append(
            f"maxmemory-policy is {policy!r} (set noeviction): Redis may evict queued events"
        )
    return problems


async def check_durability(redis: Redis, *, required: bool) -> None:
    """Raise ``ConfigurationError`` (or, unless ``required``, log an error) if Redis is unsafe."""
    try:
        problems = await durability_problems(redis)
    except RedisError as exc:
        logger.warning("Could not check how Redis persists events: %s", exc)
        return
    if not problems:
        return

    text = "; ".join(problems)
    if required:
        raise ConfigurationError(
            f"Redis would lose accepted events: {text}. See deploy/redis.conf, or set "
            "OMHOOKS_REDIS_DURABILITY=warn to run anyway (never in production)."
        )
    logger.error("Redis would lose accepted events: %s. Running anyway, as configured.", text)
