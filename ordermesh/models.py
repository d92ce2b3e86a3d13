"""Typed OrderMesh objects: orders, items, shipments, refunds and notes.

Field names are the API's camelCase names, exposed in snake_case. Unknown fields are kept
(``extra="allow"``), unknown statuses stay plain strings, and money is ``Decimal``.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer
from pydantic.alias_generators import to_camel

__all__ = [
    "Address",
    "ApiModel",
    "Item",
    "Money",
    "Note",
    "Order",
    "Package",
    "Refund",
    "RefundLine",
    "Shipment",
]


def _money_to_json(amount: Decimal) -> float:
    # The API takes money as a JSON number. The shortest repr of the float nearest a decimal of
    # at most 15 significant digits is that decimal, so Decimal("0.30") goes out as 0.3.
    return float(amount)


Money = Annotated[Decimal, PlainSerializer(_money_to_json, return_type=float, when_used="json")]
"""An amount in the currency's major unit: computed as ``Decimal``, sent as a JSON number."""


class ApiModel(BaseModel):
    """Base of the OrderMesh models: camelCase aliases, extra fields kept."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="allow",
    )

    def to_api(self) -> dict[str, Any]:
        """Return the object as the API spells it (camelCase keys, JSON-ready values)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Address(ApiModel):
    """A shipping address. It is personal data, so its ``repr`` shows no value."""

    first_name: str | None = None
    last_name: str | None = None
    line1: str | None = None
    line2: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country_code: str | None = None
    phone: str | None = None
    email: str | None = None

    def __repr__(self) -> str:
        return "Address(<personal data hidden>)"

    __str__ = __repr__


class Item(ApiModel):
    """An order item; ``price`` is the unit price."""

    id: str
    order_id: str | None = None
    sku: str | None = None
    name: str | None = None
    quantity: int = 1
    status: str = "New"
    vendor_id: str | None = None
    facility_id: str | None = None
    price: Money = Decimal(0)
    refunded_amount: Money = Decimal(0)
    updated_at: datetime | None = None

    @property
    def refundable_amount(self) -> Decimal:
        """What is left to refund of this item: unit price times quantity, less refunds made."""
        return self.price * self.quantity - self.refunded_amount


class Order(ApiModel):
    """An order with its items."""

    id: str
    safe_id: str | None = None
    external_id: str | None = None
    status: str = "New"
    currency: str | None = None
    shipping_price: Money = Decimal(0)
    items: list[Item] = Field(default_factory=list)
    shipping_address: Address | None = Field(default=None, repr=False)
    created_at: datetime | None = None
    updated_at: datetime | None = None


class Package(ApiModel):
    """A package of a shipment."""

    id: str | None = None
    carrier: str | None = None
    tracking_number: str | None = None
    weight: Money | None = None


class Shipment(ApiModel):
    """A shipment of some items of one order, from one vendor and facility."""

    id: str
    order_id: str | None = None
    vendor_id: str | None = None
    facility_id: str | None = None
    status: str = "Created"
    order_item_ids: list[str] = Field(default_factory=list)
    packages: list[Package] = Field(default_factory=list)
    created_at: datetime | None = None
    updated_at: datetime | None = None


class RefundLine(ApiModel):
    """One line of a refund request, as in ``AddRefundModel.refunds``."""

    item_id: str
    is_shipping_refund: bool = False
    amount: Money
    reason: str | None = None


class Refund(ApiModel):
    """A refund request of an order."""

    id: str
    order_id: str | None = None
    refunds: list[RefundLine] = Field(default_factory=list)
    status: str | None = None


class Note(ApiModel):
    """A note attached to a resource, usually an order."""

    id: str
    resource_type: str | None = None
    resource_id: str | None = None
    text: str | None = None
    created_at: datetime | None = None
