"""Legacy deliveries: the unsigned order snapshots that older OrderMesh accounts post.

Such an account posts the whole order, in PascalCase, to a URL ending in ``?orderid=`` with the
order id appended. The delivery has no event id and no signature, so the receiver accepts it
only on ``POST /hooks/legacy/<token>`` with the token of ``OMHOOKS_LEGACY_TOKEN``, and turns it
into an ``order.snapshot`` event whose ``data.order`` has the API's camelCase order shape.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime
from typing import Any

from pydantic import SecretStr, ValidationError

from omhooks.errors import ConfigurationError, DeliveryRejected
from ordermesh.models import Order

__all__ = [
    "MIN_TOKEN_LENGTH",
    "SNAPSHOT_TYPE",
    "check_token",
    "legacy_event_id",
    "load_legacy_token",
    "order_id_from_query",
    "snapshot_event",
]

MIN_TOKEN_LENGTH = 32
SNAPSHOT_TYPE = "order.snapshot"

# The token is part of a URL path, so it is limited to the characters a path keeps as they are.
_TOKEN = re.compile(r"[A-Za-z0-9._~-]+")
# Order ids go into the event, queue metadata and log lines.
_MAX_ORDER_ID_LENGTH = 255
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def load_legacy_token(setting: SecretStr) -> str | None:
    """Return the legacy token in clear, or None when it is unset (the route is off).

    Raises ``ConfigurationError`` naming ``OMHOOKS_LEGACY_TOKEN``, never its value, when the
    token is shorter than 32 characters or has characters a URL path would change.
    """
    token = setting.get_secret_value()
    if not token:
        return None
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigurationError(
            f"OMHOOKS_LEGACY_TOKEN is {len(token)} characters long; use at least "
            f"{MIN_TOKEN_LENGTH} random characters, for example the output of "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`, or leave it empty."
        )
    if _TOKEN.fullmatch(token) is None:
        raise ConfigurationError(
            "OMHOOKS_LEGACY_TOKEN may contain only A-Z, a-z, 0-9, '-', '_', '.' and '~', "
            "because it is part of a URL path."
        )
    return token


def check_token(expected: str, presented: str | None) -> None:
    """Raise ``DeliveryRejected`` 401 unless ``presented`` equals ``expected``, in constant time."""
    # compare_digest raises TypeError for a str with non-ASCII characters, so compare bytes.
    if not presented or not hmac.compare_digest(presented.encode(), expected.encode()):
        raise DeliveryRejected(
            401, "invalid_token", "The legacy delivery's token is missing or invalid."
        )


def order_id_from_query(value: str | None) -> str:
    """Return the ``orderid`` query value, or raise ``DeliveryRejected`` 400."""
    if not value:
        raise DeliveryRejected(
            400,
            "missing_order_id",
            "The orderid query parameter is missing or empty; post to ...?orderid=<order id>.",
        )
    if len(value) > _MAX_ORDER_ID_LENGTH or _CONTROL_CHARACTERS.search(value):
        raise DeliveryRejected(
            400,
            "invalid_order_id",
            f"The orderid query parameter must be at most {_MAX_ORDER_ID_LENGTH} characters "
            "without control characters.",
        )
    return value


def legacy_event_id(order_id: str, body: bytes) -> str:
    """Return the event id of a snapshot: the same order id and body give the same id."""
    digest = hashlib.sha256(order_id.encode() + b"\n" + body).hexdigest()
    return f"snap_{digest[:32]}"


def snapshot_event(order_id: str, body: bytes, snapshot: Any) -> dict[str, Any]:
    """Return the ``order.snapshot`` envelope of a parsed snapshot, or raise 400.

    ``body`` is the snapshot as received (decoded if it was gzip), from which the event id is
    derived. ``data.legacy`` keeps the snapshot as it came.
    """
    if not isinstance(snapshot, dict):
        raise _invalid_snapshot("the body must be a JSON object")
    order = snapshot_order(order_id, snapshot)
    try:
        Order.model_validate(order)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        fields = sorted({".".join(str(part) for part in error["loc"]) for error in errors})
        raise _invalid_snapshot(f"the converted order is invalid at: {', '.join(fields)}") from exc
    created_at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "id": legacy_event_id(order_id, body),
        "type": SNAPSHOT_TYPE,
        "createdAt": created_at,
        "data": {"order": order, "legacy": snapshot},
    }


def snapshot_order(order_id: str, snapshot: dict[str, Any]) -> dict[str, Any]:
    """Convert a PascalCase snapshot to the API's camelCase order; keys it lacks stay absent."""
    order: dict[str, Any] = {"id": order_id}
    _copy(snapshot, "NiceId", order, "externalId")
    _copy(snapshot, "Status", order, "status")

    items = snapshot.get("Items", [])
    if not isinstance(items, list):
        raise _invalid_snapshot("Items must be a list")
    order["items"] = [_snapshot_item(order_id, index, item) for index, item in enumerate(items)]

    address = snapshot.get("ShipToAddress")
    if isinstance(address, dict):
        order["shippingAddress"] = {_camel_case(key): value for key, value in address.items()}
    elif address is not None:
        raise _invalid_snapshot("ShipToAddress must be an object")
    return order


def _snapshot_item(order_id: str, index: int, item: Any) -> dict[str, Any]:
    """Convert one snapshot item. An item without an Id gets ``<order id>-<index from 0>``."""
    if not isinstance(item, dict):
        raise _invalid_snapshot(f"Items[{index}] must be an object")
    item_id = item.get("Id")
    converted: dict[str, Any] = {
        "id": str(item_id) if item_id not in (None, "") else f"{order_id}-{index}"
    }
    _copy(item, "Sku", converted, "sku")
    _copy(item, "Product", converted, "name")
    _copy(item, "Quantity", converted, "quantity")
    _copy(item, "Status", converted, "status")
    price = item.get("Price")
    if isinstance(price, dict):
        _copy(price, "Price", converted, "price")
    elif price is not None:
        raise _invalid_snapshot(f"Items[{index}].Price must be an object with a Price")
    _copy(item, "TrackingNumber", converted, "trackingNumber")
    return converted


def _copy(source: dict[str, Any], key: str, target: dict[str, Any], target_key: str) -> None:
    if source.get(key) is not None:
        target[target_key] = source[key]


def _camel_case(key: str) -> str:
    return key[:1].lower() + key[1:]


def _invalid_snapshot(reason: str) -> DeliveryRejected:
    return DeliveryRejected(400, "invalid_snapshot", f"The order snapshot is invalid: {reason}.")
