"""`python -m app`: what its settings tell uvicorn, and how it refuses to start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from uvicorn.server import STARTUP_FAILURE

from app.__main__ import uvicorn_options
from app.settings import Settings
from tests.conftest import REPO_ROOT


def test_the_access_log_is_off_by_default() -> None:
    assert uvicorn_options(Settings())["access_log"] is False


def test_the_access_log_can_be_turned_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISION_SERVING_ACCESS_LOG", "true")
    assert uvicorn_options(Settings())["access_log"] is True


def test_host_port_and_log_level_come_from_the_settings() -> None:
    options = uvicorn_options(Settings(host="0.0.0.0", port=8123, log_level="warning"))
    assert (options["host"], options["port"], options["log_level"]) == ("0.0.0.0", 8123, "warning")


@pytest.mark.parametrize(
    ("arguments", "environment"),
    [
        (["--device", "gpu"], {}),
        ([], {"VISION_SERVING_DEVICE": "gpu"}),
        (["--device", "gpu", "--workers", "2"], {}),
    ],
    ids=["option", "environment", "workers"],
)
def test_gpu_without_a_gpu_is_one_line_and_startup_failure(
    arguments: list[str], environment: dict[str, str], tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISION_SERVING_")}
    env.update(environment, CUDA_VISIBLE_DEVICES="")  # no GPU, even on a machine with one
    command = [sys.executable, "-m", "app", "--port", "0", "--model-dir", str(tmp_path)]
    finished = subprocess.run(
        [*command, *arguments],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finished.returncode == STARTUP_FAILURE, finished.stderr
    assert "Traceback" not in finished.stderr
    [line] = [line for line in finished.stderr.splitlines() if "sees no GPU" in line]
    assert line.startswith("python -m app: error: device is set to 'gpu'")
    assert "VISION_SERVING_DEVICE=auto or cpu" in line
