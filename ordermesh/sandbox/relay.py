"""The sandbox's outgoing webhooks: their URL, a share dropped on purpose, and their counts.

Dropping a share of the deliveries, as a lossy network or an outage on the sender's side
would, shows locally what reconciliation against ``GET /orders`` recovers.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from .webhooks import RETRY_DELAYS_SECONDS, WebhookSender

__all__ = ["DroppedEvent", "WebhookRelay", "check_drop_rate"]

logger = logging.getLogger(__name__)

_SUBJECT_KEYS = ("order", "item", "shipment", "refund", "note")


@dataclass(frozen=True)
class DroppedEvent:
    """An event the relay dropped on purpose, and the object it was about."""

    id: str
    type: str
    subject: str


def check_drop_rate(rate: float) -> float:
    """Return the rate if it is a share from 0 to 1; raise ValueError otherwise."""
    if isinstance(rate, bool) or not math.isfinite(rate) or not 0.0 <= rate <= 1.0:
        raise ValueError(f"Invalid drop rate {rate!r}: it must be a number from 0 to 1.")
    return float(rate)


class WebhookRelay:
    """The listener that hands each event of the sandbox to a ``WebhookSender`` or drops it.

    Whether an event is dropped depends only on the seed, the event's type, the object the
    event is about (``order:<id>``, ``shipment:<id>``, ...) and how many events about that
    object came before it. A run that makes the same changes with the same seed therefore
    drops the same events, however its requests interleave with the handlers' calls.

    Without a URL nothing is sent or dropped. ``set_url`` sets or changes the URL later; the
    secret given here signs the deliveries, and is checked only once there is a URL.
    """

    def __init__(
        self,
        *,
        secret: str | None,
        url: str | None = None,
        drop_rate: float = 0.0,
        drop_seed: int = 0,
        retry_delays: tuple[float, ...] = RETRY_DELAYS_SECONDS,
    ) -> None:
        self._secret = secret
        self._retry_delays = retry_delays
        self._lock = threading.Lock()
        self._sender: WebhookSender | None = None
        self._drop_rate = check_drop_rate(drop_rate)
        self._drop_seed = drop_seed
        self._emitted = 0
        self._dropped: list[DroppedEvent] = []
        self._events_per_subject: Counter[str] = Counter()
        if url is not None:
            self.set_url(url)

    def __call__(self, event_id: str, event_type: str, body: bytes) -> None:
        """Queue an encoded event for delivery, unless it is one of the share dropped."""
        subject = _subject(body)
        with self._lock:
            sequence = self._events_per_subject[subject]
            self._events_per_subject[subject] += 1
            self._emitted += 1
            sender = self._sender
            if sender is None:
                return
            dropped = self._draw(event_type, subject, sequence)
            if dropped:
                self._dropped.append(DroppedEvent(event_id, event_type, subject))

        if dropped:
            logger.info("Dropped webhook event %r (%s) on purpose.", event_id, event_type)
            return
        sender.enqueue(event_id, event_type, body)

    def set_url(self, url: str | None) -> None:
        """Send later events to ``url``, or send none when it is None.

        Raises ValueError when the sandbox has no valid webhook secret to sign deliveries with.
        """
        sender = None
        if url is not None:
            if not self._secret:
                raise ValueError(
                    f"Cannot send webhooks to {url!r}: the sandbox has no webhook secret "
                    "(whsec_...) to sign them; start it with OMHOOKS_WEBHOOK_SECRETS set."
                )
            sender = WebhookSender(url, self._secret, retry_delays=self._retry_delays)
        with self._lock:
            previous, self._sender = self._sender, sender
        if previous is not None:
            previous.close()

    def set_drops(self, rate: float, seed: int) -> None:
        """Drop the share ``rate`` (0 to 1) of later events, drawn with ``seed``."""
        rate = check_drop_rate(rate)
        with self._lock:
            self._drop_rate = rate
            self._drop_seed = seed

    def clear_counts(self) -> None:
        """Forget the events emitted and dropped so far; the URL and the drop rate stay."""
        with self._lock:
            self._emitted = 0
            self._dropped.clear()
            self._events_per_subject.clear()

    def status(self) -> dict[str, Any]:
        """Return the URL, the drop rate and seed, and the counts, in the API's spelling."""
        with self._lock:
            sender = self._sender
            return {
                "url": sender.url if sender is not None else None,
                "dropRate": self._drop_rate,
                "dropSeed": self._drop_seed,
                "emitted": self._emitted,
                "pending": sender.pending if sender is not None else 0,
                "dropped": [vars(event) for event in self._dropped],
            }

    def close(self) -> None:
        """Stop the sender's thread after the deliveries already queued had a few seconds."""
        with self._lock:
            sender, self._sender = self._sender, None
        if sender is not None:
            sender.close()

    def _draw(self, event_type: str, subject: str, sequence: int) -> bool:
        if self._drop_rate <= 0.0:
            return False
        # random.seed turns a str into an int from its bytes (version 2), not with hash(), so
        # the draw is the same in every process whatever PYTHONHASHSEED is.
        draw = random.Random(f"{self._drop_seed}|{event_type}|{subject}|{sequence}")
        return draw.random() < self._drop_rate


def _subject(body: bytes) -> str:
    try:
        data = json.loads(body).get("data")
    except (ValueError, AttributeError):
        return ""
    if not isinstance(data, dict):
        return ""
    for key in _SUBJECT_KEYS:
        value = data.get(key)
        if isinstance(value, dict) and isinstance(value.get("id"), str):
            return f"{key}:{value['id']}"
    return ""
