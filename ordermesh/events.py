"""The webhook envelope and the typed event handed to handlers."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from pydantic import Field, ValidationError

from .models import ApiModel, Item, Order, Shipment

__all__ = ["Envelope", "Event", "ValidationError", "order_id_of"]

_Part = TypeVar("_Part", bound=ApiModel)


class Envelope(ApiModel):
    """A webhook envelope as OrderMesh sends it; unknown types and fields are accepted and kept."""

    id: str = Field(min_length=1, max_length=255)
    type: str = Field(min_length=1, max_length=255)
    api_version: str | None = None
    created_at: datetime
    merchant_id: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


def order_id_of(event_type: str, data: dict[str, Any]) -> str | None:
    """Return the id of the order an event concerns, whatever its type, or None if it has none."""
    for key in ("order", "shipment", "refund", "item"):
        value = data.get(key)
        if isinstance(value, dict):
            found = value.get("orderId") if key != "order" else value.get("id")
            if isinstance(found, str) and found:
                return found

    found = data.get("orderId")
    if isinstance(found, str) and found:
        return found

    note = data.get("note")
    if isinstance(note, dict) and note.get("resourceType") == "Order":
        resource_id = note.get("resourceId")
        return resource_id if isinstance(resource_id, str) else None
    return None


class Event(Envelope):
    """An event as handlers receive it, with typed views of its data.

    ``event.data`` stays the raw dictionary; ``event.order``, ``event.item`` and
    ``event.shipment`` parse the matching part on first use (``None`` when absent).
    """

    @property
    def order_id(self) -> str | None:
        """The id of the order this event concerns, derived for every event type."""
        return order_id_of(self.type, self.data)

    @property
    def order(self) -> Order | None:
        """The order snapshot carried by ``order.*`` events."""
        return self._part("order", Order)

    @property
    def item(self) -> Item | None:
        """The item snapshot carried by ``order_item.*`` events."""
        return self._part("item", Item)

    @property
    def shipment(self) -> Shipment | None:
        """The shipment snapshot carried by ``shipment.*`` events."""
        return self._part("shipment", Shipment)

    def _part(self, key: str, model: type[_Part]) -> _Part | None:
        value = self.data.get(key)
        if not isinstance(value, dict):
            return None
        return model.model_validate(value)

    def log_context(self) -> dict[str, Any]:
        """Return the ids that every log line about this event carries; no personal data."""
        return {"event_id": self.id, "event_type": self.type, "order_id": self.order_id}
