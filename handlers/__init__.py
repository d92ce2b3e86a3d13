"""Handlers: the plugin interface and the discovery of installed handlers."""

from omhooks.errors import PermanentError, TransientError

from .plugin import Handler, HandlerContext, RetryPolicy, handler
from .registry import Registry, discover

__all__ = [
    "Handler",
    "HandlerContext",
    "PermanentError",
    "Registry",
    "RetryPolicy",
    "TransientError",
    "discover",
    "handler",
]
