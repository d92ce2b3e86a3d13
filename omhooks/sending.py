"""``omhooks send``: read or build events, then sign and POST them to a receiver."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ordermesh.events import order_id_of
from ordermesh.signing import signed_headers

from .errors import ConfigurationError
from .lifecycle import apply_snapshot
from .templates import make_event, retarget_order

__all__ = ["SendResult", "load_events", "send_events"]


@dataclass(frozen=True)
class SendResult:
    """The receiver's response to one delivery, or the transport error that prevented it."""

    event_id: str
    event_type: str
    order_id: str | None
    status: int | None
    answer: str

    @property
    def accepted(self) -> bool:
        """True when the receiver responded with a 2xx status."""
        return self.status is not None and 200 <= self.status < 300


def load_events(
    source: str, *, order_id: str | None = None, event_id: str | None = None
) -> list[dict[str, Any]]:
    """Return the events to send: the JSON file at ``source``, else a template of that type.

    A file contains one event object or a list of them. ``order_id`` retargets every event to
    that order and ``event_id`` replaces the id of a single event.
    """
    path = Path(source)
    if path.is_file():
        events = _read_file(path)
    elif path.suffix == ".json" or "/" in source:
        raise ConfigurationError(f"Event file {source!r} not found.")
    else:
        events = [make_event(source)]
    if event_id is not None:
        if len(events) != 1:
            raise ConfigurationError(
                f"--id needs exactly one event, but {source!r} contains {len(events)}."
            )
        events[0]["id"] = event_id
    if order_id is not None:
        events = [retarget_order(event, order_id) for event in events]
    return events


def send_events(
    events: list[dict[str, Any]],
    *,
    url: str,
    secrets: list[str],
    repeat: int = 1,
    delay_seconds: float = 0.0,
    sandbox_url: str | None = None,
    on_each: Callable[[SendResult], None] | None = None,
) -> list[SendResult]:
    """Sign and POST each event ``repeat`` times, waiting ``delay_seconds`` between two sends.

    Each send is signed anew with the current time, so a repeat is a redelivery with the same
    id, and the receiver responds 200. With ``sandbox_url``, each event's order or item snapshot
    is put into that sandbox before the first send.
    """
    results = []
    with httpx.Client(timeout=15.0) as client:
        for index, event in enumerate(events):
            if sandbox_url is not None:
                apply_snapshot(client, sandbox_url, event)
            for attempt in range(repeat):
                if delay_seconds > 0 and (index or attempt):
                    time.sleep(delay_seconds)
                result = _send_one(client, url, secrets, event)
                results.append(result)
                if on_each is not None:
                    on_each(result)
    return results


def _send_one(
    client: httpx.Client, url: str, secrets: list[str], event: dict[str, Any]
) -> SendResult:
    body = json.dumps(event, ensure_ascii=False).encode()
    event_id = str(event.get("id", ""))
    headers = signed_headers(secrets, event_id, body)
    order_id = _order_id(event)
    try:
        response = client.post(url, content=body, headers=headers)
    except httpx.TransportError as exc:
        answer = f"could not reach {url}: {type(exc).__name__}: {exc}"
        return SendResult(event_id, str(event.get("type")), order_id, None, answer)
    return SendResult(
        event_id, str(event.get("type")), order_id, response.status_code, _answer(response)
    )


def _answer(response: httpx.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(payload, dict):
        if "status" in payload:
            return str(payload["status"])
        if "code" in payload:
            return f"{payload['code']}: {payload.get('message', '')}"
    return response.text[:200]


def _order_id(event: dict[str, Any]) -> str | None:
    data = event.get("data")
    return order_id_of(str(event.get("type", "")), data if isinstance(data, dict) else {})


def _read_file(path: Path) -> list[dict[str, Any]]:
    try:
        parsed = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"Could not read events from {str(path)!r}: {exc}") from exc
    events = parsed if isinstance(parsed, list) else [parsed]
    if not all(isinstance(event, dict) and "id" in event for event in events):
        raise ConfigurationError(
            f"Invalid event file {str(path)!r}: it must hold an event object with an id, or a "
            "list of them."
        )
    return events
