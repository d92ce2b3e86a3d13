"""Log rejected deliveries with a rate limit per reason, so a flood cannot fill the disk."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["RejectionLog"]


@dataclass
class _Window:
    started: float
    level: int
    logged: int = 0
    suppressed: int = 0


class RejectionLog:
    """Log at most ``max_lines`` rejections per reason in each window of ``window_seconds``.

    The rejections over that are counted, and one summary line per reason gives their number
    once the window has ended. Summaries are written at the next rejection of any reason, or
    by ``flush`` (the receiver calls it when it stops).
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        max_lines: int = 10,
        window_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._max_lines = max_lines
        self._window_seconds = window_seconds
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def log(self, level: int, reason: str, message: str, *args: object) -> None:
        """Log ``message % args`` unless ``reason`` already used its lines in this window."""
        now = self._clock()
        self._summarize(lambda window: now - window.started >= self._window_seconds)
        window = self._windows.setdefault(reason, _Window(started=now, level=level))
        window.level = max(window.level, level)
        if window.logged < self._max_lines:
            window.logged += 1
            self._logger.log(level, message, *args)
        else:
            window.suppressed += 1

    def flush(self) -> None:
        """Write the summary of every window with unlogged rejections, and start anew."""
        self._summarize(lambda window: True)

    def _summarize(self, ended: Callable[[_Window], bool]) -> None:
        for reason, window in list(self._windows.items()):
            if not ended(window):
                continue
            del self._windows[reason]
            if window.suppressed:
                self._logger.log(
                    window.level,
                    "Rejections for reason %s in the last %g seconds not logged one by one: %d.",
                    reason,
                    self._window_seconds,
                    window.suppressed,
                )
