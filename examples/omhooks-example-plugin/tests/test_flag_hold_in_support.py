"""flag_hold_in_support against the running service and a fake support tool."""

from __future__ import annotations

import pytest

from omhooks.testing import make_event

HANDLER = "flag_hold_in_support"


@pytest.fixture
def omhooks_stack_env(omhooks_fake_service):
    return {"OMHOOKS_PLUGIN_FLAG_HOLD_IN_SUPPORT_URL": omhooks_fake_service.url}


def test_hold_opens_one_ticket(omhooks_stack, omhooks_fake_service):
    event = make_event("order.customer_care_hold", order_id="ord_7")

    outcomes = omhooks_stack.deliver(event)

    tickets = omhooks_fake_service.requests_to("/tickets")
    assert outcomes[HANDLER] == "succeeded"
    assert len(tickets) == 1
    assert tickets[0].body["orderId"] == "ord_7"
    assert tickets[0].body["reason"] == "Address could not be verified"
    assert tickets[0].body["subject"] == "Order #1042 is on customer care hold"
    assert "authorization" not in tickets[0].headers


def test_retried_ticket_keeps_its_idempotency_key(omhooks_stack, omhooks_fake_service):
    omhooks_fake_service.respond_with("/tickets", 503)
    event = make_event("order.customer_care_hold", order_id="ord_7")

    outcomes = omhooks_stack.deliver(event)

    tickets = omhooks_fake_service.requests_to("/tickets")
    keys = {ticket.headers["idempotency-key"] for ticket in tickets}
    assert outcomes[HANDLER] == "succeeded"
    assert [ticket.status for ticket in tickets] == [503, 200]
    assert keys == {f"{event['id']}:{HANDLER}:ticket"}


def test_redelivered_hold_opens_no_second_ticket(omhooks_stack, omhooks_fake_service):
    event = make_event("order.customer_care_hold", order_id="ord_7")
    omhooks_stack.deliver(event)

    outcomes = omhooks_stack.deliver(event)

    assert outcomes[HANDLER] == "succeeded"
    assert len(omhooks_fake_service.requests_to("/tickets")) == 1
