"""sync_tracking_to_shop against the running service and a fake shop."""

from __future__ import annotations

import pytest

from omhooks.testing import make_event

HANDLER = "sync_tracking_to_shop"
TRACKING_PATH = "/orders/ord_1/tracking"


@pytest.fixture
def omhooks_stack_env(omhooks_fake_service):
    return {
        "OMHOOKS_PLUGIN_SYNC_TRACKING_TO_SHOP_URL": omhooks_fake_service.url,
        "OMHOOKS_PLUGIN_SYNC_TRACKING_TO_SHOP_TOKEN": "shop-token",
    }


def shipped_with_two_packages() -> dict:
    event = make_event("shipment.shipped", order_id="ord_1")
    event["data"]["shipment"]["packages"].append(
        {"id": "pkg_2", "carrier": "UPS", "trackingNumber": "1Z999AA10123456784"}
    )
    return event


def tracking_numbers(requests) -> list[str]:
    return [request.body["trackingNumber"] for request in requests]


def test_each_package_reaches_the_shop(omhooks_stack, omhooks_fake_service):
    event = shipped_with_two_packages()

    outcomes = omhooks_stack.deliver(event)

    requests = omhooks_fake_service.requests_to(TRACKING_PATH)
    assert outcomes[HANDLER] == "succeeded"
    assert tracking_numbers(requests) == ["9400100000000000000001", "1Z999AA10123456784"]
    assert requests[0].body["shipmentId"] == "shp_1"
    assert requests[0].headers["authorization"] == "Bearer shop-token"
    assert requests[0].headers["idempotency-key"] == f"{event['id']}:{HANDLER}:tracking:pkg_1"


def test_retry_sends_only_the_failed_package(omhooks_stack, omhooks_fake_service):
    omhooks_fake_service.respond_with(TRACKING_PATH, 200, 503)

    outcomes = omhooks_stack.deliver(shipped_with_two_packages())

    requests = omhooks_fake_service.requests_to(TRACKING_PATH)
    assert outcomes[HANDLER] == "succeeded"
    assert [request.status for request in requests] == [200, 503, 200]
    assert tracking_numbers(requests) == [
        "9400100000000000000001",
        "1Z999AA10123456784",
        "1Z999AA10123456784",
    ]


def test_rejected_tracking_is_dead_at_once(omhooks_stack, omhooks_fake_service):
    omhooks_fake_service.respond_with(TRACKING_PATH, 422)

    outcomes = omhooks_stack.deliver(make_event("shipment.shipped", order_id="ord_1"))

    assert outcomes[HANDLER] == "dead"
    assert len(omhooks_fake_service.requests_to(TRACKING_PATH)) == 1


def test_package_without_tracking_number_is_not_sent(omhooks_stack, omhooks_fake_service):
    event = make_event("shipment.shipped", order_id="ord_1")
    event["data"]["shipment"]["packages"][0]["trackingNumber"] = None

    outcomes = omhooks_stack.deliver(event)

    assert outcomes[HANDLER] == "succeeded"
    assert omhooks_fake_service.requests == []
