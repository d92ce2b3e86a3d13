"""``omhooks worker``: run Dramatiq's worker processes and serve their metrics.

This process starts ``dramatiq workers.app`` as a child, passes it SIGTERM and SIGINT, and
exits with its status. With ``OMHOOKS_WORKER_METRICS_PORT`` set (9191 by default, 0 turns it
off) it serves ``/metrics``: the sum of every worker process's counters, which they write to
a folder of their own (prometheus-client's multiprocess mode), and the queues' state.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from types import FrameType

from prometheus_client import start_http_server

from omhooks.redis_clients import sync_redis
from omhooks.settings import Settings

__all__ = ["run_workers"]

logger = logging.getLogger(__name__)

_FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def run_workers(settings: Settings, *, processes: int, threads: int) -> int:
    """Run the worker processes until they exit, and return their exit status."""
    metrics_folder = tempfile.mkdtemp(prefix="omhooks-worker-metrics-")
    environment = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_folder}
    command = [
        sys.executable, "-m", "dramatiq", "workers.app",
        "--processes", str(processes),
        "--threads", str(threads),
        "--worker-shutdown-timeout", str(int(settings.worker_shutdown_seconds * 1000)),
    ]  # fmt: skip
    try:
        if settings.worker_metrics_port:
            _serve_metrics(settings, metrics_folder)
        child = subprocess.Popen(command, env=environment)
        for signum in _FORWARDED_SIGNALS:
            signal.signal(signum, _forward_to(child))
        return _wait(child)
    finally:
        shutil.rmtree(metrics_folder, ignore_errors=True)


def _serve_metrics(settings: Settings, folder: str) -> None:
    # The collector reads the folder named by this variable, in this process too.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    from handlers.registry import discover

    from .metrics import worker_registry

    handlers = discover(settings.handler_modules, settings.disabled_handlers).enabled()
    redis = sync_redis(settings, socket_timeout=2, decode_responses=True)
    registry = worker_registry(redis, settings.namespace, [handler.name for handler in handlers])
    start_http_server(
        settings.worker_metrics_port, addr=settings.worker_metrics_host, registry=registry
    )
    logger.info(
        "Serving the workers' metrics on %s:%d.",
        settings.worker_metrics_host,
        settings.worker_metrics_port,
    )


def _forward_to(child: subprocess.Popen[bytes]):  # type: ignore[no-untyped-def]
    def forward(signum: int, frame: FrameType | None) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    return forward


def _wait(child: subprocess.Popen[bytes]) -> int:
    while True:
        try:
            return child.wait()
        except InterruptedError:
            continue
