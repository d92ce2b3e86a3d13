"""``omhooks handlers``, ``omhooks send`` and ``omhooks events`` against real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from omhooks.testing import make_event

BROKEN_PLUGIN_MODULE = 'raise RuntimeError("The shop SDK is not installed.")\n'


def omhooks(*arguments: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "omhooks", *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def clean_environment(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("OMHOOKS_")}
    return {**env, **extra}


def install_broken_plugin(folder: Path) -> None:
    """Make a distribution whose omhooks.handlers entry point fails to import."""
    dist_info = folder / "broken_plugin-1.0.dist-info"
    dist_info.mkdir()
    metadata = "Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n"
    (dist_info / "METADATA").write_text(metadata)
    (dist_info / "entry_points.txt").write_text("[omhooks.handlers]\nbroken = broken_handlers\n")
    (folder / "broken_handlers.py").write_text(BROKEN_PLUGIN_MODULE)


def test_handlers_lists_builtin_and_example_handlers():
    listing = omhooks("handlers", "--json", env=clean_environment())

    described = {entry["name"]: entry for entry in json.loads(listing.stdout)["handlers"]}
    assert listing.returncode == 0, listing.stderr
    assert described["note_on_hold"]["origin"].startswith("ordermesh-hooks 0.1.0")
    assert described["note_on_hold"]["event_types"] == ["order.customer_care_hold"]
    assert described["note_on_hold"]["enabled"] is True
    assert described["ship_when_ready"]["snapshot"] is True
    assert described["flag_hold_in_support"]["origin"].startswith("omhooks-example-plugin 0.1.0")
    assert described["flag_hold_in_support"]["retry"].startswith("12 retries")
    assert described["sync_tracking_to_shop"]["retry"].startswith("default: 20 retries")
    assert described["sync_tracking_to_shop"]["required_settings"] == [
        "OMHOOKS_PLUGIN_SYNC_TRACKING_TO_SHOP_URL"
    ]
    assert described["sync_tracking_to_shop"]["enabled"] is False


def test_handlers_shows_why_a_handler_is_off():
    env = clean_environment(OMHOOKS_DISABLED_HANDLERS="note_on_hold")

    listing = omhooks("handlers", env=env)

    assert listing.returncode == 0, listing.stderr
    assert "note_on_hold (disabled by OMHOOKS_DISABLED_HANDLERS)" in listing.stdout
    assert (
        "flag_hold_in_support (disabled until OMHOOKS_PLUGIN_FLAG_HOLD_IN_SUPPORT_URL is set)"
        in listing.stdout
    )
    assert "Total: 5 handler(s), 2 enabled." in listing.stdout


def test_handlers_enables_a_configured_plugin_handler():
    env = clean_environment(OMHOOKS_PLUGIN_SYNC_TRACKING_TO_SHOP_URL="http://127.0.0.1:9")

    listing = omhooks("handlers", env=env)

    assert "sync_tracking_to_shop (enabled)" in listing.stdout


def test_handlers_lists_past_a_broken_plugin(tmp_path):
    install_broken_plugin(tmp_path)
    env = clean_environment(PYTHONPATH=str(tmp_path))

    listing = omhooks("handlers", env=env)

    assert listing.returncode == 1
    assert (
        "broken-plugin 1.0 (broken_handlers): RuntimeError: The shop SDK is not installed."
        in listing.stdout
    )
    assert "note_on_hold (enabled)" in listing.stdout
    assert "Traceback" not in listing.stderr


def test_handlers_reports_an_unimportable_handler_module():
    env = clean_environment(OMHOOKS_HANDLER_MODULES="no_such_handler_module")

    listing = omhooks("handlers", "--json", env=env)

    errors = json.loads(listing.stdout)["errors"]
    assert listing.returncode == 1
    assert errors == [
        {
            "source": "module no_such_handler_module",
            "error": "ModuleNotFoundError: No module named 'no_such_handler_module'",
        }
    ]


def test_send_template_runs_the_subscribed_handlers(omhooks_stack):
    sent = omhooks_stack.omhooks(
        "send", "order.customer_care_hold", "--order", "ord_9", "--id", "evt_cli_hold",
        "--url", omhooks_stack.receiver_url, "--sandbox-url", omhooks_stack.sandbox_url,
    )  # fmt: skip

    outcomes = omhooks_stack.wait_for_outcomes("evt_cli_hold")
    notes = omhooks_stack.effects()["notes"]
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout == "evt_cli_hold order.customer_care_hold order ord_9: 202 queued\n"
    assert outcomes == {"note_on_hold": "succeeded"}
    assert [note["resourceId"] for note in notes] == ["ord_9"]


def test_send_repeat_is_a_redelivery(omhooks_stack):
    sent = omhooks_stack.omhooks(
        "send", "order.tagged", "--id", "evt_cli_twice", "--repeat", "2", "--delay", "0.1",
        "--url", omhooks_stack.receiver_url,
    )  # fmt: skip

    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.splitlines() == [
        "evt_cli_twice order.tagged order ord_5002: 202 queued",
        "evt_cli_twice order.tagged order ord_5002: 200 duplicate",
    ]


def test_send_file_keeps_its_event(omhooks_stack, tmp_path):
    event = make_event("order.tagged", order_id="ord_file", event_id="evt_from_file")
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))

    sent = omhooks_stack.omhooks("send", str(path), "--url", omhooks_stack.receiver_url)

    outcomes = omhooks_stack.wait_for_outcomes("evt_from_file")
    entry = omhooks_stack.journal.entry("evt_from_file")
    assert sent.returncode == 0, sent.stderr
    assert outcomes == {}
    assert entry.order_id == "ord_file"


def test_send_hides_a_wrong_secret(omhooks_stack):
    wrong = "whsec_" + "d3JvbmctYnV0LXdlbGwtZm9ybWVkLXNlY3JldA=="

    sent = omhooks_stack.omhooks(
        "send", "order.tagged", "--secret", wrong, "--url", omhooks_stack.receiver_url
    )

    assert sent.returncode == 1
    assert "401 invalid_signature" in sent.stdout
    assert wrong not in sent.stdout + sent.stderr


def test_send_without_secret_fails():
    sent = omhooks("send", "order.tagged", env=clean_environment())

    assert sent.returncode == 2
    assert "set OMHOOKS_WEBHOOK_SECRETS or pass --secret" in sent.stderr


def test_send_reports_an_unreachable_receiver():
    env = clean_environment(OMHOOKS_WEBHOOK_SECRETS="whsec_c2VjcmV0")

    sent = omhooks("send", "order.tagged", "--url", "http://127.0.0.1:9/hooks", env=env)

    assert sent.returncode == 1
    assert "could not reach http://127.0.0.1:9/hooks" in sent.stdout


def test_send_unknown_template_lists_the_templates():
    sent = omhooks("send", "order.exploded", "--secret", "whsec_c2VjcmV0", env=clean_environment())

    assert sent.returncode == 2
    assert "No event template of type 'order.exploded'" in sent.stderr


@pytest.fixture
def journalled(omhooks_stack):
    """Three events: one handled, one dead-lettered, one that no handler takes."""
    fault = {"operation": "create_note", "status": 422, "count": 1}
    httpx.post(f"{omhooks_stack.sandbox_url}/_sandbox/faults", json=fault).raise_for_status()
    dead = make_event("order.customer_care_hold", order_id="ord_dead", event_id="evt_dead")
    handled = make_event("order.customer_care_hold", order_id="ord_ok", event_id="evt_ok")
    tagged = make_event("order.tagged", order_id="ord_ok", event_id="evt_tagged")
    for event in (dead, handled, tagged):
        omhooks_stack.deliver(event)
    return omhooks_stack


def events_json(stack, *filters: str) -> list[dict]:
    listed = stack.omhooks("events", "--json", *filters)
    assert listed.returncode == 0, listed.stderr
    return json.loads(listed.stdout)


EVENT_FILTERS = [
    ((), ["evt_tagged", "evt_ok", "evt_dead"]),
    (("--type", "order.tagged"), ["evt_tagged"]),
    (("--order", "ord_ok"), ["evt_tagged", "evt_ok"]),
    (("--outcome", "dead"), ["evt_dead"]),
    (("--outcome", "succeeded", "--order", "ord_ok"), ["evt_ok"]),
    (("--limit", "1"), ["evt_tagged"]),
    (("--outcome", "retrying"), []),
]


def test_events_json_has_each_handler_outcome(journalled):
    entries = events_json(journalled)

    assert entries[0]["outcomes"] == {}
    assert entries[1]["outcomes"] == {"note_on_hold": "succeeded"}
    assert entries[2]["outcomes"] == {"note_on_hold": "dead"}
    assert entries[2]["order_id"] == "ord_dead"
    assert entries[2]["event_type"] == "order.customer_care_hold"
    for filters, expected in EVENT_FILTERS:
        selected = [entry["event_id"] for entry in events_json(journalled, *filters)]
        assert selected == expected, f"omhooks events {' '.join(filters)}"


def test_events_table_shows_each_handler_outcome(journalled):
    listed = journalled.omhooks("events", "--order", "ord_dead")

    lines = listed.stdout.splitlines()
    assert listed.returncode == 0, listed.stderr
    assert lines[0].split() == ["DISPATCHED", "EVENT", "TYPE", "ORDER", "HANDLERS"]
    assert lines[1].split()[1:] == [
        "evt_dead", "order.customer_care_hold", "ord_dead", "note_on_hold", "dead",
    ]  # fmt: skip
    assert lines[-1] == "Shown: 1 of 1 matching event(s)."
