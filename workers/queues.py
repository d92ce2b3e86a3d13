"""Queue names and the Redis layout of queued messages, shared by the receiver and the workers.

The receiver and the dispatch step write Dramatiq messages straight into Redis with one Lua
script that also sets a "seen" marker, so that marking an event as seen and queueing it happen
in one atomic round trip: a duplicate can never be answered ``200`` for an event that did not
make it onto the queue. The layout (``<namespace>:<queue>`` list of message ids and
``<namespace>:<queue>.msgs`` hash of message bodies) is the one Dramatiq's Redis broker reads.

Messages carry the event id, never the body: the body is stored once under ``body_key`` by
the same script, so no queue message, and no log line Dramatiq writes about one, holds the
personal data of an order.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import TYPE_CHECKING, Any

import dramatiq

if TYPE_CHECKING:
    from redis import Redis

__all__ = [
    "DISPATCH_ACTOR",
    "DISPATCH_QUEUE",
    "ENQUEUE_ONCE_SCRIPT",
    "HANDLER_ACTOR",
    "body_key",
    "encode_message",
    "handler_queue",
    "queue_event",
    "queue_keys",
    "seen_key",
]

DISPATCH_QUEUE = "dispatch"
DISPATCH_ACTOR = "dispatch_event"
HANDLER_ACTOR = "run_handler"

_MESSAGE_JSON = json.JSONEncoder(separators=(",", ":"))

# KEYS: marker, queue messages hash, queue list, event body.
# ARGV: TTL in seconds of the marker and the body, message id, message, body ("" to leave it).
# Returns 1 when the message was queued, 0 when the marker already existed.
# The marker is written last: Redis keeps the writes a script made before an error (such as
# out of memory), so a script that fails midway leaves the event unmarked, and the sender's
# retry queues it.
ENQUEUE_ONCE_SCRIPT = """
if redis.call("exists", KEYS[1]) == 1 then
    return 0
end
if ARGV[4] ~= "" then
    redis.call("set", KEYS[4], ARGV[4], "EX", ARGV[1])
end
redis.call("hset", KEYS[2], ARGV[2], ARGV[3])
redis.call("rpush", KEYS[3], ARGV[2])
redis.call("set", KEYS[1], ARGV[2], "EX", ARGV[1])
return 1
"""


def handler_queue(handler_name: str) -> str:
    """Return the queue of one handler: each handler has its own, so one cannot hold up another."""
    return f"handler.{handler_name}"


def queue_keys(namespace: str, queue_name: str) -> tuple[str, str]:
    """Return the Redis keys of a queue's message hash and of its list of message ids."""
    return f"{namespace}:{queue_name}.msgs", f"{namespace}:{queue_name}"


def body_key(namespace: str, event_id: str) -> str:
    """Return the key of an event's body as received."""
    return f"{namespace}:body:{event_id}"


def seen_key(namespace: str, event_id: str, handler_name: str | None = None) -> str:
    """Return the key marking an event as queued, for the receiver or for one handler."""
    if handler_name is None:
        return f"{namespace}:seen:{event_id}"
    return f"{namespace}:queued:{handler_name}:{event_id}"


def encode_message(
    queue_name: str,
    actor_name: str,
    args: tuple[Any, ...],
    options: dict[str, Any] | None = None,
) -> tuple[str, bytes]:
    """Build a Dramatiq message and return its Redis message id and its encoded bytes."""
    redis_message_id, message_id = _two_uuid4()
    fields: dict[str, Any] = {
        "queue_name": queue_name,
        "actor_name": actor_name,
        "args": args,
        "kwargs": {},
        "options": {**(options or {}), "redis_message_id": redis_message_id},
        "message_id": message_id,
        "message_timestamp": int(time.time() * 1000),
    }
    if type(dramatiq.get_encoder()) is dramatiq.JSONEncoder:
        # The bytes dramatiq.Message(**fields).encode() returns with Dramatiq's default
        # encoder, built without the Message object: the fields in the dataclass's order,
        # encoded like json.dumps(..., separators=(",", ":")).
        return redis_message_id, _MESSAGE_JSON.encode(fields).encode("utf-8")
    message: dramatiq.Message[Any] = dramatiq.Message(**fields)
    return redis_message_id, message.encode()


def _two_uuid4() -> tuple[str, str]:
    """Return two random (version 4) UUIDs as text, from one read of the system's randomness."""
    random = os.urandom(32)
    first = uuid.UUID(bytes=random[:16], version=4)
    second = uuid.UUID(bytes=random[16:], version=4)
    return str(first), str(second)


def queue_event(
    redis: Redis,
    *,
    namespace: str,
    dedup_ttl_seconds: int,
    event_id: str,
    body: str,
    meta: dict[str, Any],
) -> bool:
    """Queue an event for dispatch and return True, or return False if its id was seen.

    It is the receiver's step (mark seen, store the body, queue), in one round trip, for
    callers without an event loop such as ``omhooks reconcile``. Raises the redis client's
    errors when Redis cannot be reached; nothing is marked as seen then.
    """
    meta = {**meta, "received_at": int(time.time() * 1000)}
    message_id, data = encode_message(DISPATCH_QUEUE, DISPATCH_ACTOR, (event_id, meta))
    keys = [
        seen_key(namespace, event_id),
        *queue_keys(namespace, DISPATCH_QUEUE),
        body_key(namespace, event_id),
    ]
    script = redis.register_script(ENQUEUE_ONCE_SCRIPT)
    return bool(script(keys=keys, args=[dedup_ttl_seconds, message_id, data, body]))
