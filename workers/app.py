"""The module Dramatiq's command line loads: ``dramatiq workers.app``.

Importing it reads the settings, loads the handlers, declares the actors on the broker and,
when ``OMHOOKS_RECONCILE_INTERVAL_SECONDS`` is set, adds the reconciliation schedule.
"""

from __future__ import annotations

from omhooks.logs import configure_logging
from omhooks.settings import get_settings

from .broker import create_broker
from .reconcile_schedule import install_reconcile_schedule

settings = get_settings()
configure_logging(settings.log_level, settings.log_format)
broker = create_broker(settings)
install_reconcile_schedule(broker, settings)
