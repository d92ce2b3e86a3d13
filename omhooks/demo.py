"""``omhooks demo``: the whole service on the fixture lifecycle, on one machine, in one command."""

from __future__ import annotations

import base64
import json
import os
import secrets
import statistics
import sys
import time
from contextlib import ExitStack
from typing import Any

import httpx
from redis import Redis

from .lifecycle import deliver_lifecycle
from .redis_server import LocalRedis
from .stack import LocalStack, StackConfig

__all__ = ["run_demo"]


def run_demo(*, as_json: bool = False) -> int:
    """Run the demo and print the effects; return 1 if a delivery was not accepted."""
    started = time.perf_counter()
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    with ExitStack() as cleanup:
        redis_url = os.environ.get("OMHOOKS_REDIS_URL") or os.environ.get("REDIS_URL")
        env = {}
        if redis_url:
            # A development Redis often keeps nothing on disk; the demo runs on it anyway.
            env["OMHOOKS_REDIS_DURABILITY"] = "warn"
        else:
            _say("Starting an embedded Redis (set REDIS_URL to use your own).", as_json)
            redis_url = cleanup.enter_context(LocalRedis()).url
        config = StackConfig(
            redis_url=redis_url,
            webhook_secrets=[secret],
            namespace=f"omhooks-demo-{secrets.token_hex(4)}",
            env=env,
        )
        _say("Starting the sandbox API, the receiver and a worker.", as_json)
        stack = cleanup.enter_context(LocalStack(config))

        _say(f"Delivering the lifecycle to {stack.receiver_url}.", as_json)
        deliveries = deliver_lifecycle(stack.receiver_url, stack.sandbox_url, [secret])
        drained = stack.wait_until_drained()
        effects = httpx.get(f"{stack.sandbox_url}/_sandbox/effects", timeout=5).json()
        stack.stop()
        if env:
            _delete_namespace(redis_url, config.namespace)

    effects = {key: effects[key] for key in ("shipments", "refunds", "notes")}
    refused = [d for d in deliveries if d.status not in (200, 202)]
    if as_json:
        print(json.dumps(effects, indent=2))
    else:
        _print_report(effects, deliveries, drained, time.perf_counter() - started)
    for delivery in refused:
        print(f"Delivery of {delivery.event_id} was answered {delivery.status}.", file=sys.stderr)
    return 1 if refused else 0


def _delete_namespace(redis_url: str, namespace: str) -> None:
    """Delete the demo's keys from a Redis that is not the demo's own."""
    client = Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _say(text: str, quiet: bool) -> None:
    print(text, file=sys.stderr if quiet else sys.stdout, flush=True)


def _print_report(
    effects: dict[str, list[dict[str, Any]]], deliveries: list[Any], drained: float, total: float
) -> None:
    answers = ", ".join(f"{d.event_id} {d.status}" for d in deliveries)
    latencies = sorted(d.seconds * 1000 for d in deliveries)
    print(f"\nDeliveries: {answers}")
    print(
        f"Answered in {statistics.median(latencies):.1f} ms (median), "
        f"{latencies[-1]:.1f} ms (slowest); queue drained {drained:.2f} s after the last one."
    )
    print(f"\nShipments ({len(effects['shipments'])}):")
    for shipment in effects["shipments"]:
        print(
            f"  {shipment['id']}: order {shipment['orderId']}, vendor {shipment['vendorId']}, "
            f"facility {shipment['facilityId']}, items {', '.join(shipment['orderItemIds'])}"
        )
    print(f"Refund requests ({len(effects['refunds'])}):")
    for refund in effects["refunds"]:
        print(f"  {refund['id']}: order {refund['orderId']}")
        for line in refund["refunds"]:
            kind = "shipping" if line["isShippingRefund"] else "item"
            print(f"    {kind} {line['itemId']}: {line['amount']}")
    print(f"Notes ({len(effects['notes'])}):")
    for note in effects["notes"]:
        print(f"  {note['id']}: {note['resourceType']} {note['resourceId']}: {note['text']}")
    print(f"\nDemo finished in {total:.1f} s.")
