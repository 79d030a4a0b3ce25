"""Settings that are checked beyond their type: the drift window."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.contract.drift import MIN_SCORED_PREDICTIONS
from app.settings import MAX_DRIFT_WINDOW, Settings


@pytest.mark.parametrize("size", [0, MIN_SCORED_PREDICTIONS, 1000, MAX_DRIFT_WINDOW])
def test_drift_window_is_off_or_large_enough_to_score(size: int) -> None:
    assert Settings(drift_window=size).drift_window == size


def test_a_drift_window_too_small_to_score_says_what_to_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VISION_SERVING_DRIFT_WINDOW", "50")
    with pytest.raises(ValidationError) as raised:
        Settings()
    message = str(raised.value)
    assert "too few to score drift" in message
    assert f"VISION_SERVING_DRIFT_WINDOW to at least {MIN_SCORED_PREDICTIONS}" in message
    assert "or to 0 to turn prediction monitoring off" in message


@pytest.mark.parametrize("size", [-1, MAX_DRIFT_WINDOW + 1])
def test_a_drift_window_out_of_range_is_refused(size: int) -> None:
    with pytest.raises(ValidationError, match="drift_window"):
        Settings(drift_window=size)
