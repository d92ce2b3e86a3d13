"""Without their URL settings the example handlers take no event."""

from __future__ import annotations

import os
import subprocess
import sys

from omhooks.testing import make_event


def test_unconfigured_handlers_take_no_event(omhooks_stack):
    shipped = make_event("shipment.shipped", order_id="ord_1")
    hold = make_event("order.customer_care_hold", order_id="ord_1")

    shipped_outcomes = omhooks_stack.deliver(shipped)
    hold_outcomes = omhooks_stack.deliver(hold)

    assert shipped_outcomes == {}
    assert hold_outcomes == {"note_on_hold": "succeeded"}


def test_handlers_listing_names_the_missing_setting():
    env = {key: value for key, value in os.environ.items() if not key.startswith("OMHOOKS_")}

    listing = subprocess.run(
        [sys.executable, "-m", "omhooks", "handlers"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert listing.returncode == 0, listing.stderr
    assert (
        "sync_tracking_to_shop (disabled until OMHOOKS_PLUGIN_SYNC_TRACKING_TO_SHOP_URL is set)"
        in listing.stdout
    )
    assert "from:          omhooks-example-plugin 0.1.0" in listing.stdout
