"""`python -m app`: what its settings tell uvicorn."""

from __future__ import annotations

import pytest

from app.__main__ import uvicorn_options
from app.settings import Settings


def test_the_access_log_is_off_by_default() -> None:
    assert uvicorn_options(Settings())["access_log"] is False


def test_the_access_log_can_be_turned_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISION_SERVING_ACCESS_LOG", "true")
    assert uvicorn_options(Settings())["access_log"] is True


def test_host_port_and_log_level_come_from_the_settings() -> None:
    options = uvicorn_options(Settings(host="0.0.0.0", port=8123, log_level="warning"))
    assert (options["host"], options["port"], options["log_level"]) == ("0.0.0.0", 8123, "warning")
