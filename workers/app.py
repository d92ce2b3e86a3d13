"""The module Dramatiq's command line loads: ``dramatiq workers.app``.

Importing it reads the settings, loads the handlers and declares the actors on the broker.
"""

from __future__ import annotations

from omhooks.logs import configure_logging
from omhooks.settings import get_settings

from .broker import create_broker

settings = get_settings()
configure_logging(settings.log_level)
broker = create_broker(settings)
