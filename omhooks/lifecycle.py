"""The fixture lifecycle of two orders, delivered to a receiver as OrderMesh would deliver it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import httpx

from ordermesh.signing import signed_headers

__all__ = ["Delivery", "apply_snapshot", "deliver_lifecycle", "load_lifecycle"]


@dataclass(frozen=True)
class Delivery:
    """The answer to one delivery and how long it took."""

    event_id: str
    status: int
    seconds: float


def load_lifecycle() -> dict[str, Any]:
    """Return the lifecycle: ``events`` and the ``deliveryOrder`` of their ids."""
    text = files("omhooks").joinpath("data/lifecycle-events.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def apply_snapshot(client: httpx.Client, sandbox_url: str, event: dict[str, Any]) -> None:
    """Make the event's order or item snapshot the sandbox's state, unless it holds a newer one."""
    data = event.get("data", {})
    if isinstance(data.get("order"), dict):
        order = data["order"]
        response = client.put(f"{sandbox_url}/_sandbox/orders/{order['id']}", json=order)
        response.raise_for_status()
    elif isinstance(data.get("item"), dict):
        item = data["item"]
        url = f"{sandbox_url}/_sandbox/orders/{item['orderId']}/items/{item['id']}"
        client.put(url, json=item).raise_for_status()


def deliver_lifecycle(
    receiver_url: str, sandbox_url: str, secrets: list[str], lifecycle: dict[str, Any] | None = None
) -> list[Delivery]:
    """Deliver every event in ``deliveryOrder`` as a signed request, after applying its snapshot."""
    lifecycle = lifecycle or load_lifecycle()
    events = {event["id"]: event for event in lifecycle["events"]}
    deliveries = []
    with httpx.Client(timeout=15.0) as client:
        for event_id in lifecycle["deliveryOrder"]:
            event = events[event_id]
            apply_snapshot(client, sandbox_url, event)
            body = json.dumps(event, ensure_ascii=False).encode()
            started = time.perf_counter()
            response = client.post(
                receiver_url, content=body, headers=signed_headers(secrets, event_id, body)
            )
            deliveries.append(
                Delivery(event_id, response.status_code, time.perf_counter() - started)
            )
    return deliveries
