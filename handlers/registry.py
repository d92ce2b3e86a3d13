"""Find handlers: installed plugins by entry point, and modules named in settings."""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from types import ModuleType

from omhooks.errors import ConfigurationError

from .plugin import HANDLER_ATTRIBUTE, Handler

__all__ = ["ENTRY_POINT_GROUP", "LoadError", "Registry", "discover"]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "omhooks.handlers"


@dataclass(frozen=True)
class LoadError:
    """A plugin or module that failed to load, with the error's text."""

    source: str
    error: str


@dataclass
class Registry:
    """The loaded handlers by name, the disabled ones, and the plugins that failed to load."""

    handlers: dict[str, Handler] = field(default_factory=dict)
    disabled: set[str] = field(default_factory=set)
    errors: list[LoadError] = field(default_factory=list)
    # Event type -> subscribed handlers, worked out on first use, because every dispatched
    # event looks them up.
    _subscribed: dict[str, tuple[Handler, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def add(self, handler: Handler) -> None:
        """Add a handler; a second handler with the same name is a configuration error."""
        known = self.handlers.get(handler.name)
        if known is not None and known.function is not handler.function:
            raise ConfigurationError(
                f"Two handlers are named {handler.name!r} ({known.origin} and {handler.origin}); "
                "give one of them another name with @handler(..., name=...)."
            )
        self.handlers[handler.name] = handler
        self._subscribed.clear()

    def add_module(self, module: ModuleType, origin: str) -> int:
        """Add every handler defined in a module and return how many there were."""
        found = 0
        for value in vars(module).values():
            subscribed = getattr(value, HANDLER_ATTRIBUTE, None)
            if isinstance(subscribed, Handler):
                self.add(replace(subscribed, origin=origin))
                found += 1
        return found

    def enabled(self) -> list[Handler]:
        """Return the handlers that are not disabled, by name."""
        return [self.handlers[name] for name in sorted(self.handlers) if name not in self.disabled]

    def subscribed(self, event_type: str) -> list[Handler]:
        """Return the enabled handlers subscribed to an event type."""
        found = self._subscribed.get(event_type)
        if found is None:
            found = tuple(h for h in self.enabled() if h.subscribes_to(event_type))
            self._subscribed[event_type] = found
        return list(found)

    def get(self, name: str) -> Handler | None:
        """Return the enabled handler of that name, or None."""
        if name in self.disabled:
            return None
        return self.handlers.get(name)


def discover(modules: list[str], disabled: list[str]) -> Registry:
    """Load the handlers of installed plugins and of the named modules.

    A plugin that fails to import is recorded in ``Registry.errors`` and logged; the other
    handlers still load. A module named in settings that fails to import is a configuration
    error, since the operator asked for it by name.
    """
    registry = Registry(disabled=set(disabled))
    for point in entry_points(group=ENTRY_POINT_GROUP):
        origin = _distribution_origin(point)
        try:
            loaded = point.load()
        except Exception as exc:
            logger.exception("Could not load the handler plugin %r.", origin)
            registry.errors.append(LoadError(origin, f"{type(exc).__name__}: {exc}"))
            continue
        if isinstance(loaded, ModuleType):
            registry.add_module(loaded, origin)

    for name in modules:
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            raise ConfigurationError(
                f"Could not import the handler module {name!r} named in OMHOOKS_HANDLER_MODULES: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        registry.add_module(module, f"module {name}")

    unknown = set(disabled) - set(registry.handlers)
    if unknown:
        logger.warning("OMHOOKS_DISABLED_HANDLERS names unknown handlers: %r.", sorted(unknown))
    return registry


def _distribution_origin(point: object) -> str:
    dist = getattr(point, "dist", None)
    value = getattr(point, "value", "?")
    if dist is None:
        return str(value)
    return f"{dist.name} {dist.version} ({value})"
