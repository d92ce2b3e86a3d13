"""The module the ``omhooks.handlers`` entry point names: every handler of the plugin."""

from .support import flag_hold_in_support
from .tracking import sync_tracking_to_shop

__all__ = ["flag_hold_in_support", "sync_tracking_to_shop"]
