"""Run the sandbox, or any ASGI app, under a real uvicorn server for tests.

from ordermesh.sandbox.testing import running_sandbox

with running_sandbox() as sandbox, sandbox.client() as client:
    sandbox.put_order(order_json)
    client.get_order(order_json["id"])
    assert sandbox.effects()["shipments"] == []
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import httpx
import uvicorn
from starlette.types import ASGIApp

from ordermesh.client import OrderMeshClient

from .app import create_app
from .responses import dumps
from .state import SandboxState

__all__ = ["RunningSandbox", "item_snapshot", "order_snapshot", "running_sandbox", "running_server"]

STARTUP_TIMEOUT_SECONDS = 10.0
SNAPSHOT_TIME = "2026-12-03T10:00:00.000Z"
_POLL_SECONDS = 0.05


class _Server(uvicorn.Server):
    """A uvicorn server that sets ``ready`` once it accepts connections."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


@contextmanager
def running_server(app: ASGIApp, *, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve an app on a free port of ``host`` from a background thread; yield its root URL.

    The server has started when the block begins and has stopped when it ends.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = _Server(uvicorn.Config(app, log_level="warning", lifespan="auto"))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{port}", daemon=True
    )

    thread.start()
    try:
        _wait_until_ready(server, thread)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(STARTUP_TIMEOUT_SECONDS)
        sock.close()


def _wait_until_ready(server: _Server, thread: threading.Thread) -> None:
    waited = 0.0
    # Waits on the event, checking now and then that the thread did not die during startup.
    while not server.ready.wait(_POLL_SECONDS):
        waited += _POLL_SECONDS
        if not thread.is_alive():
            raise RuntimeError("The uvicorn server stopped during startup; see its log.")
        if waited >= STARTUP_TIMEOUT_SECONDS:
            raise RuntimeError(f"The uvicorn server did not start in {STARTUP_TIMEOUT_SECONDS} s.")


class RunningSandbox:
    """A sandbox served on loopback, with shortcuts to its control endpoints."""

    def __init__(self, url: str, app: Any, client_id: str, client_secret: str) -> None:
        self.url = url
        self.api_url = f"{url}/v1"
        self.app = app
        self.client_id = client_id
        self.client_secret = client_secret
        self.http = httpx.Client(base_url=f"{url}/_sandbox", timeout=10.0)

    @property
    def state(self) -> SandboxState:
        """The sandbox's in-memory state, for checks the control endpoints do not offer."""
        state: SandboxState = self.app.state.sandbox
        return state

    def client(self, **kwargs: Any) -> OrderMeshClient:
        """Create an API client with the sandbox's URL and credentials; ``kwargs`` override."""
        options: dict[str, Any] = {
            "base_url": self.api_url,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            **kwargs,
        }
        return OrderMeshClient(**options)

    def put_order(self, order: dict[str, Any]) -> dict[str, Any]:
        """Apply an order snapshot (API shape) and return the order as now stored."""
        return self._json("PUT", f"/orders/{order['id']}", order)

    def put_item(self, order_id: str, item: dict[str, Any]) -> dict[str, Any]:
        """Apply an item snapshot and return the item as now stored."""
        return self._json("PUT", f"/orders/{order_id}/items/{item['id']}", item)

    def effects(self) -> dict[str, Any]:
        """Return the shipments, refunds and notes made through the API."""
        return self._json("GET", "/effects")

    def request_counts(self) -> dict[str, int]:
        """Return how many requests each operation received."""
        return self._json("GET", "/requests")

    def fail(self, operation: str, status: int | None, count: int | None = 1, **extra: Any) -> None:
        """Make an operation fail; ``extra`` takes ``retryAfter`` and ``delaySeconds``."""
        fault = {"operation": operation, "status": status, "count": count, **extra}
        self._json("POST", "/faults", fault)

    def clear_faults(self) -> None:
        """Make every operation work again."""
        self.http.delete("/faults").raise_for_status()

    def revoke_tokens(self) -> None:
        """Revoke every token issued so far."""
        self._json("POST", "/tokens/revoke")

    def reset(self) -> None:
        """Clear orders, effects, faults, idempotency records and request counts."""
        self.http.post("/reset").raise_for_status()

    def close(self) -> None:
        """Close the connection to the control endpoints."""
        self.http.close()

    def _json(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        content = None if body is None else dumps(body)
        headers = {"content-type": "application/json"}
        response = self.http.request(method, path, content=content, headers=headers)
        response.raise_for_status()
        payload: dict[str, Any] = response.json()
        return payload


@contextmanager
def running_sandbox(
    *, client_id: str = "sandbox", client_secret: str = "sandbox-secret", **app_kwargs: Any
) -> Iterator[RunningSandbox]:
    """Serve a new sandbox on a free loopback port for the duration of the block."""
    app = create_app(client_id=client_id, client_secret=client_secret, **app_kwargs)
    with running_server(app) as url:
        sandbox = RunningSandbox(url, app, client_id, client_secret)
        try:
            yield sandbox
        finally:
            sandbox.close()


def item_snapshot(
    item_id: str,
    order_id: str = "ord_1",
    *,
    vendor_id: str = "ven_A",
    facility_id: str = "fac_A1",
    price: str = "12.50",
    quantity: int = 1,
    status: str = "New",
    refunded_amount: str = "0",
    updated_at: str = SNAPSHOT_TIME,
) -> dict[str, Any]:
    """Return an item in the API's shape; money is given as strings and held as ``Decimal``.

    ``put_item`` and ``put_order`` send the amounts as JSON numbers.
    """
    return {
        "id": item_id,
        "orderId": order_id,
        "sku": f"SKU-{item_id}",
        "name": f"Item {item_id}",
        "quantity": quantity,
        "status": status,
        "vendorId": vendor_id,
        "facilityId": facility_id,
        "price": Decimal(price),
        "refundedAmount": Decimal(refunded_amount),
        "updatedAt": updated_at,
    }


def order_snapshot(
    order_id: str = "ord_1",
    *,
    items: list[dict[str, Any]] | None = None,
    status: str = "Processing",
    shipping_price: str = "4.90",
    updated_at: str = SNAPSHOT_TIME,
) -> dict[str, Any]:
    """Return an order in the API's shape; its items default to two of vendor ``ven_A``."""
    if items is None:
        items = [item_snapshot("it_1", order_id), item_snapshot("it_2", order_id, price="9.99")]
    return {
        "id": order_id,
        "externalId": f"#{order_id}",
        "status": status,
        "currency": "USD",
        "shippingPrice": Decimal(shipping_price),
        "items": items,
        "createdAt": SNAPSHOT_TIME,
        "updatedAt": updated_at,
    }
