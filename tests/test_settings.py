"""Settings: secrets from files, and never shown."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from omhooks.cli import main
from omhooks.settings import Settings


def run_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OMHOOKS_")}
    return subprocess.run(
        [sys.executable, "-m", "omhooks", "config"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_secret_is_read_from_a_file_of_the_secrets_folder(tmp_path, secrets):
    (tmp_path / "OMHOOKS_WEBHOOK_SECRETS").write_text(secrets["current"])
    (tmp_path / "OMHOOKS_API_CLIENT_SECRET").write_text("client-secret-from-file")

    completed = run_config({"OMHOOKS_SECRETS_DIR": str(tmp_path)})

    shown = json.loads(completed.stdout)
    assert completed.returncode == 0
    assert shown["webhook_secrets"] == ["**********"]
    assert shown["api_client_secret"] == "**********"
    assert secrets["current"] not in completed.stdout
    assert "client-secret-from-file" not in completed.stdout


def test_environment_variable_wins_over_the_file(tmp_path, secrets):
    (tmp_path / "OMHOOKS_WEBHOOK_SECRETS").write_text(secrets["current"])
    code = (
        "from omhooks.settings import get_settings;print(','.join(get_settings().secret_values()))"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OMHOOKS_")}
    env = {
        **clean,
        "OMHOOKS_SECRETS_DIR": str(tmp_path),
        "OMHOOKS_WEBHOOK_SECRETS": secrets["previous"],
    }

    completed = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30
    )

    assert completed.stdout.strip() == secrets["previous"]


@pytest.mark.parametrize("value", ["0.5", "16", "inf", "nan"])
def test_body_timeout_out_of_range_is_rejected(value):
    with pytest.raises(ValidationError) as caught:
        Settings(body_timeout_seconds=value)

    assert caught.value.errors()[0]["loc"] == ("body_timeout_seconds",)


@pytest.mark.parametrize("value", ["1", "15"])
def test_body_timeout_limits_are_accepted(value):
    assert Settings(body_timeout_seconds=value).body_timeout_seconds == float(value)


def test_invalid_setting_error_omits_value(monkeypatch, capsys):
    monkeypatch.setenv("OMHOOKS_RETRY_TIME_LIMIT_SECONDS", "-7.25")
    monkeypatch.setenv("OMHOOKS_WORKER_THREADS", "0")

    status = main(["config"])
    error = capsys.readouterr().err

    assert status == 2
    assert "OMHOOKS_RETRY_TIME_LIMIT_SECONDS: Input should be greater than 0" in error
    assert "OMHOOKS_WORKER_THREADS: Input should be greater than or equal to 1" in error
    assert "-7.25" not in error
    assert "Traceback" not in error
