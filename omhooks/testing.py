"""Test helpers for handler plugins: deliver events to a running stack and read the outcomes.

The pytest plugin (``omhooks.pytest_plugin``) gives an ``OmhooksStack`` as the ``omhooks_stack``
fixture::

    def test_tracking_reaches_the_shop(omhooks_stack):
        event = make_event("shipment.shipped", order_id="ord_1")

        outcomes = omhooks_stack.deliver(event)

        assert outcomes["sync_tracking_to_shop"] == "succeeded"
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import httpx
from redis import Redis

from ordermesh.signing import signed_headers
from workers.journal import Journal, JournalEntry

from .fake_service import FakeService, RecordedRequest, running_fake_service
from .lifecycle import apply_snapshot
from .stack import LocalStack
from .templates import make_event

__all__ = [
    "FakeService",
    "OmhooksStack",
    "RecordedRequest",
    "make_event",
    "running_fake_service",
]

_POLL_SECONDS = 0.05
# The helpers only read the journal, so its TTL, which applies to writes, does not matter here.
_UNUSED_TTL_SECONDS = 60


class OmhooksStack:
    """A running sandbox, receiver and worker, with helpers to send events and read outcomes."""

    def __init__(self, stack: LocalStack, *, secret: str) -> None:
        self.stack = stack
        self._secret = secret
        self._redis = Redis.from_url(stack.config.redis_url, decode_responses=True)
        self._http = httpx.Client(timeout=15.0)
        self.journal = Journal(
            self._redis, namespace=stack.config.namespace, ttl_seconds=_UNUSED_TTL_SECONDS
        )

    @property
    def receiver_url(self) -> str:
        """URL of the receiver's webhook endpoint."""
        return self.stack.receiver_url

    @property
    def sandbox_url(self) -> str:
        """Base URL of the sandbox of the OrderMesh API (its API is under ``/v1``)."""
        return self.stack.sandbox_url

    @property
    def namespace(self) -> str:
        """The Redis key prefix of this stack."""
        return self.stack.config.namespace

    def send(self, event: dict[str, Any]) -> httpx.Response:
        """Sign the event with the stack's secret and POST it to the receiver; do not wait."""
        body = json.dumps(event, ensure_ascii=False).encode()
        headers = signed_headers([self._secret], str(event["id"]), body)
        return self._http.post(self.receiver_url, content=body, headers=headers)

    def deliver(self, event: dict[str, Any], *, timeout: float = 30.0) -> dict[str, str]:
        """Deliver an event and return each subscribed handler's final outcome.

        The event's order or item snapshot is put into the sandbox first, as OrderMesh's state
        would be when it sends the event. The call returns once every handler succeeded, was
        skipped or was dead-lettered; retries happen in between. Raises ``AssertionError`` if
        the receiver does not accept the event and ``TimeoutError`` after ``timeout`` seconds.
        """
        apply_snapshot(self._http, self.sandbox_url, event)
        response = self.send(event)
        if response.status_code not in (200, 202):
            raise AssertionError(
                f"The receiver responded {response.status_code} to event {event['id']!r}: "
                f"{response.text}"
            )
        return self.wait_for_outcomes(str(event["id"]), timeout=timeout)

    def wait_for_outcomes(self, event_id: str, *, timeout: float = 30.0) -> dict[str, str]:
        """Wait until the event was dispatched and every outcome is final; return the outcomes."""
        deadline = time.monotonic() + timeout
        entry = self.journal.entry(event_id)
        while entry is None or not entry.is_final:
            if time.monotonic() > deadline:
                raise TimeoutError(self._timeout_message(event_id, entry, timeout))
            time.sleep(_POLL_SECONDS)
            entry = self.journal.entry(event_id)
        return dict(entry.outcomes)

    def outcomes(self, event_id: str) -> dict[str, str]:
        """Return each handler's latest outcome for an event, final or not."""
        return self.journal.outcomes(event_id)

    def effects(self) -> dict[str, Any]:
        """Return the shipments, refunds and notes that handlers made through the sandbox API."""
        response = self._http.get(f"{self.sandbox_url}/_sandbox/effects")
        response.raise_for_status()
        effects: dict[str, Any] = response.json()
        return effects

    def omhooks(self, *arguments: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run an ``omhooks`` command with this stack's settings and return what it printed."""
        return subprocess.run(
            [sys.executable, "-m", "omhooks", *arguments],
            env=self.stack.environment(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def log_text(self, name: str) -> str:
        """Return what ``sandbox``, ``receiver`` or ``worker`` has logged so far."""
        return self.stack.log_text(name)

    def close(self) -> None:
        """Close the connections of the helpers; the stack itself is stopped by its owner."""
        self._http.close()
        self._redis.close()

    def _timeout_message(self, event_id: str, entry: JournalEntry | None, timeout: float) -> str:
        if entry is None:
            state = "it was not dispatched"
        else:
            state = f"the outcomes were {entry.outcomes!r}"
        worker_log = self.log_text("worker")[-4000:]
        return (
            f"Event {event_id!r} had no final outcomes after {timeout:.0f} s: {state}. "
            f"The end of the worker's log:\n{worker_log}"
        )
