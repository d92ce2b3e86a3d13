"""``GET /orders``: orders changed since a time, oldest first, in pages linked by a cursor."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ordermesh.models import Order

from .responses import ApiFailure
from .state import SandboxState

__all__ = ["DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE", "list_orders"]

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 500

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

SortKey = tuple[datetime, str]


def list_orders(state: SandboxState, query: Mapping[str, str]) -> tuple[int, Any]:
    """Return one page of the orders updated at or after ``updatedSince``, with ``nextCursor``.

    An order counts as updated when the order or any of its items was. The cursor is the sort
    key of the page's last order, so orders changed between pages are not skipped.
    """
    since = _parse_time(query.get("updatedSince"))
    page_size = _parse_page_size(query.get("pageSize"))
    after = _decode_cursor(query["cursor"]) if query.get("cursor") else None

    with state.lock:
        keyed = sorted((_sort_key(order), order) for order in state.orders.values())
    matching = [
        (key, order) for key, order in keyed if key[0] >= since and (after is None or key > after)
    ]

    page = matching[:page_size]
    next_cursor = _encode_cursor(page[-1][0]) if len(matching) > page_size else None
    return 200, {"orders": [order for _, order in page], "nextCursor": next_cursor}


def _sort_key(order: Order) -> SortKey:
    times = [order.updated_at, order.created_at, *(item.updated_at for item in order.items)]
    known = [_as_utc(moment) for moment in times if moment is not None]
    return (max(known, default=_EPOCH), order.id)


def _as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _parse_time(value: str | None) -> datetime:
    if not value:
        return _EPOCH
    try:
        return _as_utc(datetime.fromisoformat(value))
    except ValueError as exc:
        message = f"updatedSince {value!r} is not an ISO 8601 time, e.g. 2026-12-03T10:00:00Z."
        raise ApiFailure(400, "invalid_parameter", message) from exc


def _parse_page_size(value: str | None) -> int:
    if value is None:
        return DEFAULT_PAGE_SIZE
    try:
        size = int(value)
    except ValueError:
        size = 0
    if not 1 <= size <= MAX_PAGE_SIZE:
        message = f"pageSize {value!r} must be an integer from 1 to {MAX_PAGE_SIZE}."
        raise ApiFailure(400, "invalid_parameter", message)
    return size


def _encode_cursor(key: SortKey) -> str:
    # Full precision, because a cursor rounded to milliseconds would repeat the last order.
    raw = f"{key[0].isoformat()}|{key[1]}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii")


def _decode_cursor(cursor: str) -> SortKey:
    try:
        moment, order_id = base64.urlsafe_b64decode(cursor).decode("utf-8").split("|", 1)
        return (_as_utc(datetime.fromisoformat(moment)), order_id)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        message = f"cursor {cursor!r} is not a cursor this API returned."
        raise ApiFailure(400, "invalid_cursor", message) from exc
