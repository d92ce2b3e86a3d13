"""Signed webhook deliveries of the sandbox's own changes, sent from a background thread."""

from __future__ import annotations

import binascii
import logging
import queue
import threading
from dataclasses import dataclass

import httpx
from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook

from ordermesh.signing import signed_headers

__all__ = ["DELIVERY_TIMEOUT_SECONDS", "RETRY_DELAYS_SECONDS", "WebhookSender"]

logger = logging.getLogger(__name__)

DELIVERY_TIMEOUT_SECONDS = 15.0
RETRY_DELAYS_SECONDS = (0.5, 2.0, 5.0)
"""Waits before the second, third and fourth attempt; OrderMesh itself waits far longer."""


@dataclass(frozen=True)
class _Delivery:
    event_id: str
    event_type: str
    body: bytes


class WebhookSender:
    """Sends each event to one URL as a Standard Webhooks delivery, in the order given.

    ``enqueue`` returns at once, so an API request never waits for a delivery. A thread,
    started on the first event, posts each delivery and retries it with the same
    ``webhook-id`` and body, signing every attempt with its own timestamp. A delivery that
    fails every attempt is logged and dropped.
    """

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        retry_delays: tuple[float, ...] = RETRY_DELAYS_SECONDS,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        try:
            Webhook(secret)
        except (binascii.Error, ValueError, EmptyWebhookSecretError) as exc:
            raise ValueError(f"Invalid webhook secret for the sandbox: {exc}.") from exc

        self.url = url
        self._secret = secret
        self._retry_delays = retry_delays
        self._transport = transport
        self._queue: queue.Queue[_Delivery | None] = queue.Queue()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._pending = 0
        self._pending_lock = threading.Lock()

    @property
    def pending(self) -> int:
        """The number of events queued or being delivered, retries included."""
        with self._pending_lock:
            return self._pending

    def enqueue(self, event_id: str, event_type: str, body: bytes) -> None:
        """Queue an encoded event for delivery and return without waiting for it."""
        self._ensure_started()
        with self._pending_lock:
            self._pending += 1
        self._queue.put(_Delivery(event_id, event_type, body))

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread after the deliveries already queued have had ``timeout`` seconds."""
        with self._start_lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return

        self._queue.put(None)
        thread.join(timeout)
        if thread.is_alive():
            # Cuts short the wait before a retry; the delivery in flight still ends by its timeout.
            self._stopping.set()
            logger.warning("Stopped the webhook sender with deliveries still pending.")

    def _ensure_started(self) -> None:
        with self._start_lock:
            if self._thread is not None:
                return
            self._stopping.clear()
            self._thread = threading.Thread(
                target=self._run, name="sandbox-webhook-sender", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=DELIVERY_TIMEOUT_SECONDS, transport=self._transport) as http:
            while True:
                delivery = self._queue.get()
                if delivery is None or self._stopping.is_set():
                    return
                try:
                    self._deliver(http, delivery)
                except Exception:
                    # Keeps the thread alive for later events; this one is lost.
                    logger.exception("Sending webhook event %r failed.", delivery.event_id)
                finally:
                    with self._pending_lock:
                        self._pending -= 1

    def _deliver(self, http: httpx.Client, delivery: _Delivery) -> None:
        attempts = len(self._retry_delays) + 1
        for attempt in range(1, attempts + 1):
            error = self._attempt(http, delivery)
            if error is None:
                logger.debug("Delivered webhook event %r.", delivery.event_id)
                return

            logger.warning(
                "Delivery of webhook event %r (%r), attempt %r of %r, failed: %s.",
                delivery.event_id,
                delivery.event_type,
                attempt,
                attempts,
                error,
            )
            if attempt == attempts or self._stopping.wait(self._retry_delays[attempt - 1]):
                break

        logger.error("Dropped webhook event %r after %r attempts.", delivery.event_id, attempt)

    def _attempt(self, http: httpx.Client, delivery: _Delivery) -> str | None:
        headers = signed_headers([self._secret], delivery.event_id, delivery.body)
        try:
            response = http.post(self.url, content=delivery.body, headers=headers)
        except httpx.HTTPError as exc:
            return repr(exc)
        if not response.is_success:
            return f"the endpoint returned {response.status_code}"
        return None
