"""Tests of OrderMeshClient against the sandbox served by uvicorn on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
from pydantic import SecretStr

from omhooks.errors import (
    ApiPermanentError,
    ApiTransientError,
    ConfigurationError,
    ConflictError,
)
from omhooks.settings import Settings
from ordermesh.client import OrderMeshClient
from ordermesh.models import Order, RefundLine, Shipment
from ordermesh.sandbox.testing import (
    RunningSandbox,
    item_snapshot,
    order_snapshot,
)


class RecordingTransport(httpx.HTTPTransport):
    """An HTTP transport that keeps every request it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return super().handle_request(request)


@pytest.fixture
def client(sandbox: RunningSandbox) -> Iterator[OrderMeshClient]:
    with sandbox.client() as api:
        yield api


# Tokens


def test_token_is_reused_across_calls(sandbox: RunningSandbox, client: OrderMeshClient) -> None:
    client.get_order("ord_1")
    client.list_shipments("ord_1")

    assert sandbox.request_counts()["client_token"] == 1


def test_concurrent_threads_share_one_token(
    sandbox: RunningSandbox, client: OrderMeshClient
) -> None:
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            client.get_order("ord_1")
        except BaseException as exc:  # the assert below reports it
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sandbox.request_counts()["client_token"] == 1
    assert sandbox.request_counts()["get_order"] == 8


def test_token_is_renewed_once_after_401(sandbox: RunningSandbox, client: OrderMeshClient) -> None:
    client.get_order("ord_1")
    sandbox.revoke_tokens()

    order = client.get_order("ord_1")

    assert order.id == "ord_1"
    assert sandbox.request_counts()["client_token"] == 2
    assert sandbox.request_counts()["get_order"] == 3


def test_second_401_is_permanent(sandbox: RunningSandbox, client: OrderMeshClient) -> None:
    sandbox.fail("get_order", 401, count=2)

    with pytest.raises(ApiPermanentError) as caught:
        client.get_order("ord_1")

    assert caught.value.status == 401
    assert sandbox.request_counts()["client_token"] == 2
    assert sandbox.request_counts()["get_order"] == 2


def test_wrong_credentials_are_permanent(sandbox: RunningSandbox) -> None:
    with (
        sandbox.client(client_secret="wrong-secret-7f3a") as api,
        pytest.raises(ApiPermanentError) as caught,
    ):
        api.get_order("ord_1")

    assert caught.value.status == 401
    assert caught.value.code == "invalid_client"
    assert "wrong-secret-7f3a" not in str(caught.value)


# Retries


def test_429_waits_retry_after_then_succeeds(
    sandbox: RunningSandbox, client: OrderMeshClient
) -> None:
    sandbox.fail("get_order", 429, count=1, retryAfter=1)
    started = time.monotonic()

    order = client.get_order("ord_1")

    assert order.id == "ord_1"
    assert time.monotonic() - started >= 1.0
    assert sandbox.request_counts()["get_order"] == 2


def test_retry_after_over_cap_fails_fast(sandbox: RunningSandbox) -> None:
    sandbox.fail("get_order", 429, count=1, retryAfter=120)

    with sandbox.client(max_retry_after=5.0) as api, pytest.raises(ApiTransientError) as caught:
        api.get_order("ord_1")

    assert caught.value.status == 429
    assert caught.value.code == "rate_limited"
    assert sandbox.request_counts()["get_order"] == 1


def test_5xx_is_retried_then_succeeds(sandbox: RunningSandbox, client: OrderMeshClient) -> None:
    sandbox.fail("get_order", 503, count=2)

    order = client.get_order("ord_1")

    assert order.id == "ord_1"
    assert sandbox.request_counts()["get_order"] == 3


def test_persistent_5xx_is_transient(sandbox: RunningSandbox, client: OrderMeshClient) -> None:
    sandbox.fail("get_order", 503, count=None)

    with pytest.raises(ApiTransientError) as caught:
        client.get_order("ord_1")

    assert caught.value.status == 503
    assert caught.value.code == "sandbox_fault"
    assert sandbox.request_counts()["get_order"] == 3


def test_timeout_is_retried(sandbox: RunningSandbox) -> None:
    sandbox.fail("get_order", None, count=1, delaySeconds=1)

    with sandbox.client(timeout=0.2) as api:
        order = api.get_order("ord_1")

    assert order.id == "ord_1"
    assert sandbox.request_counts()["get_order"] == 2


def test_connection_error_is_transient() -> None:
    calls: list[httpx.Request] = []

    def reject_connection(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ConnectError("connection refused", request=request)

    transport = httpx.MockTransport(reject_connection)
    api = OrderMeshClient("http://127.0.0.1:9/v1", "id", "secret", transport=transport)

    with api, pytest.raises(ApiTransientError) as caught:
        api.get_order("ord_1")

    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert len(calls) == 3


# Errors


def test_404_is_permanent_error(client: OrderMeshClient) -> None:
    with pytest.raises(ApiPermanentError) as caught:
        client.get_order("ord_missing")

    assert caught.value.status == 404
    assert caught.value.code == "order_not_found"
    assert "GET /orders/ord_missing" in str(caught.value)


def test_422_is_not_retried(sandbox: RunningSandbox, client: OrderMeshClient) -> None:
    with pytest.raises(ApiPermanentError) as caught:
        client.create_shipment("ord_1", "ven_B", ["it_1"], None, idempotency_key="k-vendor")

    assert caught.value.status == 422
    assert caught.value.code == "item_vendor_mismatch"
    assert sandbox.request_counts()["create_shipment"] == 1


def test_409_raises_conflict_error(client: OrderMeshClient) -> None:
    client.create_shipment("ord_1", "ven_A", ["it_1"], None, idempotency_key="k-first")

    with pytest.raises(ConflictError) as caught:
        client.create_shipment("ord_1", "ven_A", ["it_1"], None, idempotency_key="k-second")

    assert caught.value.status == 409
    assert caught.value.code == "item_already_in_shipment"


def test_error_message_omits_token_and_body(sandbox: RunningSandbox) -> None:
    transport = RecordingTransport()
    note_text = "private text of the note"

    with sandbox.client(transport=transport) as api, pytest.raises(ApiPermanentError) as caught:
        api.create_note("ord_missing", note_text, idempotency_key="k-note")

    token = transport.requests[-1].headers["Authorization"].removeprefix("Bearer ")
    assert "POST /notes" in str(caught.value)
    assert token not in str(caught.value)
    assert note_text not in str(caught.value)


def test_invalid_base_url_is_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        OrderMeshClient("127.0.0.1:8070/v1", "id", "secret")


# Idempotency


def test_replayed_key_returns_same_shipment(
    sandbox: RunningSandbox, client: OrderMeshClient
) -> None:
    first = client.create_shipment("ord_1", "ven_A", ["it_1"], None, idempotency_key="k-ship")

    second = client.create_shipment("ord_1", "ven_A", ["it_1"], None, idempotency_key="k-ship")

    assert second == first
    assert len(sandbox.effects()["shipments"]) == 1


def test_key_reused_with_other_body_is_422(client: OrderMeshClient) -> None:
    client.create_shipment("ord_1", "ven_A", ["it_1"], None, idempotency_key="k-reused")

    with pytest.raises(ApiPermanentError) as caught:
        client.create_shipment("ord_1", "ven_A", ["it_2"], None, idempotency_key="k-reused")

    assert caught.value.status == 422
    assert caught.value.code == "idempotency_key_reused"


def test_retried_post_sends_same_key(sandbox: RunningSandbox) -> None:
    transport = RecordingTransport()
    sandbox.fail("create_shipment", 503, count=1)

    with sandbox.client(transport=transport) as api:
        api.create_shipment("ord_1", "ven_A", ["it_1"], "fac_A1", idempotency_key="k-retry")

    posts = [r for r in transport.requests if r.url.path.endswith("/shipments")]
    assert [r.headers["Idempotency-Key"] for r in posts] == ["k-retry", "k-retry"]
    assert len(sandbox.effects()["shipments"]) == 1


def test_token_request_sends_no_idempotency_key(sandbox: RunningSandbox) -> None:
    transport = RecordingTransport()

    with sandbox.client(transport=transport) as api:
        api.get_order("ord_1")

    token_request = transport.requests[0]
    assert token_request.url.path.endswith("/client/token")
    assert "Idempotency-Key" not in token_request.headers


# Operations


def test_get_order_returns_decimal_money(client: OrderMeshClient) -> None:
    order = client.get_order("ord_1")

    assert isinstance(order, Order)
    assert order.items[1].price == Decimal("9.99")
    assert order.shipping_price == Decimal("4.90")


def test_list_shipments_returns_models(client: OrderMeshClient) -> None:
    shipment_id = client.create_shipment(
        "ord_1", "ven_A", ["it_1", "it_2"], None, idempotency_key="k-list"
    )

    shipments = client.list_shipments("ord_1")

    assert [type(s) for s in shipments] == [Shipment]
    assert shipments[0].id == shipment_id
    assert shipments[0].order_item_ids == ["it_1", "it_2"]
    assert shipments[0].facility_id == "fac_A1"


def test_add_refund_records_amount(sandbox: RunningSandbox, client: OrderMeshClient) -> None:
    line = RefundLine(item_id="it_2", amount=Decimal("0.10"), reason="Damaged")

    refund_id = client.add_refund("ord_1", [line], idempotency_key="k-refund")

    assert refund_id.startswith("ref_")
    assert client.get_order("ord_1").items[1].refunded_amount == Decimal("0.1")
    assert sandbox.effects()["refunds"][0]["refunds"][0]["amount"] == 0.1


def test_create_note_and_packages(sandbox: RunningSandbox, client: OrderMeshClient) -> None:
    shipment_id = client.create_shipment("ord_1", "ven_A", ["it_1"], None, idempotency_key="k-s")
    package = {"carrier": "UPS", "trackingNumber": "1Z999", "weight": Decimal("0.45")}

    package_ids = client.create_packages(shipment_id, [package], idempotency_key="k-p")
    note_id = client.create_note("ord_1", "Packed.", idempotency_key="k-n")

    effects = sandbox.effects()
    assert effects["shipments"][0]["packages"][0]["id"] == package_ids[0]
    assert effects["shipments"][0]["packages"][0]["weight"] == 0.45
    assert effects["notes"][0]["id"] == note_id
    assert effects["notes"][0]["resourceType"] == "Order"


def test_put_on_hold_returns_held_order(client: OrderMeshClient) -> None:
    order = client.put_on_hold("ord_1", "Address could not be verified", idempotency_key="k-h")

    assert order.status == "CustomerCareHold"


def test_iter_orders_follows_cursor(sandbox: RunningSandbox, client: OrderMeshClient) -> None:
    sandbox.reset()
    for minute in (4, 1, 3, 0, 2):
        updated_at = f"2026-12-03T10:0{minute}:00.000Z"
        items = [item_snapshot(f"it_{minute}", f"ord_{minute}", updated_at=updated_at)]
        sandbox.put_order(order_snapshot(f"ord_{minute}", items=items, updated_at=updated_at))

    orders = list(client.iter_orders(datetime(2026, 12, 3, 10, 1, tzinfo=UTC), page_size=2))

    assert [order.id for order in orders] == ["ord_1", "ord_2", "ord_3", "ord_4"]
    assert sandbox.request_counts()["list_orders"] == 2


def test_from_settings_uses_api_settings(sandbox: RunningSandbox) -> None:
    settings = Settings(
        api_base_url=sandbox.api_url,
        api_client_id=sandbox.client_id,
        api_client_secret=SecretStr(sandbox.client_secret),
    )

    with OrderMeshClient.from_settings(settings) as api:
        order = api.get_order("ord_1")

    assert order.id == "ord_1"


@pytest.mark.parametrize("order_id", ["ord_1/../../../_sandbox/effects?", "ord_1?x=1#", "../v1"])
def test_order_id_cannot_change_the_path(
    sandbox: RunningSandbox, client: OrderMeshClient, order_id: str
) -> None:
    sandbox.put_order(order_snapshot("ord_1"))

    with pytest.raises(ApiPermanentError) as raised:
        client.get_order(order_id)

    assert raised.value.status == 404
