"""Descriptions of the discovered handlers and the load errors, for ``omhooks handlers``."""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Any

from handlers.plugin import Handler, RetryPolicy
from handlers.registry import LoadError, Registry, discover

from .errors import ConfigurationError
from .settings import Settings

__all__ = ["HandlerDescription", "describe_handlers", "load_all_handlers"]


@dataclass(frozen=True)
class HandlerDescription:
    """One handler as listed: where it came from, what it takes, how it retries, its status."""

    name: str
    origin: str
    event_types: tuple[str, ...]
    retry: str
    snapshot: bool
    required_settings: tuple[str, ...]
    enabled: bool
    status: str

    def to_json(self) -> dict[str, Any]:
        """Return the description as a JSON object."""
        return {
            "name": self.name,
            "origin": self.origin,
            "event_types": list(self.event_types),
            "retry": self.retry,
            "snapshot": self.snapshot,
            "required_settings": list(self.required_settings),
            "enabled": self.enabled,
            "status": self.status,
        }


def load_all_handlers(settings: Settings) -> Registry:
    """Discover the handlers as a worker does, recording failures instead of raising them.

    A worker does not start when a module named in ``OMHOOKS_HANDLER_MODULES`` fails to import
    or two handlers share a name. Here those errors go to ``Registry.errors``, so the listing
    still shows every other handler.
    """
    # discover() logs a broken plugin's traceback; the listing shows the error itself instead.
    registry_logger = logging.getLogger("handlers.registry")
    previous_level = registry_logger.level
    registry_logger.setLevel(logging.CRITICAL)
    try:
        registry = discover([], settings.disabled_handlers)
    finally:
        registry_logger.setLevel(previous_level)

    for name in settings.handler_modules:
        source = f"module {name}"
        try:
            registry.add_module(importlib.import_module(name), source)
        except ConfigurationError as exc:
            registry.errors.append(LoadError(source, str(exc)))
        except Exception as exc:
            registry.errors.append(LoadError(source, f"{type(exc).__name__}: {exc}"))
    return registry


def describe_handlers(registry: Registry, default_retry: RetryPolicy) -> list[HandlerDescription]:
    """Return a description of every handler of the registry, by name."""
    return [
        _describe(registry.handlers[name], registry, default_retry)
        for name in sorted(registry.handlers)
    ]


def _describe(
    handler: Handler, registry: Registry, default_retry: RetryPolicy
) -> HandlerDescription:
    missing = handler.missing_settings()
    if handler.name in registry.disabled:
        status = "disabled by OMHOOKS_DISABLED_HANDLERS"
    elif missing:
        verb = "is" if len(missing) == 1 else "are"
        status = f"disabled until {' and '.join(missing)} {verb} set"
    else:
        status = "enabled"
    retry = _retry_text(handler.retry or default_retry)
    return HandlerDescription(
        name=handler.name,
        origin=handler.origin,
        event_types=handler.event_types,
        retry=retry if handler.retry else f"default: {retry}",
        snapshot=handler.snapshot,
        required_settings=tuple(
            f"{handler.settings_prefix}{key.upper()}" for key in handler.required_settings
        ),
        enabled=status == "enabled",
        status=status,
    )


def _retry_text(policy: RetryPolicy) -> str:
    return (
        f"{policy.max_retries} retries, backoff {policy.min_backoff_seconds:g}-"
        f"{policy.max_backoff_seconds:g} s, time limit {policy.time_limit_seconds:g} s"
    )
