"""Tests of the OrderMesh API sandbox over HTTP, served by uvicorn on loopback."""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ordermesh.sandbox.testing import (
    RunningSandbox,
    item_snapshot,
    order_snapshot,
    running_sandbox,
    running_server,
)

FIXTURES = Path(__file__).parent / "fixtures"
LATER = "2026-12-03T10:20:00.000Z"
EARLIER = "2026-12-03T10:05:00.000Z"


@pytest.fixture
def api(sandbox: RunningSandbox) -> Iterator[httpx.Client]:
    credentials = {"clientId": sandbox.client_id, "clientSecret": sandbox.client_secret}
    with httpx.Client(base_url=sandbox.api_url) as http:
        token = http.post("/client/token", json=credentials).json()["accessToken"]
        http.headers["Authorization"] = f"Bearer {token}"
        yield http


def post(api: httpx.Client, path: str, body: Any, key: str | None = None) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return api.post(path, json=body, headers=headers)


def shipment_body(*item_ids: str, vendor_id: str = "ven_A") -> dict[str, Any]:
    return {"orderId": "ord_1", "vendorId": vendor_id, "orderItemIds": list(item_ids)}


def refund_body(*lines: tuple[str, float | str, bool]) -> dict[str, Any]:
    refunds = [
        {"itemId": item_id, "amount": amount, "isShippingRefund": shipping}
        for item_id, amount, shipping in lines
    ]
    return {"orderId": "ord_1", "refunds": refunds}


# Authentication


def test_token_needs_valid_credentials(sandbox: RunningSandbox) -> None:
    body = {"clientId": sandbox.client_id, "clientSecret": "not-it"}

    response = httpx.post(f"{sandbox.api_url}/client/token", json=body)

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_client"


def test_token_lasts_a_day(sandbox: RunningSandbox) -> None:
    body = {"clientId": sandbox.client_id, "clientSecret": sandbox.client_secret}

    token = httpx.post(f"{sandbox.api_url}/client/token", json=body).json()

    assert token["tokenType"] == "Bearer"
    assert token["expiresIn"] == 86400


def test_api_without_token_is_401(sandbox: RunningSandbox) -> None:
    response = httpx.get(f"{sandbox.api_url}/orders/ord_1")

    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"


def test_revoked_token_is_401(sandbox: RunningSandbox, api: httpx.Client) -> None:
    sandbox.revoke_tokens()

    response = api.get("/orders/ord_1")

    assert response.status_code == 401


def test_unknown_path_is_json_404(api: httpx.Client) -> None:
    response = api.get("/no-such-operation")

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


# Snapshots


def test_older_order_snapshot_is_ignored(sandbox: RunningSandbox, api: httpx.Client) -> None:
    sandbox.put_order(order_snapshot("ord_1", status="CustomerCareHold", updated_at=LATER))

    sandbox.put_order(order_snapshot("ord_1", status="Processing", updated_at=EARLIER))

    assert api.get("/orders/ord_1").json()["status"] == "CustomerCareHold"


def test_older_item_snapshot_is_ignored(sandbox: RunningSandbox, api: httpx.Client) -> None:
    sandbox.put_item("ord_1", item_snapshot("it_1", status="ReadyToShip", updated_at=LATER))

    sandbox.put_item("ord_1", item_snapshot("it_1", status="InProduction", updated_at=EARLIER))

    assert api.get("/orders/ord_1").json()["items"][0]["status"] == "ReadyToShip"


def test_older_order_snapshot_keeps_newer_item(sandbox: RunningSandbox) -> None:
    sandbox.put_item("ord_1", item_snapshot("it_1", status="ReadyToShip", updated_at=LATER))

    order = sandbox.put_order(
        order_snapshot("ord_1", status="CustomerCareHold", updated_at=EARLIER)
    )

    assert order["status"] == "CustomerCareHold"
    assert order["items"][0]["status"] == "ReadyToShip"
    assert order["items"][1]["status"] == "New"


def test_snapshot_keeps_refunded_amount(sandbox: RunningSandbox, api: httpx.Client) -> None:
    post(api, "/orders/ord_1/refunds", refund_body(("it_2", 5, False)), key="k-refund")

    after = sandbox.put_order(order_snapshot("ord_1", status="Cancelled", updated_at=LATER))

    assert after["status"] == "Cancelled"
    assert after["items"][1]["refundedAmount"] == 5


def test_item_of_unknown_order_is_404(sandbox: RunningSandbox) -> None:
    response = sandbox.http.put("/orders/ord_missing/items/it_1", json={"status": "New"})

    assert response.status_code == 404


def test_item_snapshot_with_other_id_is_422(sandbox: RunningSandbox) -> None:
    response = sandbox.http.put("/orders/ord_1/items/it_1", json={"id": "it_2"})

    assert response.status_code == 422
    assert response.json()["details"][0]["field"] == "id"


# Shipments


def test_shipment_missing_fields_is_422(api: httpx.Client) -> None:
    response = post(api, "/shipments", {"orderId": "ord_1"}, key="k-missing")

    assert response.status_code == 422
    assert [d["field"] for d in response.json()["details"]] == ["vendorId"]


def test_shipment_without_items_is_422(api: httpx.Client) -> None:
    response = post(api, "/shipments", shipment_body(), key="k-empty")

    assert response.status_code == 422
    assert response.json()["details"][0]["field"] == "orderItemIds"


def test_shipment_of_unknown_order_is_404(api: httpx.Client) -> None:
    body = {**shipment_body("it_1"), "orderId": "ord_missing"}

    response = post(api, "/shipments", body, key="k-unknown")

    assert response.status_code == 404
    assert response.json()["code"] == "order_not_found"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (shipment_body("it_9"), "item_not_in_order"),
        (shipment_body("it_1", vendor_id="ven_B"), "item_vendor_mismatch"),
    ],
)
def test_shipment_of_foreign_item_is_422(api: httpx.Client, body: Any, code: str) -> None:
    response = post(api, "/shipments", body, key=f"k-{code}")

    assert response.status_code == 422
    assert response.json()["code"] == code


def test_shipment_of_cancelled_item_is_422(sandbox: RunningSandbox, api: httpx.Client) -> None:
    sandbox.put_item("ord_1", item_snapshot("it_1", status="Cancelled", updated_at=LATER))

    response = post(api, "/shipments", shipment_body("it_1"), key="k-cancelled")

    assert response.status_code == 422
    assert response.json()["code"] == "item_not_shippable"


def test_item_in_two_shipments_is_409(sandbox: RunningSandbox, api: httpx.Client) -> None:
    post(api, "/shipments", shipment_body("it_1"), key="k-one")

    response = post(api, "/shipments", shipment_body("it_1", "it_2"), key="k-two")

    assert response.status_code == 409
    assert response.json()["code"] == "item_already_in_shipment"
    assert len(sandbox.effects()["shipments"]) == 1


def test_effects_use_api_field_names(sandbox: RunningSandbox, api: httpx.Client) -> None:
    shipment_id = post(api, "/shipments", shipment_body("it_1"), key="k-s").json()["shipmentId"]
    post(api, "/notes", {"resourceType": "Order", "resourceId": "ord_1", "text": "Hi"}, key="k-n")

    effects = sandbox.effects()

    assert effects["shipments"][0]["id"] == shipment_id
    assert set(effects["shipments"][0]) >= {
        "id",
        "orderId",
        "vendorId",
        "facilityId",
        "status",
        "orderItemIds",
        "packages",
        "createdAt",
    }
    assert set(effects["notes"][0]) == {"id", "resourceType", "resourceId", "text", "createdAt"}


def test_packages_of_unknown_shipment_is_404(api: httpx.Client) -> None:
    body = {"packages": [{"carrier": "UPS"}]}

    response = post(api, "/shipments/shp_missing/packages", body, key="k-pkg")

    assert response.status_code == 404


# Refunds


def test_refunds_add_up_exactly(sandbox: RunningSandbox, api: httpx.Client) -> None:
    items = [item_snapshot("it_22", price="0.10", quantity=3)]
    sandbox.put_order(order_snapshot("ord_1", items=items, updated_at=LATER))
    for index in range(3):
        body = refund_body(("it_22", 0.1, False))
        assert post(api, "/orders/ord_1/refunds", body, key=f"k-{index}").status_code == 201

    fourth = post(api, "/orders/ord_1/refunds", refund_body(("it_22", 0.01, False)), key="k-3")

    refunded = api.get("/orders/ord_1").json()["items"][0]["refundedAmount"]
    assert fourth.status_code == 422
    assert fourth.json()["code"] == "amount_exceeds_refundable"
    assert Decimal(str(refunded)) == Decimal("0.30")
    assert sandbox.state.order("ord_1").items[0].refunded_amount == Decimal("0.30")


def test_refund_with_other_order_id_is_422(api: httpx.Client) -> None:
    body = {**refund_body(("it_1", 1, False)), "orderId": "ord_2"}

    response = post(api, "/orders/ord_1/refunds", body, key="k-mismatch")

    assert response.status_code == 422
    assert response.json()["code"] == "order_id_mismatch"


def test_refund_of_unknown_item_is_422(api: httpx.Client) -> None:
    response = post(api, "/orders/ord_1/refunds", refund_body(("it_9", 1, False)), key="k-9")

    assert response.status_code == 422
    assert response.json()["code"] == "item_not_in_order"


def test_refund_over_price_is_422(api: httpx.Client) -> None:
    response = post(api, "/orders/ord_1/refunds", refund_body(("it_2", 10, False)), key="k-over")

    assert response.status_code == 422
    assert response.json()["code"] == "amount_exceeds_refundable"


def test_refund_of_string_amount_is_422(api: httpx.Client) -> None:
    response = post(api, "/orders/ord_1/refunds", refund_body(("it_2", "1", False)), key="k-str")

    assert response.status_code == 422
    assert response.json()["details"][0]["field"] == "refunds.0.amount"


def test_shipping_refund_leaves_items_alone(sandbox: RunningSandbox, api: httpx.Client) -> None:
    response = post(api, "/orders/ord_1/refunds", refund_body(("it_1", 4.9, True)), key="k-ship")

    over = post(api, "/orders/ord_1/refunds", refund_body(("it_1", 0.01, True)), key="k-again")

    assert response.status_code == 201
    assert over.status_code == 422
    assert sandbox.state.order("ord_1").items[0].refunded_amount == 0
    assert sandbox.effects()["refunds"][0]["refunds"][0]["isShippingRefund"] is True


def test_money_goes_out_as_json_numbers(api: httpx.Client) -> None:
    raw = api.get("/orders/ord_1").content

    order = json.loads(raw, parse_float=Decimal)

    assert order["items"][1]["price"] == Decimal("9.99")
    assert order["shippingPrice"] == Decimal("4.9")


# Idempotency


def test_replayed_key_returns_stored_response(sandbox: RunningSandbox, api: httpx.Client) -> None:
    first = post(api, "/shipments", shipment_body("it_1"), key="k-replay")

    second = post(api, "/shipments", shipment_body("it_1"), key="k-replay")

    assert second.status_code == 201
    assert second.json() == first.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert len(sandbox.effects()["shipments"]) == 1


def test_key_reused_with_other_body_is_422(sandbox: RunningSandbox, api: httpx.Client) -> None:
    post(api, "/shipments", shipment_body("it_1"), key="k-reuse")

    response = post(api, "/shipments", shipment_body("it_2"), key="k-reuse")

    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"
    assert len(sandbox.effects()["shipments"]) == 1


def test_server_error_is_not_stored(sandbox: RunningSandbox, api: httpx.Client) -> None:
    sandbox.fail("create_shipment", 503, count=1)
    failed = post(api, "/shipments", shipment_body("it_1"), key="k-fault")

    retried = post(api, "/shipments", shipment_body("it_1"), key="k-fault")

    assert failed.status_code == 503
    assert retried.status_code == 201


# Listing


def test_list_orders_pages_oldest_first(sandbox: RunningSandbox, api: httpx.Client) -> None:
    sandbox.put_order(order_snapshot("ord_2", updated_at=EARLIER))
    sandbox.put_order(order_snapshot("ord_3", updated_at=LATER))
    params = {"updatedSince": "2026-12-03T10:00:00Z", "pageSize": "2"}

    first = api.get("/orders", params=params).json()
    second = api.get("/orders", params={**params, "cursor": first["nextCursor"]}).json()

    assert [order["id"] for order in first["orders"]] == ["ord_1", "ord_2"]
    assert [order["id"] for order in second["orders"]] == ["ord_3"]
    assert second["nextCursor"] is None


def test_list_orders_filters_by_time(sandbox: RunningSandbox, api: httpx.Client) -> None:
    sandbox.put_order(order_snapshot("ord_2", updated_at=LATER))

    page = api.get("/orders", params={"updatedSince": "2026-12-03T10:10:00Z"}).json()

    assert [order["id"] for order in page["orders"]] == ["ord_2"]


def test_list_orders_bad_cursor_is_400(api: httpx.Client) -> None:
    response = api.get("/orders", params={"cursor": "not-a-cursor"})

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_cursor"


# Holds


def test_hold_twice_is_409(api: httpx.Client) -> None:
    post(api, "/orders/ord_1/customer-care-hold", {"reason": "Check address"}, key="k-h1")

    response = post(api, "/orders/ord_1/customer-care-hold", {"reason": "Again"}, key="k-h2")

    assert response.status_code == 409
    assert response.json()["code"] == "order_already_on_hold"


# Controls


def test_fault_lasts_its_count(sandbox: RunningSandbox, api: httpx.Client) -> None:
    sandbox.fail("get_order", 502, count=1)

    failed = api.get("/orders/ord_1")
    recovered = api.get("/orders/ord_1")

    assert failed.status_code == 502
    assert recovered.status_code == 200


def test_fault_without_count_lasts_until_cleared(
    sandbox: RunningSandbox, api: httpx.Client
) -> None:
    sandbox.fail("get_order", 500, count=None)
    statuses = [api.get("/orders/ord_1").status_code for _ in range(3)]

    sandbox.clear_faults()

    assert statuses == [500, 500, 500]
    assert api.get("/orders/ord_1").status_code == 200


def test_fault_for_unknown_operation_is_422(sandbox: RunningSandbox) -> None:
    response = sandbox.http.post("/faults", json={"operation": "delete_order", "status": 500})

    assert response.status_code == 422


def test_reset_clears_orders_and_effects(sandbox: RunningSandbox, api: httpx.Client) -> None:
    post(api, "/shipments", shipment_body("it_1"), key="k-before")

    sandbox.reset()

    assert sandbox.effects() == {"shipments": [], "refunds": [], "notes": []}
    assert api.get("/orders/ord_1").status_code == 404


# Webhooks


@pytest.fixture
def receiver() -> Iterator[tuple[str, queue.Queue[tuple[dict[str, str], bytes]]]]:
    deliveries: queue.Queue[tuple[dict[str, str], bytes]] = queue.Queue()
    failures_sent = [0]

    async def receive(request: Request) -> Response:
        deliveries.put((dict(request.headers), await request.body()))
        if request.query_params.get("fail_first") and failures_sent[0] == 0:
            failures_sent[0] += 1
            return Response(status_code=500)
        return Response(status_code=204)

    app = Starlette(routes=[Route("/hooks", receive, methods=["POST"])])
    with running_server(app) as url:
        yield f"{url}/hooks", deliveries


def test_sandbox_webhook_verifies_with_secret(
    receiver: tuple[str, queue.Queue[tuple[dict[str, str], bytes]]],
) -> None:
    url, deliveries = receiver
    secret = json.loads((FIXTURES / "secrets.json").read_text())["current"]

    with (
        running_sandbox(webhook_url=url, webhook_secret=secret) as sandbox,
        sandbox.client() as client,
    ):
        sandbox.put_order(order_snapshot("ord_1"))
        shipment_id = client.create_shipment("ord_1", "ven_A", ["it_1"], None, idempotency_key="k")
        headers, body = deliveries.get(timeout=10)

    event = Webhook(secret).verify(body, headers)
    assert headers["user-agent"] == "OrderMesh-Webhooks/1.0"
    assert event["id"] == headers["webhook-id"]
    assert event["id"].startswith("evt_")
    assert event["type"] == "shipment.created"
    assert event["data"]["shipment"]["id"] == shipment_id


def test_failed_webhook_keeps_its_id(
    receiver: tuple[str, queue.Queue[tuple[dict[str, str], bytes]]],
) -> None:
    url, deliveries = receiver
    secret = json.loads((FIXTURES / "secrets.json").read_text())["current"]

    with (
        running_sandbox(webhook_url=f"{url}?fail_first=1", webhook_secret=secret) as sandbox,
        sandbox.client() as client,
    ):
        sandbox.put_order(order_snapshot("ord_1"))
        client.create_note("ord_1", "Checked.", idempotency_key="k")
        first_headers, first_body = deliveries.get(timeout=10)
        second_headers, second_body = deliveries.get(timeout=10)

    assert second_headers["webhook-id"] == first_headers["webhook-id"]
    assert second_body == first_body
    assert json.loads(second_body)["type"] == "note.created"
