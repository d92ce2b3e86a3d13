"""Start the sandbox, a receiver and a worker as real processes on loopback.

The demo runs on it, and so do the tests and the benchmarks: each part is the same command a
merchant runs (``omhooks sandbox``, ``omhooks serve``, ``omhooks worker``).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx
from redis import Redis

from workers.journal import pending_messages

from .errors import ConfigurationError
from .redis_server import free_port

__all__ = ["LocalStack", "StackConfig", "wait_until_ok"]

logger = logging.getLogger(__name__)

_START_TIMEOUT_SECONDS = 30.0
_STOP_TIMEOUT_SECONDS = 15.0


def wait_until_ok(url: str, *, check_alive: Callable[[], None], timeout: float) -> bool:
    """Return True once a GET of ``url`` returns 200, or False after ``timeout`` seconds.

    ``check_alive`` runs before each try and raises if the process serving ``url`` exited.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check_alive()
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    return False


@dataclass
class StackConfig:
    """What to run and with which settings; ``env`` adds OMHOOKS_ settings for every part."""

    redis_url: str
    webhook_secrets: list[str]
    namespace: str = "omhooks"
    client_id: str = "sandbox"
    client_secret: str = "sandbox-secret"
    worker_processes: int = 1
    worker_threads: int = 4
    worker_metrics_port: int = 0
    env: dict[str, str] = field(default_factory=dict)


class LocalStack:
    """The sandbox, one receiver and one worker, each in its own process, logging to a folder."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.sandbox_port = free_port()
        self.receiver_port = free_port()
        self._logs = tempfile.TemporaryDirectory(prefix="omhooks-stack-")
        self._processes: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def sandbox_url(self) -> str:
        """Base URL of the sandbox (its API is under ``/v1``)."""
        return f"http://127.0.0.1:{self.sandbox_port}"

    @property
    def receiver_url(self) -> str:
        """URL of the receiver's webhook endpoint."""
        return f"http://127.0.0.1:{self.receiver_port}/webhooks/ordermesh"

    def environment(self) -> dict[str, str]:
        """Return the environment every part runs with.

        The caller's own ``OMHOOKS_`` and ``REDIS_URL`` settings are left out, and the parts
        run in a folder of their own, away from any ``.env``, so that only ``config`` decides.
        """
        config = self.config
        inherited = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("OMHOOKS_") and name != "REDIS_URL"
        }
        return {
            **inherited,
            "OMHOOKS_REDIS_URL": config.redis_url,
            "OMHOOKS_NAMESPACE": config.namespace,
            "OMHOOKS_WEBHOOK_SECRETS": ",".join(config.webhook_secrets),
            "OMHOOKS_API_BASE_URL": f"{self.sandbox_url}/v1",
            "OMHOOKS_API_CLIENT_ID": config.client_id,
            "OMHOOKS_API_CLIENT_SECRET": config.client_secret,
            "OMHOOKS_SANDBOX_CLIENT_SECRET": config.client_secret,
            "OMHOOKS_WORKER_PROCESSES": str(config.worker_processes),
            "OMHOOKS_WORKER_THREADS": str(config.worker_threads),
            "OMHOOKS_WORKER_METRICS_PORT": str(config.worker_metrics_port),
            **config.env,
        }

    def start(self) -> LocalStack:
        """Start the three parts and wait until the sandbox and the receiver answer."""
        port = str(self.sandbox_port)
        self._spawn("sandbox", ["sandbox", "--port", port, "--client-id", self.config.client_id])
        self._spawn("receiver", ["serve", "--host", "127.0.0.1", "--port", str(self.receiver_port)])
        self.start_worker()
        self._wait_for(f"{self.sandbox_url}/_sandbox/effects", "sandbox")
        self._wait_for(f"http://127.0.0.1:{self.receiver_port}/readyz", "receiver")
        return self

    def start_worker(self) -> None:
        """Start the worker process (again, after ``stop_worker``)."""
        self._spawn("worker", ["worker"])

    def stop_worker(self) -> None:
        """Stop the worker process with SIGTERM, as an orchestrator would."""
        self._stop("worker")

    def kill_worker(self) -> None:
        """Kill the worker's processes with SIGKILL, as a crash or the OOM killer would."""
        self.kill("worker")

    def start_process(self, name: str, arguments: list[str]) -> None:
        """Start another ``omhooks`` process with the stack's environment, e.g. a receiver."""
        self._spawn(name, arguments)

    def signal(self, name: str, signum: int) -> None:
        """Send a signal to a part's main process, e.g. SIGTERM to ask it to stop."""
        self._processes[name].send_signal(signum)

    def wait_for_exit(self, name: str, timeout: float = _STOP_TIMEOUT_SECONDS) -> int:
        """Wait until a part has exited and return its exit status."""
        process = self._processes.pop(name)
        return process.wait(timeout=timeout)

    def kill(self, name: str) -> None:
        """Kill a part and its child processes with SIGKILL."""
        process = self._processes.pop(name, None)
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def wait_until_drained(self, timeout: float = 60.0) -> float:
        """Wait until no message is queued, delayed or in progress; return the seconds waited."""
        redis = Redis.from_url(self.config.redis_url)
        started = time.monotonic()
        try:
            while pending_messages(redis, self.config.namespace) > 0:
                self._check_alive()
                if time.monotonic() - started > timeout:
                    raise TimeoutError(f"Messages were still pending after {timeout:.0f} s.")
                time.sleep(0.05)
        finally:
            redis.close()
        return time.monotonic() - started

    def log_text(self, name: str) -> str:
        """Return what a part has logged so far."""
        path = Path(self._logs.name) / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Stop every part and delete the logs."""
        for name in list(self._processes):
            self._stop(name)
        self._logs.cleanup()

    def _spawn(self, name: str, arguments: list[str]) -> None:
        log = open(Path(self._logs.name) / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        self._processes[name] = subprocess.Popen(
            [sys.executable, "-m", "omhooks", *arguments],
            env=self.environment(),
            cwd=self._logs.name,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def _stop(self, name: str) -> None:
        process = self._processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=_STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def _wait_for(self, url: str, name: str) -> None:
        if not wait_until_ok(url, check_alive=self._check_alive, timeout=_START_TIMEOUT_SECONDS):
            raise ConfigurationError(f"The {name} did not start in time:\n{self.log_text(name)}")

    def _check_alive(self) -> None:
        for name, process in self._processes.items():
            if process.poll() is not None:
                raise ConfigurationError(
                    f"The {name} exited with status {process.returncode}:\n{self.log_text(name)}"
                )

    def __enter__(self) -> LocalStack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
