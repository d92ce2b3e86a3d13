"""Which handlers an event type reaches: exact types, prefixes, the wildcard, disabled ones."""

from __future__ import annotations

import types

import pytest

from handlers import handler
from handlers.registry import Registry, discover
from omhooks.errors import ConfigurationError


def noop(event, ctx):
    return None


@pytest.mark.parametrize(
    ("patterns", "event_type", "expected"),
    [
        (("order.created",), "order.created", True),
        (("order.created",), "order.updated", False),
        (("order.*",), "order.created", True),
        (("order.*",), "order.tagged", True),
        (("order.*",), "order_item.status_changed", False),
        (("order.*",), "order", False),
        (("*",), "anything.at_all", True),
        (("shipment.shipped", "order.*"), "shipment.shipped", True),
    ],
)
def test_subscription_matches(patterns, event_type, expected):
    subscribed = handler(*patterns, name="h")(noop).__omhooks_handler__

    assert subscribed.subscribes_to(event_type) is expected


def make_module(**functions) -> types.ModuleType:
    module = types.ModuleType("plugin_under_test")
    for name, function in functions.items():
        setattr(module, name, function)
    return module


def test_registry_finds_every_subscribed_handler():
    def a(event, ctx): ...
    def b(event, ctx): ...
    def c(event, ctx): ...

    registry = Registry()
    registry.add_module(
        make_module(
            a=handler("order.created")(a), b=handler("order.*")(b), c=handler("shipment.*")(c)
        ),
        "test",
    )

    assert [h.name for h in registry.subscribed("order.created")] == ["a", "b"]
    assert [h.name for h in registry.subscribed("shipment.shipped")] == ["c"]
    assert registry.subscribed("order_item.status_changed") == []


def test_disabled_handler_is_not_dispatched():
    def a(event, ctx): ...

    registry = Registry(disabled={"a"})
    registry.add_module(make_module(a=handler("*")(a)), "test")

    assert registry.subscribed("order.created") == []
    assert registry.get("a") is None


def test_two_handlers_with_one_name_are_rejected():
    def first(event, ctx): ...
    def second(event, ctx): ...

    registry = Registry()
    registry.add_module(make_module(x=handler("*", name="same")(first)), "one")

    with pytest.raises(ConfigurationError, match="same"):
        registry.add_module(make_module(y=handler("*", name="same")(second)), "two")


def test_builtin_handlers_are_found_by_entry_point():
    registry = discover([], [])

    assert {"ship_when_ready", "refund_cancelled_items", "note_on_hold"} <= set(registry.handlers)
    assert registry.errors == []


def test_builtin_handlers_skip_unknown_event_types():
    registry = discover([], [])

    assert registry.subscribed("order.tagged") == []
    assert [h.name for h in registry.subscribed("order.customer_care_hold")] == ["note_on_hold"]


def test_unimportable_handler_module_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="no_such_module_here"):
        discover(["no_such_module_here"], [])
