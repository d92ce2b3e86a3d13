"""Redis through Sentinel: the service finds its master by asking a Sentinel the test starts."""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from conftest import FAST_RETRIES
from test_end_to_end import EXPECTED_REFUNDS, EXPECTED_SHIPMENTS, deliver, effects, summarise

from omhooks.lifecycle import load_lifecycle
from omhooks.redis_server import LocalRedis, free_port, redis_server_binary
from omhooks.stack import LocalStack, StackConfig


@pytest.fixture
def sentinel() -> Iterator[tuple[LocalRedis, int]]:
    """A Redis master and a Sentinel watching it as ``mymaster``."""
    with LocalRedis() as master, tempfile.TemporaryDirectory() as folder:
        port = free_port()
        config = Path(folder) / "sentinel.conf"
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
            f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
        )
        process = subprocess.Popen(
            [redis_server_binary(), str(config), "--sentinel"], stdout=subprocess.DEVNULL
        )
        try:
            _wait_for_sentinel(port)
            yield master, port
        finally:
            process.terminate()
            process.wait(timeout=10)


def _wait_for_sentinel(port: int) -> None:
    client = redis.Redis(port=port, socket_timeout=0.5)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if client.execute_command("SENTINEL", "get-master-addr-by-name", "mymaster"):
                return
        except redis.RedisError:
            pass
        time.sleep(0.05)
    raise RuntimeError("The Sentinel did not start.")


def test_service_runs_on_a_master_found_through_sentinel(sentinel, secrets):
    master, sentinel_port = sentinel
    env = {
        **FAST_RETRIES,
        # No Redis listens on this URL: only the Sentinel can lead the service to the master.
        "OMHOOKS_REDIS_URL": "redis://127.0.0.1:1/0",
        "OMHOOKS_REDIS_SENTINELS": f"127.0.0.1:{sentinel_port}",
        "OMHOOKS_REDIS_SENTINEL_MASTER": "mymaster",
    }
    config = StackConfig(
        redis_url=master.url, webhook_secrets=[secrets["current"]], namespace="sentinel", env=env
    )

    with LocalStack(config) as stack:
        statuses = deliver(stack, secrets["current"], load_lifecycle()["deliveryOrder"])
        stack.wait_until_drained()
        shipments, refunds, notes = summarise(effects(stack))

    assert statuses.count(202) == 11
    assert shipments == EXPECTED_SHIPMENTS
    assert refunds == EXPECTED_REFUNDS
    assert len(notes) == 1
