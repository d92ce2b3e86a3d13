"""Dead letters: what they keep, how operators select, replay and purge them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from dramatiq.middleware import TimeLimitExceeded
from test_end_to_end import (
    EXPECTED_REFUNDS,
    EXPECTED_SHIPMENTS,
    add_fault,
    deliver,
    effects,
    summarise,
)

from handlers import handler
from handlers.registry import Registry
from omhooks.cli import main
from omhooks.dlq_cli import parse_duration
from omhooks.lifecycle import load_lifecycle
from ordermesh.privacy import HIDDEN, redact
from workers.deadletters import (
    DeadLetter,
    DeadLetterStore,
    build_dead_letter,
    error_message,
    normalise_message,
)
from workers.journal import Journal
from workers.progress import Progress
from workers.replay import Replayer, Selection


def dead_letter(entry_id: str = "a" * 32, **fields: Any) -> DeadLetter:
    values: dict[str, Any] = {
        "id": entry_id,
        "handler": "ship_when_ready",
        "event_id": "evt_1",
        "event_type": "order.updated",
        "order_id": "ord_1",
        "body": json.dumps({"id": "evt_1", "type": "order.updated"}),
        "attempts": 3,
        "first_failed_at": time.time() - 60,
        "last_failed_at": time.time(),
        "error_type": "ApiTransientError",
        "error_message": "POST /shipments answered 503.",
        "traceback": "",
        "permanent": False,
        "event_created_at": "2026-12-03T10:00:00.000Z",
    }
    values.update(fields)
    return DeadLetter(**values)


def omhooks(stack, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "omhooks", *arguments],
        env=stack.environment(),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("30m", 1800), ("2h", 7200), ("3d", 259200), ("1w", 604800)]
)
def test_durations_parse(text, seconds):
    assert parse_duration(text) == seconds


def test_same_failure_with_other_values_shares_a_group():
    first = dead_letter(error_message="POST /orders/ord_1/refunds answered 503: 'busy'")
    second = dead_letter(error_message="POST /orders/ord_77/refunds answered 503: 'down'")
    other = dead_letter(error_message="POST /notes answered 422.")

    assert first.fingerprint == second.fingerprint
    assert first.fingerprint != other.fingerprint
    assert normalise_message("order 'ord_1' answered 503") == "order '…' answered #"


def test_selection_filters_combine():
    entries = [
        dead_letter("a" * 32, handler="ship_when_ready", order_id="ord_1"),
        dead_letter("b" * 32, handler="note_on_hold", order_id="ord_1"),
        dead_letter("c" * 32, handler="note_on_hold", order_id="ord_2", error_message="gone"),
        dead_letter(
            "d" * 32, handler="note_on_hold", order_id="ord_3", last_failed_at=time.time() - 7200
        ),
    ]

    assert [e.id[0] for e in Selection(handler="note_on_hold").pick(entries)] == ["b", "c", "d"]
    assert [e.id[0] for e in Selection(order_id="ord_1").pick(entries)] == ["a", "b"]
    assert [e.id[0] for e in Selection(error="GONE").pick(entries)] == ["c"]
    assert [e.id[0] for e in Selection(since_seconds=3600).pick(entries)] == ["a", "b", "c"]
    assert [e.id[0] for e in Selection(ids=("bbbb",)).pick(entries)] == ["b"]
    assert Selection(ids=("zzzz",)).unmatched_ids([]) == ["zzzz"]
    assert Selection().is_empty()


def test_redact_hides_personal_data_only():
    event = load_lifecycle()["events"][0]

    hidden = redact(event)

    assert hidden["data"]["order"]["shippingAddress"] == HIDDEN
    assert hidden["data"]["order"]["items"][0]["sku"] == "TEE-BLK-M"
    assert "alex@example.com" not in json.dumps(hidden)


def snapshot_registry() -> Registry:
    def ship_when_ready(event, ctx): ...

    registry = Registry()
    registry.add(handler("order.*", snapshot=True)(ship_when_ready).__omhooks_handler__)
    return registry


def make_replayer(redis_client, namespace) -> tuple[Replayer, DeadLetterStore, Progress, Journal]:
    store = DeadLetterStore(redis_client, namespace=namespace, retention_seconds=3600)
    progress = Progress(redis_client, namespace=namespace, ttl_seconds=3600)
    journal = Journal(redis_client, namespace=namespace, ttl_seconds=3600)
    replayer = Replayer(
        redis_client,
        store,
        snapshot_registry(),
        namespace=namespace,
        body_ttl_seconds=3600,
        progress=progress,
        journal=journal,
    )
    return replayer, store, progress, journal


def test_snapshot_dead_letter_is_superseded_by_a_newer_event(redis_client, namespace):
    replayer, store, progress, _ = make_replayer(redis_client, namespace)
    entry = dead_letter()
    store.add(entry)
    progress.advance("ship_when_ready", "ord_1", datetime(2026, 12, 3, 11, 0, tzinfo=UTC))

    outcome = replayer.replay([entry], rate_per_second=0, dry_run=False)

    assert outcome.superseded == [entry.id]
    assert outcome.replayed == []
    assert store.get(entry.id) is None


def test_dead_letter_is_already_done_when_journal_shows_success(redis_client, namespace):
    replayer, store, _, journal = make_replayer(redis_client, namespace)
    entry = dead_letter()
    store.add(entry)
    journal.record_event("evt_1", "order.updated", "ord_1", ["ship_when_ready"])
    journal.set_outcome("evt_1", "ship_when_ready", "succeeded")

    outcome = replayer.replay([entry], rate_per_second=0, dry_run=True)

    assert outcome.already_done == [entry.id]
    assert store.get(entry.id) is not None


def test_replay_queues_the_run_once_and_removes_the_dead_letter(redis_client, namespace):
    replayer, store, _, _ = make_replayer(redis_client, namespace)
    entry = dead_letter()
    store.add(entry)

    first = replayer.replay([entry], rate_per_second=0, dry_run=False)
    second = replayer.replay([entry], rate_per_second=0, dry_run=False)

    assert first.replayed == [entry.id]
    assert second.missing == [entry.id]
    assert store.get(entry.id) is None
    assert redis_client.llen(f"{namespace}:handler.ship_when_ready") == 1


def test_outage_leaves_dead_letters_and_replay_makes_missing_effects(stack, secrets):
    add_fault(stack, "add_refund", 503)
    add_fault(stack, "create_note", 503)

    deliver(stack, secrets["current"], load_lifecycle()["deliveryOrder"])
    stack.wait_until_drained()
    listed = json.loads(omhooks(stack, "dlq", "list", "--json").stdout)
    httpx.delete(f"{stack.sandbox_url}/_sandbox/faults").raise_for_status()
    replay = omhooks(stack, "dlq", "replay", "--all", "--reason", "API is back")
    stack.wait_until_drained()
    after_replay = summarise(effects(stack))
    again = omhooks(stack, "dlq", "replay", "--all")
    stack.wait_until_drained()
    history = json.loads(omhooks(stack, "dlq", "history", "--json").stdout)

    # Which refund runs fail depends on when each ran against the moving sandbox state, but
    # the runs of ord_5002's cancellation and of the hold must be among them, and no other
    # handler's.
    dead = {(entry["handler"], entry["event_id"]) for entry in listed}
    assert {entry["handler"] for entry in listed} == {"note_on_hold", "refund_cancelled_items"}
    assert ("note_on_hold", "evt_0009") in dead
    assert ("refund_cancelled_items", "evt_0010") in dead
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "could not replay 0." in replay.stdout
    shipments, refunds, notes = after_replay
    assert shipments == EXPECTED_SHIPMENTS
    assert refunds == EXPECTED_REFUNDS
    assert len(notes) == 1
    assert again.returncode == 0
    assert "Replayed 0;" in again.stdout
    assert summarise(effects(stack)) == after_replay
    assert history[-1]["reason"] == "API is back"
    assert history[-1]["counts"]["replayed"] >= 2


def test_two_replays_of_one_dead_letter_at_once_act_once(stack, secrets):
    add_fault(stack, "create_note", 422)
    deliver(stack, secrets["current"], ["evt_0001", "evt_0009"])
    stack.wait_until_drained()
    entry_id = json.loads(omhooks(stack, "dlq", "list", "--json").stdout)[0]["id"]
    httpx.delete(f"{stack.sandbox_url}/_sandbox/faults").raise_for_status()

    command = [sys.executable, "-m", "omhooks", "dlq", "replay", entry_id]
    racers = [
        subprocess.Popen(command, env=stack.environment(), stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [racer.communicate(timeout=60)[0] for racer in racers]
    stack.wait_until_drained()

    assert sorted(racer.returncode for racer in racers) == [0, 1]
    assert sum("Replayed 1;" in output for output in outputs) == 1
    assert len(effects(stack)["notes"]) == 1


def test_show_hides_personal_data_unless_asked(stack, secrets):
    add_fault(stack, "create_note", 422)
    deliver(stack, secrets["current"], ["evt_0001", "evt_0009"])
    stack.wait_until_drained()
    entry_id = json.loads(omhooks(stack, "dlq", "list", "--json").stdout)[0]["id"]

    shown = omhooks(stack, "dlq", "show", entry_id[:12])
    revealed = omhooks(stack, "dlq", "show", entry_id[:12], "--json", "--show-personal-data")

    assert shown.returncode == 0
    assert "ApiPermanentError" in shown.stdout
    assert "alex@example.com" not in shown.stdout
    assert "alex@example.com" in revealed.stdout


def test_purge_asks_unless_yes_and_records_it(stack, secrets):
    add_fault(stack, "create_note", 422)
    deliver(stack, secrets["current"], ["evt_0001", "evt_0009"])
    stack.wait_until_drained()

    refused = omhooks(stack, "dlq", "purge", "--all")
    purged = omhooks(
        stack, "dlq", "purge", "--handler", "note_on_hold", "--yes", "--reason", "test"
    )
    remaining = json.loads(omhooks(stack, "dlq", "list", "--json").stdout)
    history = json.loads(omhooks(stack, "dlq", "history", "--json").stdout)

    assert refused.returncode == 1
    assert "Deleted 1 dead letter(s)." in purged.stdout
    assert remaining == []
    assert history[0]["action"] == "purge"
    assert history[0]["reason"] == "test"


def test_time_limit_message_names_the_limit():
    limit = error_message(TimeLimitExceeded(), {"time_limit": 2500})
    no_limit = error_message(TimeLimitExceeded(), {})
    other = error_message(RuntimeError("boom"), {"time_limit": 2500})

    assert limit == "The run took longer than its time limit of 2.5 s."
    assert no_limit == "The run took longer than its time limit."
    assert other == "boom"


def test_show_json_keeps_overflowing_number_as_text(
    redis_client, redis_url, namespace, secrets, monkeypatch, capsys
):
    body = '{"id": "evt_big", "type": "order.created", "data": {"price": 1e400, "qty": 2.5}}'
    entry = build_dead_letter(
        "probe", "evt_big", json.loads(body), body, {}, RuntimeError("boom"), permanent=True
    )
    DeadLetterStore(redis_client, namespace=namespace, retention_seconds=60).add(entry)
    monkeypatch.setenv("OMHOOKS_REDIS_URL", redis_url)
    monkeypatch.setenv("OMHOOKS_NAMESPACE", namespace)
    monkeypatch.setenv("OMHOOKS_WEBHOOK_SECRETS", secrets["current"])

    status = main(["dlq", "show", entry.id, "--json"])
    printed = json.loads(capsys.readouterr().out, parse_constant=pytest.fail)

    assert status == 0
    assert printed["event"]["data"] == {"price": "1e400", "qty": 2.5}
