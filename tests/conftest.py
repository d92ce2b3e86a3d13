"""Shared fixtures: a real Redis (found or started), a namespace per test, the fixture data."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from omhooks.redis_server import LocalRedis, redis_answers
from omhooks.stack import LocalStack, StackConfig

FIXTURES = Path(__file__).parent / "fixtures"
MACHINE_REDIS_URL = "redis://127.0.0.1:6379/15"


def load_fixture(name: str) -> Any:
    """Return a JSON file of tests/fixtures."""
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A running Redis: OMHOOKS_TEST_REDIS_URL, else the machine's on port 6379, else a new one."""
    configured = os.environ.get("OMHOOKS_TEST_REDIS_URL")
    if configured:
        yield configured
    elif redis_answers(MACHINE_REDIS_URL):
        yield MACHINE_REDIS_URL
    else:
        with LocalRedis() as server:
            yield server.url


@pytest.fixture
def namespace(redis_url: str) -> Iterator[str]:
    """A key prefix of this test alone; its keys are deleted afterwards."""
    name = f"omhooks-test-{uuid.uuid4().hex[:12]}"
    yield name
    client = Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{name}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[Redis]:
    """A client of the test Redis."""
    client = Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="session")
def secrets() -> dict[str, str]:
    """The current and previous endpoint secrets of the fixtures."""
    data: dict[str, str] = load_fixture("secrets.json")
    return data


FAST_RETRIES = {
    "OMHOOKS_RETRY_MAX_RETRIES": "2",
    "OMHOOKS_RETRY_MIN_BACKOFF_SECONDS": "0.05",
    "OMHOOKS_RETRY_MAX_BACKOFF_SECONDS": "0.2",
    # The machine's Redis keeps nothing on disk; the durability check has its own tests.
    "OMHOOKS_REDIS_DURABILITY": "warn",
}


def start_stack(redis_url: str, namespace: str, secret: str, **env: str) -> LocalStack:
    """Start the sandbox, a receiver and a worker that retry fast, for one test."""
    config = StackConfig(
        redis_url=redis_url,
        webhook_secrets=[secret],
        namespace=namespace,
        env={**FAST_RETRIES, **env},
    )
    return LocalStack(config).__enter__()


@pytest.fixture
def stack(redis_url: str, namespace: str, secrets: dict[str, str]) -> Iterator[LocalStack]:
    """The whole service as real processes, with the built-in handlers."""
    running = start_stack(redis_url, namespace, secrets["current"])
    yield running
    running.stop()
