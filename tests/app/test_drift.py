"""Prediction windows: the ring, the monitor's verdicts, and what the served APIs record."""

from __future__ import annotations

import base64
import io
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest

from app.contract.decision import OperatingFigures, OperatingPoint
from app.contract.drift import MIN_SCORED_PREDICTIONS, PredictionProfile, prediction_profile
from app.contract.model_card import InputSpec, ModelCard
from app.drift import PredictionMonitor, PredictionWindow
from app.repository import ModelState, ServedModel
from tests.app.conftest import ServeFn
from tests.app.images import png
from tests.app.tiny_models import TINY_DIGITS, TINY_XRAY, tiny_card

pytestmark = pytest.mark.anyio

XRAY_CLASSES = ["NORMAL", "PNEUMONIA"]
DIGIT_CLASSES = [str(d) for d in range(10)]
GRAY = InputSpec(height=28, width=28, channels=1, color_mode="grayscale")


def xray_card(reference_rows: np.ndarray | None = None, **profile: object) -> ModelCard:
    card = tiny_card("xray", 1, XRAY_CLASSES, GRAY, "resize")
    if reference_rows is None:
        return card
    reference = prediction_profile(reference_rows, XRAY_CLASSES, **profile)  # type: ignore[arg-type]
    return card.model_copy(update={"prediction_profile": reference})


def served(card: ModelCard) -> ServedModel:
    return ServedModel(card.name, card.version, Path("."), ModelState.READY, card=card)


def rows(n: int, first: float) -> np.ndarray:
    """`n` two-class outputs, each giving the first class probability `first`."""
    return np.tile(np.array([[first, 1 - first]], dtype=np.float32), (n, 1))


def numbered_rows(start: int, n: int) -> np.ndarray:
    """Distinct two-class outputs, so a test can tell which rows a window kept."""
    first = np.linspace(0.01, 0.99, 200, dtype=np.float32)[start : start + n]
    return np.stack([first, 1 - first], axis=1)


def assert_same_profile(actual: PredictionProfile | None, expected: PredictionProfile) -> None:
    """Equal up to float rounding (a ring sums its rows in another order)."""
    assert actual is not None
    for field, value in expected.model_dump().items():
        if isinstance(value, dict):
            value = list(value.values())
            assert list(getattr(actual, field)) == list(getattr(expected, field))
            assert list(getattr(actual, field).values()) == pytest.approx(value), field
        else:
            assert getattr(actual, field) == pytest.approx(value), field


# The ring ----------------------------------------------------------------------------


def test_the_window_keeps_the_last_rows_across_wrap_arounds() -> None:
    window = PredictionWindow(xray_card(), size=5)
    assert window.profile() is None
    window.record(numbered_rows(0, 3), None)
    window.record(numbered_rows(3, 4), None)  # wraps round: rows 2-6 are kept
    assert window.count == 5
    assert_same_profile(window.profile(), prediction_profile(numbered_rows(2, 5), XRAY_CLASSES))
    window.record(numbered_rows(10, 7), None)  # more than the ring: its last 5
    assert_same_profile(window.profile(), prediction_profile(numbered_rows(12, 5), XRAY_CLASSES))
    window.record(numbered_rows(20, 0), None)
    assert_same_profile(window.profile(), prediction_profile(numbered_rows(12, 5), XRAY_CLASSES))


def test_no_digit_share_counts_only_the_pictures_that_were_checked() -> None:
    card = tiny_card("digits", 1, DIGIT_CLASSES, GRAY, "mnist-digit")
    window = PredictionWindow(card, size=4)
    sure = np.eye(10, dtype=np.float32)[:2]
    window.record(sure, [True, False])
    window.record(sure, None)  # tensors sent as raw pixels skip the digit check
    profile = window.profile()
    assert profile is not None and profile.no_digit_share == 0.5
    window.record(sure, None)  # the checked rows are overwritten
    profile = window.profile()
    assert profile is not None and profile.no_digit_share is None
    without_check = PredictionWindow(xray_card(), size=4)
    without_check.record(rows(2, 0.9), None)
    profile = without_check.profile()
    assert profile is not None and profile.no_digit_share is None


def test_the_window_is_profiled_in_the_reference_bins() -> None:
    card = xray_card(rows(10, 0.9), confidence_edges=[0.5, 0.8, 1.0], low_confidence_threshold=0.6)
    window = PredictionWindow(card, size=10)
    window.record(rows(4, 0.7), None)
    profile = window.profile()
    assert profile is not None
    assert profile.confidence_edges == [0.5, 0.8, 1.0]
    assert profile.confidence_histogram == [1.0, 0.0]
    assert profile.low_confidence_threshold == 0.6 and profile.low_confidence_share == 0.0


def test_rows_with_nan_or_infinity_are_left_out_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    card = tiny_card("digits", 1, DIGIT_CLASSES, GRAY, "mnist-digit")
    window = PredictionWindow(card, size=10)
    sure = np.eye(10, dtype=np.float32)
    bad = sure[:4].copy()
    bad[1, 3] = np.nan
    bad[2, 0] = np.inf
    with caplog.at_level(logging.WARNING, logger="app.drift"):
        window.record(bad, [True, False, True, False])  # rows 0 and 3 are kept
        window.record(np.full((1, 10), -np.inf, dtype=np.float32), None)
    assert window.count == 2 and window.non_finite_skipped == 3
    expected = prediction_profile(sure[[0, 3]], DIGIT_CLASSES, [True, False])
    assert_same_profile(window.profile(), expected)
    warnings = [r.getMessage() for r in caplog.records if r.name == "app.drift"]
    assert len(warnings) == 1 and "digits v1 answered probabilities holding NaN" in warnings[0]

    monitor = PredictionMonitor(window_size=10)
    model = served(xray_card())
    monitor.record(model, np.array([[np.nan, 0.5], [0.9, 0.1]], dtype=np.float32), None)
    recent = monitor.recent(model)  # summarised, not raising
    assert recent is not None and recent.count == 1 and recent.non_finite_skipped == 1


def test_the_class_mix_counts_the_labels_the_cards_operating_point_decides() -> None:
    figures = OperatingFigures(
        count=10, recall=1, specificity=1, precision=1, accuracy=1, balanced_accuracy=1
    )
    point = OperatingPoint(positive_class="PNEUMONIA", threshold=0.2, goal="test", figures=figures)
    card = xray_card().model_copy(update={"operating_point": point})
    window = PredictionWindow(card, size=10)
    window.record(rows(3, 0.7), None)  # P(PNEUMONIA) 0.3 >= 0.2: answered PNEUMONIA
    window.record(rows(1, 0.9), None)  # 0.1: NORMAL
    profile = window.profile()
    assert profile is not None
    assert profile.class_mix == {"NORMAL": 0.25, "PNEUMONIA": 0.75}
    assert profile.mean_confidence == pytest.approx((0.7 * 3 + 0.9) / 4)  # the top probability


# The monitor's verdicts --------------------------------------------------------------


def test_without_a_reference_the_window_is_summarised_but_not_scored() -> None:
    monitor = PredictionMonitor(window_size=200)
    model = served(xray_card())
    monitor.record(model, rows(150, 0.9), None)
    recent = monitor.recent(model)
    assert recent is not None
    assert (recent.status, recent.count, recent.window_size) == ("no_reference", 150, 200)
    assert recent.note is not None and "no reference in the card" in recent.note
    assert recent.scores is None and recent.reference is None
    assert recent.window is not None and recent.window.class_mix == {"NORMAL": 1, "PNEUMONIA": 0}


def test_scores_come_at_the_minimum_window_and_tell_ok_from_drift() -> None:
    reference_rows = np.concatenate([rows(500, 0.99), rows(500, 0.01)])  # half each, sure
    monitor = PredictionMonitor(window_size=MIN_SCORED_PREDICTIONS)
    model = served(xray_card(reference_rows))
    assert (recent := monitor.recent(model)) is not None and recent.status == "warming_up"
    assert recent.count == 0 and recent.window is None

    half = MIN_SCORED_PREDICTIONS // 2
    monitor.record(model, rows(half - 1, 0.99), None)
    monitor.record(model, rows(half, 0.01), None)
    recent = monitor.recent(model)
    assert recent is not None and recent.status == "warming_up" and recent.scores is None
    assert recent.note == f"a drift score needs {MIN_SCORED_PREDICTIONS} predictions; 99 so far"

    monitor.record(model, rows(1, 0.99), None)
    recent = monitor.recent(model)
    assert recent is not None and recent.status == "ok"
    assert recent.scores is not None and recent.scores.drift_score < 0.1
    assert recent.reference == model.card.prediction_profile  # type: ignore[union-attr]

    monitor.record(model, rows(MIN_SCORED_PREDICTIONS, 0.6), None)  # unsure, all NORMAL
    recent = monitor.recent(model)
    assert recent is not None and recent.status == "drift"
    assert recent.scores is not None and recent.scores.drift_score > 1


def test_a_reloaded_version_starts_with_an_empty_window() -> None:
    monitor = PredictionMonitor(window_size=100)
    card = xray_card()
    first = served(card)
    monitor.record(first, rows(3, 0.9), None)
    reloaded = served(card)
    assert (recent := monitor.recent(reloaded)) is not None and recent.count == 0
    assert (recent := monitor.recent(first)) is not None and recent.count == 3


# What the served APIs record ---------------------------------------------------------


def detail_path(model: str) -> str:
    return f"/api/v1/models/{model}"


async def test_every_protocol_is_recorded_and_evaluations_are_not(serve: ServeFn) -> None:
    picture = png()
    b64 = {"b64": base64.b64encode(picture).decode("ascii")}
    pixels = np.zeros((2, 28, 28, 1)).tolist()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("3/a.png", picture)
    async with serve(drift_window=100) as client:
        native = [("files", ("a.png", picture)), ("files", ("b.png", picture))]
        response = await client.post(f"/api/v1/models/{TINY_DIGITS}/predict", files=native)
        found = response.json()["predictions"][0]["digit_found"]
        tfserving = f"/v1/models/{TINY_DIGITS}:predict"
        assert (await client.post(tfserving, json={"instances": [b64]})).is_success
        assert (await client.post(tfserving, json={"instances": pixels})).is_success
        v2 = {
            "inputs": [{"name": "pixels", "datatype": "BYTES", "shape": [1], "data": [b64["b64"]]}]
        }
        response = await client.post(f"/v2/models/{TINY_DIGITS}/infer", json=v2)
        assert response.is_success, response.text
        evaluate = f"/api/v1/models/{TINY_DIGITS}/evaluate"
        labelled = {"archive": ("l.zip", archive.getvalue(), "application/zip")}
        assert (await client.post(evaluate, files=labelled)).is_success
        recent = (await client.get(detail_path(TINY_DIGITS))).json()["recent_predictions"]
        other = (await client.get(detail_path(TINY_XRAY))).json()["recent_predictions"]
    assert recent["count"] == 2 + 1 + 2 + 1  # not the evaluation's image
    assert recent["window_size"] == 100
    assert recent["status"] == "no_reference"  # the tiny cards have no profile
    # The same picture 4 times, checked each time; the tensors skipped the digit check.
    assert recent["window"]["no_digit_share"] == (0.0 if found else 1.0)
    assert other["count"] == 0 and other["window"] is None


async def test_a_card_with_a_profile_is_scored_on_the_detail_api(
    serve: ServeFn, model_dir_copy: Path
) -> None:
    files = [("files", (f"{i}.png", png(seed=i, size=32))) for i in range(50)]
    url = f"/api/v1/models/{TINY_XRAY}/probabilities"
    async with serve() as client:
        results = (await client.post(url, files=files)).json()["results"]
    answers = np.array([[r["probabilities"][c] for c in XRAY_CLASSES] for r in results])
    version_dir = model_dir_copy / TINY_XRAY / "1"
    reference = prediction_profile(answers, XRAY_CLASSES)
    ModelCard.read(version_dir).model_copy(update={"prediction_profile": reference}).write(
        version_dir
    )
    async with serve(model_dir=model_dir_copy, drift_window=MIN_SCORED_PREDICTIONS) as client:
        for _ in range(2):
            assert (await client.post(url, files=files)).is_success
        recent = (await client.get(detail_path(TINY_XRAY))).json()["recent_predictions"]
    assert recent["status"] == "ok"
    assert recent["scores"]["drift_score"] < 0.05  # the very answers the profile was made of
    assert recent["reference"] == reference.model_dump(mode="json")


async def test_monitoring_off_records_nothing_and_exports_nothing(serve: ServeFn) -> None:
    async with serve(drift_window=0) as client:
        picture = [("files", ("a.png", png()))]
        assert (
            await client.post(f"/api/v1/models/{TINY_DIGITS}/predict", files=picture)
        ).is_success
        detail = (await client.get(detail_path(TINY_DIGITS))).json()
        metrics = (await client.get("/metrics")).text
    assert detail["recent_predictions"] is None
    assert "vision_serving_prediction_" not in metrics
