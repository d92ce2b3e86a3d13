"""The documentation matches the code it describes."""

from __future__ import annotations

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
