"""The documentation matches the code it describes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from omhooks.settings import settings_reference

ROOT = Path(__file__).parent.parent


def test_configuration_reference_is_up_to_date():
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")

    assert settings_reference() in page, "regenerate it with: omhooks config --reference"


def test_readme_quick_start_uses_the_make_targets_ci_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")

    assert "make demo" in readme
    assert "make test" in readme
    assert "make test" in ci


def test_config_masks_the_redis_password():
    completed = subprocess.run(
        [sys.executable, "-m", "omhooks", "config"],
        env={**os.environ, "REDIS_URL": "redis://:hunter2pw@127.0.0.1:6390/0"},
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert completed.returncode == 0
    assert "hunter2pw" not in completed.stdout
    assert json.loads(completed.stdout)["redis_url"] == "redis://:**********@127.0.0.1:6390/0"
