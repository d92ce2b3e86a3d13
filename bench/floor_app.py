"""The receiver benchmark's floor: only the work that each delivery needs, in one function.

``python -m bench.floor_app --port PORT`` serves it under uvicorn with the options that
``omhooks serve`` passes. For each ``POST`` it verifies the signature and timestamp, parses the
body strictly, validates the envelope, builds the dispatch metadata and queues the event once
with the receiver's ``EventQueue``, then responds 202 with the receiver's JSON body. It has no
metrics, logs, body limits or error responses, so it is no server to deploy. It shows what the
receiver's design costs at the least, next to the bare endpoint of bench/baseline_app.py.
"""

from __future__ import annotations

from json.encoder import encode_basestring
from typing import Any

from starlette.types import Receive, Scope, Send

from omhooks.errors import DeliveryRejected
from omhooks.redis_clients import async_redis
from omhooks.settings import get_settings
from ordermesh.events import Envelope
from receiver.parsing import parse_json
from receiver.queueing import EventQueue
from receiver.verification import SignatureVerifier
from workers.queues import dispatch_meta

from .baseline_app import serve

_SIGNATURE_HEADERS = frozenset({b"webhook-id", b"webhook-timestamp", b"webhook-signature"})


def create_app() -> Any:
    """Build the floor app for the environment's settings."""
    settings = get_settings()
    verifier = SignatureVerifier(
        settings.secret_values(), tolerance_seconds=settings.timestamp_tolerance_seconds
    )
    # The Redis client and the queue, made at startup in the server's event loop.
    running: dict[str, Any] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["method"] != "POST":
            await _respond(send, 200, b"")
            return
        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in _SIGNATURE_HEADERS
        }
        message = await receive()
        if message.get("more_body"):
            raise RuntimeError("The floor app reads only bodies that arrive in one chunk.")
        body: bytes = message["body"]
        verified = verifier.verify(headers, body)
        envelope = Envelope.model_validate(parse_json(body))
        if envelope.id != verified.event_id:
            raise DeliveryRejected(
                400,
                "id_mismatch",
                f"The body's id {envelope.id!r} differs from webhook-id {verified.event_id!r}.",
            )
        meta = dispatch_meta(envelope)
        meta["secret_index"] = verified.secret_index
        queued = await running["queue"].put(envelope.id, body, meta)
        status = b"queued" if queued else b"duplicate"
        content = b'{"status":"' + status + b'","id":' + encode_basestring(envelope.id).encode()
        await _respond(send, 202 if queued else 200, content + b"}")

    async def _lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                redis = async_redis(settings, socket_timeout=2, socket_connect_timeout=2)
                running["redis"] = redis
                running["queue"] = EventQueue(
                    redis,
                    namespace=settings.namespace,
                    dedup_ttl_seconds=settings.dedup_ttl_seconds,
                )
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await running["queue"].aclose()
                await running["redis"].aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    return app


async def _respond(send: Send, status: int, content: bytes) -> None:
    headers = [(b"content-length", str(len(content)).encode("latin-1"))]
    if content:
        headers.append((b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


def main() -> None:
    serve("bench.floor_app:create_app", "Serve the floor app on 127.0.0.1.")


if __name__ == "__main__":
    main()
