"""The built-in handlers, loaded through the ``omhooks.handlers`` entry point ``builtin``."""

from .notes import note_on_hold
from .refunds import refund_cancelled_items
from .shipping import ship_when_ready

__all__ = ["note_on_hold", "refund_cancelled_items", "ship_when_ready"]
