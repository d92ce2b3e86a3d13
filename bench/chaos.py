"""Chaos run: deliver events while workers and Redis are killed; count lost and doubled effects.

It starts a Redis of its own (append-only file, ``appendfsync always``), the sandbox, two
receivers and two workers, and sends ``--events`` signed events (orders put on hold, and
order updates that make a shipment), with duplicates and out of order, to both receivers,
retrying each delivery until it is answered ``2xx`` as OrderMesh would. Meanwhile it kills a
worker with SIGKILL and restarts it, again and again; with ``--redis-restart`` it also kills
Redis with SIGKILL and starts it again on the same files.

At the end every accepted event must have made its effect in the sandbox exactly once: one note
per hold event, one shipment per order that had an update. The last line printed is
``accepted=… processed=… lost=… duplicated=…``; the exit status is 1 unless lost and
duplicated are both 0.

    python bench/chaos.py --events 2000 [--redis-restart] [--seed 7]
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import secrets
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from redis import Redis

# bench/receiver.py and bench/workers.py would shadow the receiver and workers packages.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if entry and Path(entry).resolve() != _HERE]

from omhooks.redis_server import LocalRedis, free_port  # noqa: E402
from omhooks.stack import LocalStack, StackConfig  # noqa: E402
from ordermesh.signing import signed_headers  # noqa: E402
from workers.deadletters import DeadLetterStore  # noqa: E402
from workers.journal import Journal  # noqa: E402

NAMESPACE = "chaos"
HOLD = "order.customer_care_hold"
EVENTS_PER_ORDER = 4  # two updates that may ship the order, two holds that each add a note
SENDERS = 8
DELIVERY_GIVE_UP_SECONDS = 120.0
WORKER_ENV = {
    "OMHOOKS_RETRY_MAX_RETRIES": "30",
    "OMHOOKS_RETRY_MIN_BACKOFF_SECONDS": "0.2",
    "OMHOOKS_RETRY_MAX_BACKOFF_SECONDS": "2",
    "OMHOOKS_BROKER_HEARTBEAT_TIMEOUT_SECONDS": "3",
    "OMHOOKS_BROKER_MAINTENANCE_PER_MILLION": "200000",
    "OMHOOKS_ORDER_LOCK_SECONDS": "5",
    "OMHOOKS_ORDERING_WAIT_SECONDS": "10",
    "OMHOOKS_WORKER_THREADS": "4",
}


@dataclass
class Tally:
    """What the senders saw: accepted event ids, and deliveries given up."""

    accepted: set[str] = field(default_factory=set)
    given_up: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def make_events(count: int, rng: random.Random) -> tuple[list[dict[str, Any]], list[str]]:
    """Return the events in the order they are sent, and the order ids they concern."""
    orders = [f"ord_chaos_{index}" for index in range(max(1, count // EVENTS_PER_ORDER))]
    start = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
    events = []
    for number, order_id in enumerate(orders):
        kinds = ["order.updated", HOLD] * (EVENTS_PER_ORDER // 2)
        for step, kind in enumerate(kinds):
            event_id = f"evt_chaos_{number}_{step}"
            created = start + timedelta(seconds=number * 10 + step)
            data: dict[str, Any] = {"order": {"id": order_id, "status": "Processing"}}
            if kind == HOLD:
                data["reason"] = f"chaos {event_id}"
            events.append(
                {
                    "id": event_id,
                    "type": kind,
                    "createdAt": created.isoformat().replace("+00:00", "Z"),
                    "data": data,
                }
            )
    rng.shuffle(events)
    duplicates = [event for event in events if rng.random() < 0.1]
    sent = events + duplicates
    rng.shuffle(sent)
    return sent, orders


def seed_orders(sandbox_url: str, orders: list[str]) -> None:
    """Give each order one item ready to ship, so the first update makes one shipment."""
    with httpx.Client(timeout=10) as client:
        for order_id in orders:
            item = {
                "id": f"{order_id}_it",
                "orderId": order_id,
                "status": "ReadyToShip",
                "vendorId": "ven_A",
                "facilityId": "fac_A1",
                "price": 10,
                "quantity": 1,
            }
            order = {"id": order_id, "status": "Processing", "items": [item]}
            client.put(f"{sandbox_url}/_sandbox/orders/{order_id}", json=order).raise_for_status()


def deliver(urls: list[str], secret: str, event: dict[str, Any], tally: Tally) -> None:
    """Send one event until a receiver answers 2xx, trying the receivers in turn."""
    body = json.dumps(event).encode()
    deadline = time.monotonic() + DELIVERY_GIVE_UP_SECONDS
    attempt = 0
    with httpx.Client(timeout=10) as client:
        while time.monotonic() < deadline:
            url = urls[(hash(event["id"]) + attempt) % len(urls)]
            try:
                response = client.post(
                    url, content=body, headers=signed_headers([secret], event["id"], body)
                )
                if response.is_success:
                    with tally.lock:
                        tally.accepted.add(event["id"])
                    return
            except httpx.TransportError:
                pass
            attempt += 1
            time.sleep(min(0.05 * 2**attempt, 1.0))
    with tally.lock:
        tally.given_up.append(event["id"])


def make_chaos(
    stack: LocalStack,
    redis: LocalRedis,
    restart_redis: bool,
    stop: threading.Event,
    rng: random.Random,
) -> threading.Thread:
    """Return a thread that kills and restarts workers (and Redis) until ``stop`` is set."""

    def run() -> None:
        kills = 0
        while not stop.wait(rng.uniform(0.8, 2.0)):
            worker = rng.choice(["worker", "worker-2"])
            stack.kill(worker)
            if restart_redis and kills % 4 == 3:
                redis.kill()
                time.sleep(0.3)
                redis.start()
            stack.start_process(worker, ["worker"])
            kills += 1
        print(f"Killed and restarted a worker {kills} times.", file=sys.stderr)

    return threading.Thread(target=run, name="chaos", daemon=True)


def count_effects(
    sandbox_url: str, events: list[dict[str, Any]], accepted: set[str]
) -> dict[str, int]:
    """Compare the sandbox's effects with the accepted events."""
    effects = httpx.get(f"{sandbox_url}/_sandbox/effects", timeout=30).json()
    notes = Counter(note["text"].rsplit("chaos ", 1)[-1] for note in effects["notes"])
    shipments = Counter(shipment["orderId"] for shipment in effects["shipments"])
    by_id = {event["id"]: event for event in events}

    holds = [i for i in accepted if by_id[i]["type"] == HOLD]
    updated_orders = {
        by_id[i]["data"]["order"]["id"] for i in accepted if by_id[i]["type"] == "order.updated"
    }
    lost = sum(1 for i in holds if notes[i] == 0) + sum(
        1 for o in updated_orders if shipments[o] == 0
    )
    duplicated = sum(count - 1 for count in notes.values() if count > 1)
    duplicated += sum(count - 1 for count in shipments.values() if count > 1)
    processed = sum(1 for i in holds if notes[i] >= 1)
    processed += sum(
        1
        for i in accepted
        if by_id[i]["type"] == "order.updated" and shipments[by_id[i]["data"]["order"]["id"]] >= 1
    )
    return {
        "accepted": len(accepted),
        "processed": processed,
        "lost": lost,
        "duplicated": duplicated,
    }


def report_problems(
    stack: LocalStack, redis: LocalRedis, events: list[dict[str, Any]], accepted: set[str]
) -> None:
    """Print what the journal and the dead letters say about events without their effect."""
    client = Redis.from_url(redis.url, decode_responses=True)
    journal = Journal(client, namespace=NAMESPACE, ttl_seconds=3600)
    dead = DeadLetterStore(client, namespace=NAMESPACE, retention_seconds=3600).list()
    print(f"Dead letters: {len(dead)}", file=sys.stderr)
    for entry in dead[:10]:
        print(f"  {entry.handler} {entry.event_id}: {entry.error_type}", file=sys.stderr)

    effects = httpx.get(f"{stack.sandbox_url}/_sandbox/effects", timeout=30).json()
    noted = {note["text"].rsplit("chaos ", 1)[-1] for note in effects["notes"]}
    for event in events:
        event_id = event["id"]
        if event_id in accepted and event["type"] == HOLD and event_id not in noted:
            print(f"  no note for {event_id}: {journal.outcomes(event_id)}", file=sys.stderr)


def report_pending(redis: LocalRedis) -> None:
    """Print the queues and the workers' unacknowledged sets that still hold messages."""
    client = Redis.from_url(redis.url, decode_responses=True)
    for key in sorted(client.scan_iter(match=f"{NAMESPACE}:*")):
        kind = client.type(key)
        if kind == "list" and client.llen(key):
            print(f"  {key}: {client.llen(key)} queued", file=sys.stderr)
        elif kind == "set" and "__acks__" in key and client.scard(key):
            print(f"  {key}: {client.scard(key)} unacknowledged", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000, help="Distinct events to send.")
    parser.add_argument("--redis-restart", action="store_true", help="Also kill and restart Redis.")
    parser.add_argument("--seed", type=int, default=7, help="Seed of the random choices.")
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=300.0,
        help="Seconds to wait for the queues to drain.",
    )
    args = parser.parse_args()

    rng = random.Random(args.seed)
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    events, orders = make_events(args.events, rng)
    started = time.monotonic()

    with LocalRedis(appendfsync="always") as redis:
        config = StackConfig(
            redis_url=redis.url, webhook_secrets=[secret], namespace=NAMESPACE, env=WORKER_ENV
        )
        with LocalStack(config) as stack:
            second_port = free_port()
            stack.start_process(
                "receiver-2", ["serve", "--host", "127.0.0.1", "--port", str(second_port)]
            )
            stack.start_process("worker-2", ["worker"])
            urls = [stack.receiver_url, f"http://127.0.0.1:{second_port}/webhooks/ordermesh"]
            seed_orders(stack.sandbox_url, orders)

            tally = Tally()
            stop = threading.Event()
            chaos = make_chaos(stack, redis, args.redis_restart, stop, rng)
            chaos.start()
            with ThreadPoolExecutor(SENDERS) as senders:
                for event in events:
                    senders.submit(deliver, urls, secret, event, tally)
            stop.set()
            chaos.join()

            try:
                drained = stack.wait_until_drained(timeout=args.drain_timeout)
            except TimeoutError:
                from redis import Redis as Client

                client = Client.from_url(redis.url, decode_responses=True)
                for key in sorted(client.scan_iter(match="chaos:*")):
                    kind = client.type(key)
                    if kind in ("list", "set") and ("__acks__" in key or kind == "list"):
                        size = client.llen(key) if kind == "list" else client.scard(key)
                        print(f"  pending {key}: {size}", file=sys.stderr)
                print(
                    client.zrange("chaos:__heartbeats__", 0, -1, withscores=True),
                    time.time(),
                    file=sys.stderr,
                )
                raise
            figures = count_effects(stack.sandbox_url, events, tally.accepted)
            if figures["lost"] or figures["duplicated"]:
                report_problems(stack, redis, events, tally.accepted)

    print(
        f"Sent {len(events)} deliveries of {len(set(e['id'] for e in events))} events in "
        f"{time.monotonic() - started:.0f} s; drained {drained:.1f} s after the last; "
        f"{len(tally.given_up)} deliveries given up.",
    )
    print(" ".join(f"{name}={value}" for name, value in figures.items()))
    return 0 if figures["lost"] == 0 and figures["duplicated"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
