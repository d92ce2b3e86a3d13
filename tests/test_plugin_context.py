"""The plugin interface's helpers: ctx.once, plugin settings, templates and journal reads."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta

import pytest

from handlers import HandlerContext, PermanentError, handler
from handlers.plugin import Handler
from omhooks.errors import ConfigurationError
from omhooks.sending import load_events
from omhooks.settings import Settings
from omhooks.templates import make_event, retarget_order, template_names
from ordermesh.events import Event
from workers.journal import Journal


def subscribed(name: str = "tell_shop", **options) -> Handler:
    def function(event, ctx):
        return None

    return handler("shipment.shipped", name=name, **options)(function).__omhooks_handler__


def context(redis_client, namespace: str, event: Event, name: str = "tell_shop") -> HandlerContext:
    return HandlerContext(
        event=event,
        handler=subscribed(name),
        api=None,
        log=logging.LoggerAdapter(logging.getLogger("test"), {}),
        settings=Settings(namespace=namespace),
        redis=redis_client,
    )


@pytest.fixture
def event() -> Event:
    return Event.model_validate(make_event("shipment.shipped", order_id="ord_1"))


class Effect:
    """Counts its calls and returns a JSON result."""

    def __init__(self, result=None):
        self.calls = 0
        self.result = {"id": "trk_1"} if result is None else result

    def __call__(self):
        self.calls += 1
        return self.result


def test_once_runs_the_effect_on_the_first_run(redis_client, namespace, event):
    effect = Effect()

    result = context(redis_client, namespace, event).once("tracking", effect)

    assert result == {"id": "trk_1"}
    assert effect.calls == 1


def test_once_returns_the_stored_result_on_a_retry(redis_client, namespace, event):
    effect = Effect()
    context(redis_client, namespace, event).once("tracking", effect)

    repeated = context(redis_client, namespace, event).once("tracking", effect)

    assert repeated == {"id": "trk_1"}
    assert effect.calls == 1


def test_once_runs_each_step_event_and_handler_apart(redis_client, namespace, event):
    effect = Effect()
    other_event = Event.model_validate(make_event("shipment.shipped", order_id="ord_1"))
    context(redis_client, namespace, event).once("tracking", effect)

    context(redis_client, namespace, event).once("email", effect)
    context(redis_client, namespace, other_event).once("tracking", effect)
    context(redis_client, namespace, event, name="other_handler").once("tracking", effect)

    assert effect.calls == 4


def test_once_records_nothing_when_the_effect_fails(redis_client, namespace, event):
    def failing():
        raise TimeoutError("The shop timed out.")

    with pytest.raises(TimeoutError):
        context(redis_client, namespace, event).once("tracking", failing)
    effect = Effect()
    context(redis_client, namespace, event).once("tracking", effect)

    assert effect.calls == 1


def test_once_stores_under_the_namespace_with_a_ttl(redis_client, namespace, event):
    context(redis_client, namespace, event).once("tracking", Effect())

    key = f"{namespace}:once:tell_shop:{event.id}:tracking"
    assert json.loads(redis_client.get(key)) == {"id": "trk_1"}
    assert redis_client.ttl(key) > 0


def test_once_rejects_a_result_that_is_not_json(redis_client, namespace, event):
    effect = Effect(result=datetime.now(UTC))

    with pytest.raises(PermanentError, match="not JSON"):
        context(redis_client, namespace, event).once("tracking", effect)

    assert redis_client.keys(f"{namespace}:once:*") == []


def test_plugin_settings_come_from_the_handler_prefix():
    environ = {
        "OMHOOKS_PLUGIN_TELL_SHOP_URL": "http://127.0.0.1:9000",
        "OMHOOKS_PLUGIN_TELL_SHOP_TIMEOUT_SECONDS": "3",
        "OMHOOKS_PLUGIN_OTHER_URL": "http://127.0.0.1:9001",
        "OMHOOKS_PLUGIN_TELL_SHOP_": "no key",
    }

    settings = subscribed().plugin_settings(environ)

    assert settings == {"url": "http://127.0.0.1:9000", "timeout_seconds": "3"}


def test_settings_prefix_turns_other_characters_into_underscores():
    assert subscribed("shop-sync.v2").settings_prefix == "OMHOOKS_PLUGIN_SHOP_SYNC_V2_"


def test_context_plugin_settings_read_the_environment(redis_client, namespace, event, monkeypatch):
    monkeypatch.setenv("OMHOOKS_PLUGIN_TELL_SHOP_TOKEN", "shop-token")

    settings = context(redis_client, namespace, event).plugin_settings

    assert settings == {"token": "shop-token"}


@pytest.mark.parametrize(("value", "expected"), [(None, False), ("", False), ("http://x", True)])
def test_required_setting_turns_the_subscription_on(monkeypatch, value, expected):
    monkeypatch.delenv("OMHOOKS_PLUGIN_TELL_SHOP_URL", raising=False)
    if value is not None:
        monkeypatch.setenv("OMHOOKS_PLUGIN_TELL_SHOP_URL", value)

    needs_url = subscribed(required_settings=("url",))

    assert needs_url.subscribes_to("shipment.shipped") is expected


def test_missing_settings_name_the_variables():
    needs_two = subscribed(required_settings=("url", "token"))

    missing = needs_two.missing_settings({"OMHOOKS_PLUGIN_TELL_SHOP_URL": "http://x"})

    assert missing == ["OMHOOKS_PLUGIN_TELL_SHOP_TOKEN"]


def test_template_has_fresh_id_and_time():
    first = make_event("order.cancelled")
    second = make_event("order.cancelled")

    created = datetime.fromisoformat(first["createdAt"].replace("Z", "+00:00"))
    assert first["id"] != second["id"]
    assert first["id"].startswith("evt_")
    assert abs(datetime.now(UTC) - created) < timedelta(minutes=1)
    assert first["type"] == "order.cancelled"


def test_template_retargets_every_mention_of_the_order():
    event = make_event("order.cancelled", order_id="ord_1")

    text = json.dumps(event)
    assert "ord_5002" not in text
    assert event["data"]["order"]["id"] == "ord_1"
    assert {item["orderId"] for item in event["data"]["order"]["items"]} == {"ord_1"}


def test_retarget_leaves_an_event_without_order_alone():
    event = {"id": "evt_1", "type": "merchant.updated", "data": {"name": "ord_5001"}}

    assert retarget_order(event, "ord_1") == event


def test_unknown_template_names_the_templates():
    with pytest.raises(ConfigurationError, match=r"shipment\.shipped"):
        make_event("order.exploded")


def test_templates_cover_the_lifecycle_types():
    assert "order.customer_care_hold" in template_names()
    assert "order_item.status_changed" in template_names()


def test_event_file_with_several_events_rejects_one_id(tmp_path):
    path = tmp_path / "events.json"
    path.write_text(json.dumps([make_event("order.created"), make_event("order.cancelled")]))

    with pytest.raises(ConfigurationError, match="--id needs exactly one event"):
        load_events(str(path), event_id="evt_1")


def test_event_file_events_are_retargeted(tmp_path):
    path = tmp_path / "event.json"
    path.write_text(json.dumps(make_event("order.created")))

    events = load_events(str(path), order_id="ord_3", event_id="evt_file")

    assert events[0]["id"] == "evt_file"
    assert events[0]["data"]["order"]["id"] == "ord_3"


def test_journal_lists_recent_events_newest_first(redis_client, namespace):
    journal = Journal(redis_client, namespace=namespace, ttl_seconds=60)
    journal.record_event("evt_b", "order.tagged", None, [])
    journal.record_event("evt_a", "order.created", "ord_1", ["ship_when_ready"])
    journal.set_outcome("evt_a", "ship_when_ready", "succeeded")
    # Dispatch times a second apart, so the order cannot come from equal scores.
    redis_client.zadd(f"{namespace}:events", {"evt_b": time.time() - 1, "evt_a": time.time()})

    entries = journal.recent()

    assert [entry.event_id for entry in entries] == ["evt_a", "evt_b"]
    assert entries[0].outcomes == {"ship_when_ready": "succeeded"}
    assert entries[1].order_id is None
    assert [entry.event_id for entry in journal.recent(limit=1)] == ["evt_a"]
    assert journal.recent(limit=0) == []


def test_journal_entry_is_final_once_every_outcome_is(redis_client, namespace):
    journal = Journal(redis_client, namespace=namespace, ttl_seconds=60)
    journal.record_event("evt_a", "order.created", "ord_1", ["a", "b"])
    journal.set_outcome("evt_a", "a", "succeeded")

    before = journal.entry("evt_a")
    journal.set_outcome("evt_a", "b", "dead")
    after = journal.entry("evt_a")

    assert before is not None
    assert before.is_final is False
    assert after is not None
    assert after.is_final is True
    assert journal.entry("evt_unknown") is None


def test_missing_event_file_is_not_a_template(tmp_path):
    missing = tmp_path / "missing.json"

    with pytest.raises(ConfigurationError, match="not found"):
        load_events(str(missing))
