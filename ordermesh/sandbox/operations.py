"""The API's rules for orders, shipments, packages, notes and holds.

Each operation takes the state and the parsed request, returns ``(status, payload)`` and raises
``ApiFailure`` for an error response. Changes emit the matching webhook event.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ordermesh.models import Note, Order, Package, Shipment

from .responses import ApiFailure
from .snapshots import later_time, new_id, utc_now
from .state import SandboxState
from .validation import (
    invalid,
    pydantic_details,
    require_object,
    require_string_list,
    require_strings,
)

__all__ = [
    "create_note",
    "create_packages",
    "create_shipment",
    "get_order",
    "list_shipments",
    "put_on_hold",
]

Result = tuple[int, Any]

_CLOSED_ITEM_STATUSES = frozenset({"Cancelled", "Rejected"})
_CLOSED_SHIPMENT_STATUSES = frozenset({"Cancelled", "Rejected"})
_UNHOLDABLE_ORDER_STATUSES = frozenset({"Cancelled", "Shipped", "Delivered"})
_MAX_NOTE_LENGTH = 10_000


def get_order(state: SandboxState, order_id: str) -> Result:
    """Return an order with its items."""
    return 200, state.order(order_id)


def list_shipments(state: SandboxState, order_id: str) -> Result:
    """Return the shipments of an order, in creation order."""
    with state.lock:
        state.order(order_id)
        shipments = [s for s in state.shipments.values() if s.order_id == order_id]
    return 200, {"shipments": shipments}


def create_shipment(state: SandboxState, body: Any) -> Result:
    """Create a shipment of some items of one vendor of an order.

    The facility defaults to the items' own when they all share one. Cancelled or rejected
    items cannot ship, and an item can be in one open shipment only (409 otherwise).
    """
    body = require_object(body)
    require_strings(body, ("orderId", "vendorId"), optional=("facilityId",))
    item_ids = require_string_list(body, "orderItemIds")
    order_id, vendor_id = body["orderId"], body["vendorId"]

    with state.lock:
        order = state.order(order_id)
        items = {item.id: item for item in order.items}
        _check_items_shippable(state, order, vendor_id, item_ids)

        facilities = {items[item_id].facility_id for item_id in item_ids}
        default_facility = facilities.pop() if len(facilities) == 1 else None
        now = utc_now()
        shipment = Shipment(
            id=new_id("shp_"),
            order_id=order_id,
            vendor_id=vendor_id,
            facility_id=body.get("facilityId") or default_facility,
            status="Created",
            order_item_ids=item_ids,
            created_at=now,
            updated_at=now,
        )
        state.shipments[shipment.id] = shipment
        state.emit("shipment.created", {"shipment": shipment})

    return 201, {"shipmentId": shipment.id, "status": shipment.status}


def _check_items_shippable(
    state: SandboxState, order: Order, vendor_id: str, item_ids: list[str]
) -> None:
    items = {item.id: item for item in order.items}
    unknown = [item_id for item_id in item_ids if item_id not in items]
    if unknown:
        raise _item_failure(422, "item_not_in_order", "do not belong to the order", unknown)

    other_vendor = [item_id for item_id in item_ids if items[item_id].vendor_id != vendor_id]
    if other_vendor:
        message = f"do not belong to vendor {vendor_id!r}"
        raise _item_failure(422, "item_vendor_mismatch", message, other_vendor)

    closed = [item_id for item_id in item_ids if items[item_id].status in _CLOSED_ITEM_STATUSES]
    if closed:
        raise _item_failure(422, "item_not_shippable", "are cancelled or rejected", closed)

    in_open_shipments = {
        item_id
        for shipment in state.shipments.values()
        if shipment.order_id == order.id and shipment.status not in _CLOSED_SHIPMENT_STATUSES
        for item_id in shipment.order_item_ids
    }
    shipped = [item_id for item_id in item_ids if item_id in in_open_shipments]
    if shipped:
        message = "are already in a shipment of the order"
        raise _item_failure(409, "item_already_in_shipment", message, shipped)


def _item_failure(status: int, code: str, reason: str, item_ids: list[str]) -> ApiFailure:
    details = [{"field": "orderItemIds", "itemId": item_id} for item_id in item_ids]
    message = f"Items {', '.join(item_ids)} {reason}."
    return ApiFailure(status, code, message, details=details)


def create_packages(state: SandboxState, shipment_id: str, body: Any) -> Result:
    """Add packages to a shipment; the sandbox assigns their ids."""
    body = require_object(body)
    entries = body.get("packages")
    if not isinstance(entries, list) or not entries:
        raise invalid([{"field": "packages", "message": "Must be a non-empty list."}])
    try:
        packages = [Package.model_validate(entry) for entry in entries]
    except ValidationError as exc:
        raise invalid(pydantic_details(exc, prefix="packages.")) from exc

    with state.lock:
        shipment = state.shipments.get(shipment_id)
        if shipment is None:
            raise ApiFailure(404, "shipment_not_found", f"Shipment {shipment_id!r} was not found.")
        if shipment.status in _CLOSED_SHIPMENT_STATUSES:
            message = f"Shipment {shipment_id!r} is {shipment.status} and takes no packages."
            raise ApiFailure(409, "shipment_closed", message)

        added = [package.model_copy(update={"id": new_id("pkg_")}) for package in packages]
        shipment = shipment.model_copy(
            update={"packages": [*shipment.packages, *added], "updated_at": utc_now()}
        )
        state.shipments[shipment_id] = shipment
        state.emit("shipment.updated", {"shipment": shipment})

    return 201, {"packageIds": [package.id for package in added]}


def create_note(state: SandboxState, body: Any) -> Result:
    """Attach a note to a resource; an order or shipment it names must exist."""
    body = require_object(body)
    require_strings(body, ("resourceType", "resourceId", "text"))
    resource_type, resource_id, text = body["resourceType"], body["resourceId"], body["text"]
    if len(text) > _MAX_NOTE_LENGTH:
        message = f"Must be at most {_MAX_NOTE_LENGTH} characters."
        raise invalid([{"field": "text", "message": message}])

    with state.lock:
        if resource_type == "Order":
            state.order(resource_id)
        if resource_type == "Shipment" and resource_id not in state.shipments:
            raise ApiFailure(404, "shipment_not_found", f"Shipment {resource_id!r} was not found.")

        note = Note(
            id=new_id("note_"),
            resource_type=resource_type,
            resource_id=resource_id,
            text=text,
            created_at=utc_now(),
        )
        state.notes[note.id] = note
        state.emit("note.created", {"note": note})

    return 201, {"id": note.id}


def put_on_hold(state: SandboxState, order_id: str, body: Any) -> Result:
    """Set an order's status to ``CustomerCareHold`` and return the order."""
    body = require_object(body)
    require_strings(body, ("reason",))

    with state.lock:
        order = state.order(order_id)
        if order.status == "CustomerCareHold":
            message = f"Order {order_id!r} is already on customer care hold."
            raise ApiFailure(409, "order_already_on_hold", message)
        if order.status in _UNHOLDABLE_ORDER_STATUSES:
            message = f"Order {order_id!r} is {order.status} and cannot be put on hold."
            raise ApiFailure(409, "order_not_holdable", message)

        order = order.model_copy(
            update={"status": "CustomerCareHold", "updated_at": later_time(order.updated_at)}
        )
        state.orders[order_id] = order
        state.emit("order.customer_care_hold", {"order": order, "reason": body["reason"]})

    return 200, order
