"""The example plugin package: installed by entry point, and its own tests pass."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from handlers.registry import discover

EXAMPLE = Path(__file__).parent.parent / "examples" / "omhooks-example-plugin"


def test_example_handlers_are_found_by_entry_point():
    registry = discover([], [])

    origins = {name: registry.handlers[name].origin for name in registry.handlers}
    assert origins["sync_tracking_to_shop"].startswith("omhooks-example-plugin 0.1.0")
    assert origins["flag_hold_in_support"].startswith("omhooks-example-plugin 0.1.0")
    assert registry.errors == []


def test_example_plugin_tests_pass_with_the_public_fixtures(redis_url):
    env = {key: value for key, value in os.environ.items() if not key.startswith("OMHOOKS_")}
    env["OMHOOKS_TEST_REDIS_URL"] = redis_url

    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )

    passed = re.search(r"(\d+) passed", completed.stdout)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert passed is not None
    assert int(passed.group(1)) >= 9
