"""The sandbox's in-memory store: orders, effects, tokens, injected faults and request counts."""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ordermesh.models import Item, Note, Order, Refund, Shipment

from .idempotency import IdempotencyStore
from .responses import ApiFailure, dumps, format_time
from .snapshots import merge_item, merge_order, new_id, utc_now

__all__ = ["API_VERSION", "OPERATIONS", "TOKEN_LIFETIME_SECONDS", "Fault", "SandboxState"]

API_VERSION = "2024-06-01"
TOKEN_LIFETIME_SECONDS = 86400
MERCHANT_ID = "mer_sandbox"

OPERATIONS = (
    "client_token",
    "get_order",
    "list_shipments",
    "create_shipment",
    "create_packages",
    "add_refund",
    "create_note",
    "put_on_hold",
    "list_orders",
)
"""Names of the API operations, as used by faults and request counts."""

EventListener = Callable[[str, str, bytes], None]
"""A function called with the event id, type and encoded envelope of each API change."""


@dataclass
class Fault:
    """An injected failure of one operation.

    ``status`` None means the request only waits ``delay_seconds`` and then runs normally.
    ``remaining`` None means the fault lasts until cleared.
    """

    status: int | None
    remaining: int | None
    retry_after: str | None = None
    delay_seconds: float = 0.0


class SandboxState:
    """The sandbox's whole state, guarded by one reentrant lock.

    Endpoints and tests may call it from different threads; every method takes ``lock``.
    """

    def __init__(self, client_id: str, client_secret: str) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.lock = threading.RLock()
        self.listeners: list[EventListener] = []
        self.snapshot_events = False
        """Whether applying a snapshot emits ``order.created`` or ``order.updated``."""
        self.idempotency = IdempotencyStore()
        self._tokens: dict[str, float] = {}
        self._faults: dict[str, Fault] = {}
        self.reset()

    def reset(self) -> None:
        """Clear orders, effects, faults, idempotency records and request counts.

        Issued tokens stay valid; ``revoke_tokens`` ends them.
        """
        with self.lock:
            self.orders: dict[str, Order] = {}
            self.shipments: dict[str, Shipment] = {}
            self.refunds: dict[str, Refund] = {}
            self.notes: dict[str, Note] = {}
            self.shipping_refunded: dict[str, Decimal] = {}
            self.request_counts: Counter[str] = Counter()
            self._faults.clear()
            self.idempotency.clear()

    # Tokens

    def issue_token(self, client_id: str, client_secret: str) -> str:
        """Return a new access token for valid credentials.

        Raises ApiFailure with status 401 when the credentials are wrong.
        """
        id_ok = secrets.compare_digest(client_id.encode(), self.client_id.encode())
        secret_ok = secrets.compare_digest(client_secret.encode(), self.client_secret.encode())
        if not (id_ok and secret_ok):
            raise ApiFailure(401, "invalid_client", "The client id or client secret is wrong.")

        token = secrets.token_urlsafe(32)
        with self.lock:
            self._tokens[token] = time.monotonic() + TOKEN_LIFETIME_SECONDS
        return token

    def token_is_valid(self, token: str) -> bool:
        """Return whether a token was issued, is not revoked and has not expired."""
        with self.lock:
            expires_at = self._tokens.get(token)
        return expires_at is not None and time.monotonic() < expires_at

    def revoke_tokens(self) -> int:
        """Revoke every issued token and return how many there were."""
        with self.lock:
            count = len(self._tokens)
            self._tokens.clear()
        return count

    # Faults and counts

    def count_request(self, operation: str) -> None:
        """Count one request to an operation."""
        with self.lock:
            self.request_counts[operation] += 1

    def set_fault(self, operation: str, fault: Fault) -> None:
        """Make an operation fail, replacing any fault it had."""
        with self.lock:
            self._faults[operation] = fault

    def clear_faults(self, operation: str | None = None) -> None:
        """Clear the fault of one operation, or of all when ``operation`` is None."""
        with self.lock:
            if operation is None:
                self._faults.clear()
            else:
                self._faults.pop(operation, None)

    def take_fault(self, operation: str) -> Fault | None:
        """Return the fault that applies to this request of an operation, using up one count."""
        with self.lock:
            fault = self._faults.get(operation)
            if fault is None:
                return None
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    del self._faults[operation]
            return fault

    # Snapshots

    def apply_order_snapshot(self, order: Order) -> Order:
        """Apply an order snapshot unless a newer one is stored, and return the stored order.

        With ``snapshot_events`` on, a change of the stored order emits ``order.created`` or
        ``order.updated`` with the order as now stored.
        """
        with self.lock:
            previous = self.orders.get(order.id)
            merged = merge_order(previous, order)
            self.orders[order.id] = merged
            self._emit_order_change(previous, merged)
            return merged

    def apply_item_snapshot(self, order_id: str, item: Item) -> Item:
        """Apply an item snapshot unless a newer one is stored, and return the stored item.

        With ``snapshot_events`` on, a change emits ``order.updated`` with the whole order.
        Raises ApiFailure with status 404 when the order is unknown.
        """
        with self.lock:
            order = self.order(order_id)
            if not item.order_id:
                item = item.model_copy(update={"order_id": order_id})

            items = list(order.items)
            index = next((i for i, known in enumerate(items) if known.id == item.id), None)
            if index is None:
                merged = item
                items.append(merged)
            else:
                merged = merge_item(items[index], item)
                items[index] = merged

            changed = order.model_copy(update={"items": items})
            self.orders[order_id] = changed
            self._emit_order_change(order, changed)
            return merged

    def _emit_order_change(self, previous: Order | None, current: Order) -> None:
        if not self.snapshot_events or current == previous:
            return
        event_type = "order.created" if previous is None else "order.updated"
        self.emit(event_type, {"order": current})

    def order(self, order_id: str) -> Order:
        """Return a stored order; raise a 404 ApiFailure when it is unknown."""
        with self.lock:
            order = self.orders.get(order_id)
        if order is None:
            raise ApiFailure(404, "order_not_found", f"Order {order_id!r} was not found.")
        return order

    # Effects and events

    def effects(self) -> dict[str, list[Any]]:
        """Return the shipments, refunds and notes made through the API, in creation order."""
        with self.lock:
            return {
                "shipments": list(self.shipments.values()),
                "refunds": list(self.refunds.values()),
                "notes": list(self.notes.values()),
            }

    def emit(self, event_type: str, data: dict[str, Any]) -> str:
        """Encode a webhook event about a change, hand it to every listener and return its id."""
        event_id = new_id("evt_")
        envelope = {
            "id": event_id,
            "type": event_type,
            "apiVersion": API_VERSION,
            "createdAt": format_time(utc_now()),
            "merchantId": MERCHANT_ID,
            "data": data,
        }
        body = dumps(envelope)
        for listener in list(self.listeners):
            listener(event_id, event_type, body)
        return event_id
