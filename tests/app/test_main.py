"""`python -m app`: command line and settings reach uvicorn."""

from __future__ import annotations

from typing import Any

import pytest

import app.__main__ as entry


@pytest.fixture
def uvicorn_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(entry.uvicorn, "run", lambda app, **options: calls.append(options))
    monkeypatch.setattr(entry.signal, "signal", lambda *args: None)  # keep pytest's handlers
    return calls


def test_the_access_log_is_off_by_default(uvicorn_calls: list[dict[str, Any]]) -> None:
    entry.main(["--port", "8123"])
    assert uvicorn_calls[0]["access_log"] is False
    assert uvicorn_calls[0]["port"] == 8123


def test_the_access_log_can_be_turned_on(
    uvicorn_calls: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VISION_SERVING_ACCESS_LOG", "true")
    entry.main([])
    assert uvicorn_calls[0]["access_log"] is True
