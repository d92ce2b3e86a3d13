"""Shared fixtures: a real Redis (found or started), a namespace per test, the fixture data."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from omhooks.settings import get_settings
from omhooks.stack import LocalStack, StackConfig
from ordermesh.sandbox.testing import RunningSandbox, order_snapshot, running_sandbox

FIXTURES = Path(__file__).parent / "fixtures"


def load_fixture(name: str) -> Any:
    """Return a JSON file of tests/fixtures."""
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    """Make ``get_settings`` read the environment again in each test that calls it.

    It keeps the settings it read, so a test that runs a command in process would otherwise
    leave its environment to the tests after it.
    """
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def redis_url(omhooks_redis_url: str) -> str:
    """A running Redis, found or started by the package's pytest plugin."""
    return omhooks_redis_url


@pytest.fixture
def namespace(omhooks_namespace: str) -> str:
    """A key prefix of this test alone; the plugin deletes its keys afterwards."""
    return omhooks_namespace


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


@pytest.fixture(scope="module")
def served() -> Iterator[RunningSandbox]:
    """A sandbox on loopback, shared by the tests of one module."""
    with running_sandbox() as sandbox:
        yield sandbox


@pytest.fixture
def sandbox(served: RunningSandbox) -> RunningSandbox:
    """The module's sandbox, emptied, holding order ``ord_1``."""
    served.reset()
    served.put_order(order_snapshot("ord_1"))
    return served
