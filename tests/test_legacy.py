"""Legacy deliveries: unsigned order snapshots on POST /hooks/legacy/<token>?orderid=<id>."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator

import httpx
import pytest
from conftest import FIXTURES, load_fixture
from redis import Redis
from test_accounts import queued_metas
from test_receiver import queued_bodies

from omhooks.errors import ConfigurationError
from omhooks.settings import Settings
from ordermesh.events import Event
from ordermesh.sandbox.testing import running_server
from receiver.app import create_app
from receiver.legacy import legacy_event_id
from receiver.legacy_changes import derived_event_id, last_snapshot_key
from workers.queues import body_key

TOKEN = "legacy-token-0123456789abcdefghijklmnop"
ORDER_ID = "1234"
SNAPSHOT = (FIXTURES / "legacy-order-snapshot.json").read_bytes()
JSON = {"content-type": "application/json"}


def legacy_url(order_id: str = ORDER_ID, token: str = TOKEN) -> str:
    return f"/hooks/legacy/{token}?orderid={order_id}"


def queue_length(redis: Redis, namespace: str) -> int:
    return len(queued_bodies(redis, namespace))


def queued_events(redis: Redis, namespace: str) -> list[dict]:
    return [json.loads(body) for body in queued_bodies(redis, namespace)]


def queued_types(redis: Redis, namespace: str) -> list[str]:
    return [event["type"] for event in queued_events(redis, namespace)]


def snapshot_with(*, statuses: list[str], tracking: list[str] | None = None) -> bytes:
    """Return the fixture snapshot with the given item statuses and tracking numbers."""
    snapshot = load_fixture("legacy-order-snapshot.json")
    for index, status in enumerate(statuses):
        snapshot["Items"][index]["Status"] = status
    for index, number in enumerate(tracking or []):
        snapshot["Items"][index]["TrackingNumber"] = number
    return json.dumps(snapshot).encode()


@pytest.fixture
def settings(redis_url: str, namespace: str, secrets: dict[str, str]) -> Settings:
    return Settings(
        redis_url=redis_url,
        namespace=namespace,
        webhook_secrets=[secrets["current"]],
        legacy_token=TOKEN,
        max_body_bytes=4096,
        redis_durability="warn",
    )


@pytest.fixture
def receiver(settings: Settings) -> Iterator[httpx.Client]:
    with running_server(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        yield client


def test_snapshot_is_queued_as_order_snapshot(receiver, redis_client, namespace):
    response = receiver.post(legacy_url(), content=SNAPSHOT, headers=JSON)

    assert response.status_code == 202
    event_id = response.json()["id"]
    assert event_id == legacy_event_id(ORDER_ID, SNAPSHOT)
    assert event_id.startswith("snap_")
    assert len(event_id) == len("snap_") + 32
    queued = json.loads(redis_client.get(body_key(namespace, event_id)))
    assert queued["id"] == event_id
    assert queued["type"] == "order.snapshot"
    assert queued["createdAt"].endswith("Z")
    assert queued["data"]["legacy"] == load_fixture("legacy-order-snapshot.json")


def test_snapshot_order_has_api_shape(receiver, redis_client, namespace):
    response = receiver.post(legacy_url(), content=SNAPSHOT, headers=JSON)

    queued = json.loads(redis_client.get(body_key(namespace, response.json()["id"])))
    order = queued["data"]["order"]
    assert order["id"] == ORDER_ID
    assert order["externalId"] == "Shop7-5001"
    assert "status" not in order
    assert order["items"] == [
        {
            "id": "1234-0",
            "sku": "TEE-BLK-M",
            "name": "T-Shirts",
            "quantity": 2,
            "status": "InProduction",
            "price": 12.5,
            "trackingNumber": "",
        },
        {
            "id": "1234-1",
            "sku": "MUG-11OZ",
            "name": "Mugs",
            "quantity": 1,
            "status": "Shipped",
            "price": 9.99,
            "trackingNumber": "9400100000000000000001",
        },
    ]
    assert order["shippingAddress"]["firstName"] == "Alex"
    assert order["shippingAddress"]["postalCode"] == "62701"
    assert order["shippingAddress"]["countryCode"] == "US"


def test_snapshot_event_parses_for_handlers(receiver, redis_client, namespace):
    response = receiver.post(legacy_url(), content=SNAPSHOT, headers=JSON)

    event = Event.model_validate_json(redis_client.get(body_key(namespace, response.json()["id"])))
    assert event.order is not None
    assert event.order.id == ORDER_ID
    assert [item.sku for item in event.order.items] == ["TEE-BLK-M", "MUG-11OZ"]


def test_snapshot_meta_names_order_and_source(receiver, redis_client, namespace):
    receiver.post(legacy_url(), content=SNAPSHOT, headers=JSON)

    meta = queued_metas(redis_client, namespace)[0]
    assert meta["type"] == "order.snapshot"
    assert meta["order_id"] == ORDER_ID
    assert meta["source"] == "legacy"


def test_item_with_id_keeps_it(receiver, redis_client, namespace):
    snapshot = {"NiceId": "N-1", "Status": "New", "Items": [{"Id": 77, "Sku": "A"}]}

    response = receiver.post(legacy_url(), json=snapshot)

    assert response.status_code == 202
    queued = json.loads(redis_client.get(body_key(namespace, response.json()["id"])))
    assert queued["data"]["order"]["status"] == "New"
    assert queued["data"]["order"]["items"] == [{"id": "77", "sku": "A"}]


def test_identical_redelivery_is_unchanged(receiver, redis_client, namespace):
    first = receiver.post(legacy_url(), content=SNAPSHOT, headers=JSON)
    second = receiver.post(legacy_url(), content=SNAPSHOT, headers=JSON)

    assert first.status_code == 202
    assert second.status_code == 200
    assert second.json() == {"status": "unchanged"}
    assert queue_length(redis_client, namespace) == 1


def test_redelivery_after_lost_store_is_duplicate(receiver, redis_client, namespace):
    first = receiver.post(legacy_url(), content=SNAPSHOT, headers=JSON)
    # As if Redis had failed after queueing but before storing the last snapshot.
    redis_client.delete(last_snapshot_key(namespace, ORDER_ID))

    second = receiver.post(legacy_url(), content=SNAPSHOT, headers=JSON)

    assert second.status_code == 200
    assert second.json() == {"status": "duplicate", "id": first.json()["id"]}
    assert queue_length(redis_client, namespace) == 1


def test_changed_snapshot_gets_new_id(receiver, redis_client, namespace):
    changed = SNAPSHOT.replace(b'"InProduction"', b'"ReadyToShip"')

    first = receiver.post(legacy_url(), content=SNAPSHOT, headers=JSON)
    second = receiver.post(legacy_url(), content=changed, headers=JSON)

    assert second.status_code == 202
    assert second.json()["id"] != first.json()["id"]
    assert queued_types(redis_client, namespace).count("order.snapshot") == 2


def test_same_body_other_order_gets_new_id(receiver, redis_client, namespace):
    first = receiver.post(legacy_url("1234"), content=SNAPSHOT, headers=JSON)
    second = receiver.post(legacy_url("1235"), content=SNAPSHOT, headers=JSON)

    assert second.status_code == 202
    assert second.json()["id"] != first.json()["id"]


def test_token_in_query_is_accepted(receiver, redis_client, namespace):
    response = receiver.post(
        f"/hooks/legacy?token={TOKEN}&orderid={ORDER_ID}", content=SNAPSHOT, headers=JSON
    )

    assert response.status_code == 202
    assert queue_length(redis_client, namespace) == 1


def test_gzip_snapshot_is_queued(receiver, redis_client, namespace):
    headers = {**JSON, "content-encoding": "gzip"}

    response = receiver.post(legacy_url(), content=gzip.compress(SNAPSHOT), headers=headers)

    assert response.status_code == 202
    assert response.json()["id"] == legacy_event_id(ORDER_ID, SNAPSHOT)


@pytest.mark.parametrize(
    "url",
    [
        legacy_url(token=TOKEN[:-1] + "X"),
        legacy_url(token=TOKEN + "X"),
        legacy_url(token="é" * 40),
        f"/hooks/legacy?orderid={ORDER_ID}",
        f"/hooks/legacy?token=&orderid={ORDER_ID}",
        f"/hooks/legacy?token=wrong&orderid={ORDER_ID}",
    ],
)
def test_wrong_token_gets_401(receiver, redis_client, namespace, url):
    response = receiver.post(url, content=SNAPSHOT, headers=JSON)

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_token"
    assert queue_length(redis_client, namespace) == 0
    assert redis_client.keys(f"{namespace}:seen:*") == []


@pytest.mark.parametrize(
    ("url", "code"),
    [
        (f"/hooks/legacy/{TOKEN}", "missing_order_id"),
        (f"/hooks/legacy/{TOKEN}?orderid=", "missing_order_id"),
        (f"/hooks/legacy/{TOKEN}?orderid={'9' * 256}", "invalid_order_id"),
        (f"/hooks/legacy/{TOKEN}?orderid=12%0A34", "invalid_order_id"),
    ],
)
def test_bad_order_id_gets_400(receiver, redis_client, namespace, url, code):
    response = receiver.post(url, content=SNAPSHOT, headers=JSON)

    assert response.status_code == 400
    assert response.json()["code"] == code
    assert queue_length(redis_client, namespace) == 0


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "malformed_json"),
        (b"[1, 2]", "invalid_snapshot"),
        (b'"order"', "invalid_snapshot"),
        (b'{"Items": {"Sku": "A"}}', "invalid_snapshot"),
        (b'{"Items": ["A"]}', "invalid_snapshot"),
        (b'{"Items": [{"Price": 3}]}', "invalid_snapshot"),
        (b'{"Items": [{"Quantity": "two"}]}', "invalid_snapshot"),
        (b'{"ShipToAddress": "1 Sample Street"}', "invalid_snapshot"),
        (b'{"Id": 1, "Id": 2}', "duplicate_keys"),
    ],
)
def test_invalid_snapshot_gets_400(receiver, redis_client, namespace, body, code):
    response = receiver.post(legacy_url(), content=body, headers=JSON)

    assert response.status_code == 400
    assert response.json()["code"] == code
    assert queue_length(redis_client, namespace) == 0


def test_oversized_snapshot_gets_413(receiver, redis_client, namespace):
    body = json.dumps({"NiceId": "x" * 5000}).encode()

    response = receiver.post(legacy_url(), content=body, headers=JSON)

    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert queue_length(redis_client, namespace) == 0


def test_snapshot_without_json_type_gets_415(receiver, redis_client, namespace):
    response = receiver.post(legacy_url(), content=SNAPSHOT, headers={"content-type": "text/plain"})

    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"
    assert queue_length(redis_client, namespace) == 0


def test_unset_token_turns_route_off(redis_url, namespace, secrets, redis_client):
    settings = Settings(
        redis_url=redis_url,
        namespace=namespace,
        webhook_secrets=[secrets["current"]],
        redis_durability="warn",
    )

    with running_server(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        by_path = client.post(legacy_url(), content=SNAPSHOT, headers=JSON)
        by_query = client.post(f"/hooks/legacy?orderid={ORDER_ID}", content=SNAPSHOT, headers=JSON)

    assert by_path.status_code == 404
    assert by_path.json()["code"] == "not_found"
    assert by_query.status_code == 404
    assert by_query.json()["code"] == "not_found"
    assert queue_length(redis_client, namespace) == 0


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ("short-token-0123456789", "at least 32"),
        ("a" * 31, "at least 32"),
        ("token with spaces/and/slashes-0123456789", "only A-Z"),
    ],
)
def test_invalid_token_setting_stops_receiver(redis_url, namespace, secrets, token, problem):
    settings = Settings(
        redis_url=redis_url,
        namespace=namespace,
        webhook_secrets=[secrets["current"]],
        legacy_token=token,
    )

    with pytest.raises(ConfigurationError, match=problem) as raised:
        create_app(settings)

    assert "OMHOOKS_LEGACY_TOKEN" in str(raised.value)
    assert token not in str(raised.value)


def test_token_of_32_characters_is_accepted(redis_url, namespace, secrets):
    settings = Settings(
        redis_url=redis_url,
        namespace=namespace,
        webhook_secrets=[secrets["current"]],
        legacy_token="a" * 32,
    )

    assert create_app(settings).state.legacy_token == "a" * 32


def test_token_stays_out_of_repr_and_metrics(receiver, settings):
    receiver.post(legacy_url(token="wrong"), content=SNAPSHOT, headers=JSON)

    metrics = receiver.get("/metrics").text

    assert 'code="invalid_token"' in metrics
    assert TOKEN not in metrics
    assert TOKEN not in repr(settings)


def test_first_snapshot_queues_only_snapshot(receiver, redis_client, namespace, settings):
    response = receiver.post(legacy_url(), content=SNAPSHOT, headers=JSON)

    assert response.status_code == 202
    assert queued_types(redis_client, namespace) == ["order.snapshot"]
    last_key = last_snapshot_key(namespace, ORDER_ID)
    stored = json.loads(redis_client.get(last_key))
    assert stored == queued_events(redis_client, namespace)[0]["data"]["order"]
    assert 0 < redis_client.ttl(last_key) <= settings.dedup_ttl_seconds


def test_status_change_queues_item_event(receiver, redis_client, namespace):
    changed = snapshot_with(statuses=["ReadyToShip", "Shipped"])
    receiver.post(legacy_url(), content=SNAPSHOT, headers=JSON)

    response = receiver.post(legacy_url(), content=changed, headers=JSON)

    assert response.status_code == 202
    events = queued_events(redis_client, namespace)
    assert [event["type"] for event in events] == [
        "order.snapshot",
        "order.snapshot",
        "order_item.status_changed",
    ]
    derived = events[2]
    assert derived["id"] == derived_event_id(
        ORDER_ID, "order_item.status_changed", "1234-0", "ReadyToShip"
    )
    assert derived["id"].startswith("snapd_")
    assert derived["createdAt"] == events[1]["createdAt"]
    assert derived["data"]["orderId"] == ORDER_ID
    assert derived["data"]["previousStatus"] == "InProduction"
    assert derived["data"]["item"] == events[1]["data"]["order"]["items"][0]
    meta = queued_metas(redis_client, namespace)[2]
    assert meta["type"] == "order_item.status_changed"
    assert meta["order_id"] == ORDER_ID
    assert meta["source"] == "legacy"
    item_event = Event.model_validate(derived)
    assert item_event.item is not None
    assert item_event.item.status == "ReadyToShip"


def test_redelivered_change_queues_nothing_new(receiver, redis_client, namespace):
    changed = snapshot_with(statuses=["ReadyToShip", "Shipped"])
    receiver.post(legacy_url(), content=SNAPSHOT, headers=JSON)
    receiver.post(legacy_url(), content=changed, headers=JSON)
    # As if storing the last snapshot failed after the events were queued, and the sender retried.
    first_order = queued_events(redis_client, namespace)[0]["data"]["order"]
    redis_client.set(last_snapshot_key(namespace, ORDER_ID), json.dumps(first_order))

    response = receiver.post(legacy_url(), content=changed, headers=JSON)

    assert response.status_code == 200
    assert response.json()["status"] == "duplicate"
    assert queue_length(redis_client, namespace) == 3


def test_identical_change_is_unchanged(receiver, redis_client, namespace):
    changed = snapshot_with(statuses=["ReadyToShip", "Shipped"])
    receiver.post(legacy_url(), content=SNAPSHOT, headers=JSON)
    receiver.post(legacy_url(), content=changed, headers=JSON)

    response = receiver.post(legacy_url(), content=changed, headers=JSON)

    assert response.status_code == 200
    assert response.json() == {"status": "unchanged"}
    assert queue_length(redis_client, namespace) == 3


def test_all_items_cancelled_queues_order_cancelled(receiver, redis_client, namespace):
    cancelled = snapshot_with(statuses=["Cancelled", "Cancelled"])
    receiver.post(legacy_url(), content=SNAPSHOT, headers=JSON)

    response = receiver.post(legacy_url(), content=cancelled, headers=JSON)

    assert response.status_code == 202
    events = queued_events(redis_client, namespace)
    assert [event["type"] for event in events] == [
        "order.snapshot",
        "order.snapshot",
        "order_item.status_changed",
        "order_item.status_changed",
        "order.cancelled",
    ]
    cancelled_event = events[-1]
    assert cancelled_event["data"]["order"] == events[1]["data"]["order"]
    assert cancelled_event["data"]["cancelledItemIds"] == ["1234-0", "1234-1"]
    assert cancelled_event["data"]["reason"] == "All items cancelled"
    assert cancelled_event["id"] == derived_event_id(ORDER_ID, "order.cancelled", "", "Cancelled")


def test_cancelled_order_is_not_cancelled_again(receiver, redis_client, namespace):
    cancelled = snapshot_with(statuses=["Cancelled", "Cancelled"])
    retracked = snapshot_with(statuses=["Cancelled", "Cancelled"], tracking=["1Z999"])
    receiver.post(legacy_url(), content=SNAPSHOT, headers=JSON)
    receiver.post(legacy_url(), content=cancelled, headers=JSON)

    receiver.post(legacy_url(), content=retracked, headers=JSON)

    assert queued_types(redis_client, namespace).count("order.cancelled") == 1


def test_tracking_number_added_queues_event(receiver, redis_client, namespace):
    tracked = snapshot_with(statuses=["InProduction", "Shipped"], tracking=["1Z999"])
    receiver.post(legacy_url(), content=SNAPSHOT, headers=JSON)

    response = receiver.post(legacy_url(), content=tracked, headers=JSON)

    assert response.status_code == 202
    events = queued_events(redis_client, namespace)
    assert [event["type"] for event in events] == [
        "order.snapshot",
        "order.snapshot",
        "order_item.tracking_added",
    ]
    derived = events[2]
    assert derived["id"] == derived_event_id(
        ORDER_ID, "order_item.tracking_added", "1234-0", "1Z999"
    )
    assert derived["data"]["orderId"] == ORDER_ID
    assert derived["data"]["trackingNumber"] == "1Z999"
    assert derived["data"]["item"]["trackingNumber"] == "1Z999"


def test_changed_tracking_number_queues_nothing(receiver, redis_client, namespace):
    retracked = snapshot_with(statuses=["InProduction", "Shipped"], tracking=["", "1Z000"])
    receiver.post(legacy_url(), content=SNAPSHOT, headers=JSON)

    receiver.post(legacy_url(), content=retracked, headers=JSON)

    assert queued_types(redis_client, namespace) == ["order.snapshot", "order.snapshot"]


def test_new_item_queues_no_status_change(receiver, redis_client, namespace):
    first = {"Items": [{"Id": "a", "Status": "New"}]}
    second = {"Items": [{"Id": "a", "Status": "New"}, {"Id": "b", "Status": "Cancelled"}]}
    receiver.post(legacy_url(), json=first)

    response = receiver.post(legacy_url(), json=second)

    assert response.status_code == 202
    assert queued_types(redis_client, namespace) == ["order.snapshot", "order.snapshot"]
