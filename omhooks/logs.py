"""Logging set-up for the entry points: one line per record, with the event's ids appended."""

from __future__ import annotations

import logging
import sys

__all__ = ["configure_logging"]

_CONTEXT_FIELDS = ("event_id", "event_type", "order_id", "handler")


class _ContextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = [
            f"{name}={getattr(record, name)}"
            for name in _CONTEXT_FIELDS
            if getattr(record, name, None) is not None
        ]
        return f"{line} [{' '.join(context)}]" if context else line


def configure_logging(level: str = "INFO") -> None:
    """Send the service's logs to standard error at the given level."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _ContextFormatter("%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
