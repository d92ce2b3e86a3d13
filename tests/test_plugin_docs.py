"""docs/plugins.md, followed step by step: its files run and its commands parse."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from handlers import HandlerContext
from omhooks import pytest_plugin
from omhooks.cli import _parser
from omhooks.fake_service import FakeService
from omhooks.testing import OmhooksStack
from ordermesh.events import Event

ROOT = Path(__file__).parent.parent
PAGE = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
FILE_BLOCK = re.compile(r"<!-- file: (?P<name>[\w.]+) -->\n```python\n(?P<code>.*?)```", re.S)
CODE_BLOCK = re.compile(r"```(?P<language>\w+)\n(?P<code>.*?)```", re.S)


def blocks(language: str) -> list[str]:
    return [m["code"] for m in CODE_BLOCK.finditer(PAGE) if m["language"] == language]


def shell_lines() -> list[str]:
    return [line.strip() for block in blocks("sh") for line in block.splitlines() if line.strip()]


def clean_environment(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("OMHOOKS_")}
    return {**env, **extra}


def documented_files() -> dict[str, str]:
    return {m["name"]: m["code"] for m in FILE_BLOCK.finditer(PAGE)}


def test_page_has_the_example_module_and_its_tests():
    assert set(documented_files()) == {"thank_big_orders.py", "test_thank_big_orders.py"}


def test_python_blocks_compile():
    for number, code in enumerate(blocks("python")):
        compile(code, f"python block {number} of docs/plugins.md", "exec")


def test_omhooks_commands_parse():
    commands = [line for line in shell_lines() if line.startswith("omhooks ")]

    assert len(commands) >= 6
    for line in commands:
        try:
            _parser().parse_args(shlex.split(line)[1:])
        except SystemExit:
            pytest.fail(f"docs/plugins.md shows a command omhooks rejects: {line}")


@pytest.mark.parametrize(
    ("pattern", "owner"),
    [
        (r"`ctx\.(\w+)", HandlerContext),
        (r"`event\.(\w+)", Event),
        (r"omhooks_stack\.(\w+)\(", OmhooksStack),
        (r"omhooks_fake_service\.(\w+)", FakeService),
    ],
)
def test_documented_members_exist(pattern, owner):
    names = set(re.findall(pattern, PAGE))
    fields = set(getattr(owner, "__dataclass_fields__", {})) | set(
        getattr(owner, "model_fields", {})
    )

    missing = sorted(name for name in names if not hasattr(owner, name) and name not in fields)
    assert missing == [], f"docs/plugins.md names members {owner.__name__} lacks"


def test_documented_fixtures_exist():
    fixtures = set(re.findall(r"`(omhooks_\w+)`", PAGE))

    assert "omhooks_stack" in fixtures
    assert sorted(name for name in fixtures if not hasattr(pytest_plugin, name)) == []


def test_example_runs_as_the_page_says(tmp_path, redis_url):
    for name, code in documented_files().items():
        (tmp_path / name).write_text(code, encoding="utf-8")
    exports = dict(
        line.removeprefix("export ").split("=", 1)
        for line in shell_lines()
        if line.startswith("export ")
    )
    run_tests = next(line for line in shell_lines() if "pytest" in line)
    assignments, command = run_tests.split(" pytest ", 1)

    listing = subprocess.run(
        [sys.executable, "-m", "omhooks", "handlers"],
        env=clean_environment(PYTHONPATH=str(tmp_path), **exports),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    tested = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *shlex.split(command)],
        cwd=tmp_path,
        env=clean_environment(
            OMHOOKS_TEST_REDIS_URL=redis_url, **dict([assignments.split("=", 1)])
        ),
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )

    assert listing.returncode == 0, listing.stdout + listing.stderr
    assert "thank_big_orders (enabled)" in listing.stdout
    assert "from:          module thank_big_orders" in listing.stdout
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "2 passed" in tested.stdout
