"""The decisions of the built-in handlers, on orders as the API returns them."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from handlers.builtin.notes import hold_note_text
from handlers.builtin.refunds import refund_lines
from handlers.builtin.shipping import items_to_ship
from ordermesh.models import Order, Shipment


def make_order(*items: dict[str, Any], status: str = "Processing", shipping: float = 6.95) -> Order:
    return Order.model_validate(
        {"id": "ord_1", "status": status, "shippingPrice": shipping, "items": list(items)}
    )


def item(item_id: str, status: str, vendor: str = "ven_A", **fields: Any) -> dict[str, Any]:
    return {
        "id": item_id,
        "status": status,
        "vendorId": vendor,
        "facilityId": f"fac_{vendor[-1]}1",
        "price": 10,
        "quantity": 1,
        **fields,
    }


def test_vendor_ships_when_all_live_items_are_ready():
    order = make_order(item("a", "ReadyToShip"), item("b", "ReadyToShip"), item("c", "Cancelled"))

    ready = items_to_ship(order, [])

    assert list(ready) == [("ven_A", "fac_A1")]
    assert [it.id for it in ready["ven_A", "fac_A1"]] == ["a", "b"]


def test_vendor_waits_while_an_item_is_not_ready():
    order = make_order(item("a", "ReadyToShip"), item("b", "InProduction"))

    assert items_to_ship(order, []) == {}


def test_vendor_with_only_cancelled_items_gets_no_shipment():
    order = make_order(item("a", "ReadyToShip"), item("c", "Cancelled", vendor="ven_B"))

    assert list(items_to_ship(order, [])) == [("ven_A", "fac_A1")]


def test_items_already_in_a_shipment_are_not_shipped_again():
    order = make_order(item("a", "ReadyToShip"), item("b", "ReadyToShip"))
    shipment = Shipment.model_validate({"id": "shp_1", "orderItemIds": ["a", "b"]})

    assert items_to_ship(order, [shipment]) == {}


def test_vendors_are_decided_separately():
    order = make_order(
        item("a", "ReadyToShip"),
        item("x", "ReadyToShip", vendor="ven_B"),
        item("y", "New", vendor="ven_B"),
    )

    assert list(items_to_ship(order, [])) == [("ven_A", "fac_A1")]


def test_cancelled_item_is_refunded_what_is_left():
    order = make_order(item("a", "Cancelled", price=0.1, quantity=3, refundedAmount=0.1))

    lines = refund_lines(order, shipping_refunded=False)

    assert len(lines) == 1
    assert lines[0].amount == Decimal("0.2")
    assert lines[0].is_shipping_refund is False


def test_refunded_item_is_not_refunded_again():
    order = make_order(item("a", "Cancelled", price=19.99, refundedAmount=19.99))

    assert refund_lines(order, shipping_refunded=False) == []


def test_cancelled_order_refunds_shipping_once_on_first_item():
    order = make_order(
        item("a", "Cancelled"), item("b", "Cancelled"), status="Cancelled", shipping=4.9
    )

    first = refund_lines(order, shipping_refunded=False)
    later = refund_lines(order, shipping_refunded=True)

    shipping = [line for line in first if line.is_shipping_refund]
    assert len(shipping) == 1
    assert shipping[0].item_id == "a"
    assert shipping[0].amount == Decimal("4.9")
    assert not any(line.is_shipping_refund for line in later)


def test_refund_amounts_are_exact_decimals():
    order = make_order(item("a", "Cancelled", price=0.1, quantity=3))

    lines = refund_lines(order, shipping_refunded=False)

    assert lines[0].amount == Decimal("0.3")
    assert lines[0].to_api()["amount"] == 0.3


def test_hold_note_carries_the_reason():
    assert hold_note_text("Address could not be verified") == (
        "Order is on customer care hold: Address could not be verified"
    )
    assert "no reason" in hold_note_text(None)
