"""Prediction profiles and drift scores: hand-checked figures, and the noise of a PSI."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from app.contract.decision import OperatingFigures, OperatingPoint
from app.contract.drift import (
    MIN_SCORED_PREDICTIONS,
    PSI_DRIFT,
    PSI_EPSILON,
    PredictionProfile,
    default_confidence_edges,
    default_low_confidence_threshold,
    drift_scores,
    population_stability_index,
    prediction_profile,
)

TWO = ["a", "b"]
DIGITS = [str(d) for d in range(10)]


def entropy_nats(row: list[float]) -> float:
    return -sum(p * math.log(p) for p in row if p > 0)


def test_default_edges_run_from_chance_to_one_finest_near_one() -> None:
    assert default_confidence_edges(10) == pytest.approx(
        [0.1, 0.28, 0.46, 0.64, 0.82, 0.91, 0.973, 0.991, 0.9991, 0.99991, 1.0]
    )
    assert default_confidence_edges(2) == pytest.approx(
        [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.985, 0.995, 0.9995, 0.99995, 1.0]
    )
    with pytest.raises(ValueError, match="at least 2 classes"):
        default_confidence_edges(1)


def test_low_confidence_is_halfway_between_chance_and_certainty() -> None:
    assert default_low_confidence_threshold(10) == pytest.approx(0.55)
    assert default_low_confidence_threshold(2) == pytest.approx(0.75)


def test_profile_figures_by_hand() -> None:
    rows = [[0.93, 0.07], [0.65, 0.35], [0.15, 0.85], [0.5, 0.5]]
    profile = prediction_profile(rows, TWO)
    assert profile.count == 4
    assert profile.class_mix == {"a": 0.75, "b": 0.25}  # a tie goes to the first class
    assert profile.mean_confidence == pytest.approx((0.93 + 0.65 + 0.85 + 0.5) / 4)
    assert profile.mean_entropy == pytest.approx(sum(entropy_nats(r) for r in rows) / 4)
    assert profile.low_confidence_threshold == pytest.approx(0.75)
    assert profile.low_confidence_share == 0.5  # 0.65 and 0.5
    assert profile.no_digit_share is None
    # Bins [0.5, 0.6) [0.6, 0.7) [0.7, 0.8) [0.8, 0.9) [0.9, 0.95) ...: 0.5, 0.65, 0.85, 0.93.
    assert profile.confidence_histogram == [0.25, 0.25, 0, 0.25, 0.25, 0, 0, 0, 0, 0]


def test_the_class_mix_counts_the_labels_an_operating_point_decides() -> None:
    """The label answered, not the argmax; the confidence figures stay the top probability."""
    rows = [[0.93, 0.07], [0.65, 0.35], [0.15, 0.85], [0.5, 0.5]]
    figures = OperatingFigures(
        count=4, recall=1, specificity=1, precision=1, accuracy=1, balanced_accuracy=1
    )
    point = OperatingPoint(positive_class="b", threshold=0.3, goal="test", figures=figures)
    decided = prediction_profile(rows, TWO, operating_point=point)
    # P(b) >= 0.3: 0.35, 0.85 and 0.5 are labelled b; 0.07 is not.
    assert decided.class_mix == {"a": 0.25, "b": 0.75}
    at_argmax = prediction_profile(rows, TWO)
    assert at_argmax.class_mix == {"a": 0.75, "b": 0.25}
    assert decided.mean_confidence == pytest.approx((0.93 + 0.65 + 0.85 + 0.5) / 4)
    assert decided.confidence_histogram == at_argmax.confidence_histogram
    assert decided.low_confidence_share == at_argmax.low_confidence_share == 0.5


def test_certain_and_below_chance_confidences_stay_in_the_end_bins() -> None:
    certain = prediction_profile([[1.0, 0.0]], TWO)
    assert certain.confidence_histogram[-1] == 1
    rounded = prediction_profile([[0.4999999, 0.4999999]], TWO)  # float rounding below 1/K
    assert rounded.confidence_histogram[0] == 1


def test_profile_in_given_bins_and_threshold() -> None:
    profile = prediction_profile(
        [[0.7, 0.3], [0.2, 0.8]],
        TWO,
        confidence_edges=[0.5, 0.75, 1.0],
        low_confidence_threshold=0.9,
    )
    assert profile.confidence_histogram == [0.5, 0.5]
    assert profile.low_confidence_share == 1.0


def test_no_digit_share_counts_the_pictures_that_were_checked() -> None:
    rows = np.full((4, 10), 0.1)
    assert prediction_profile(rows, DIGITS, [True, False, True, True]).no_digit_share == 0.25
    # Two rows came as raw pixels and skipped the check.
    assert prediction_profile(rows, DIGITS, [False, True]).no_digit_share == 0.5
    assert prediction_profile(rows, DIGITS, []).no_digit_share is None
    with pytest.raises(ValueError, match="5 answers for 4 predictions"):
        prediction_profile(rows, DIGITS, [True] * 5)


@pytest.mark.parametrize(
    ("probabilities", "message"),
    [
        (np.ones((3, 3)) / 3, r"must be \[N, 2\]"),
        (np.ones(2) / 2, r"must be \[N, 2\]"),
        (np.empty((0, 2)), "at least one prediction"),
        (np.array([[np.nan, 1.0]]), "NaN"),
    ],
)
def test_bad_probabilities_are_refused(probabilities: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        prediction_profile(probabilities, TWO)


def test_psi_by_hand() -> None:
    assert population_stability_index([0.5, 0.5], [0.5, 0.5]) == 0
    shifted = 0.4 * math.log(0.9 / 0.5) + (-0.4) * math.log(0.1 / 0.5)
    assert population_stability_index([0.5, 0.5], [0.9, 0.1]) == pytest.approx(shifted)
    # An empty reference bin counts as PSI_EPSILON, so the index stays finite.
    floored = -0.5 * math.log(0.5) + (0.5 - PSI_EPSILON) * math.log(0.5 / PSI_EPSILON)
    assert population_stability_index([1.0, 0.0], [0.5, 0.5]) == pytest.approx(floored)
    with pytest.raises(ValueError, match="2 reference bins against 3"):
        population_stability_index([0.5, 0.5], [0.2, 0.3, 0.5])


def smoothed(shares: list[float], smaller_count: int) -> list[float]:
    """The documented smoothing: half a prediction of the smaller profile in every bin."""
    added = [share + 0.5 / smaller_count for share in shares]
    return [a / sum(added) for a in added]


def test_drift_scores_are_the_larger_psi_over_the_drift_psi() -> None:
    reference = prediction_profile([[0.97, 0.03], [0.03, 0.97]] * 2, TWO)  # half each, sure
    same = prediction_profile([[0.03, 0.97], [0.97, 0.03]] * 5, TWO)  # more of the same
    unchanged = drift_scores(reference, same)
    assert (unchanged.confidence_psi, unchanged.class_mix_psi, unchanged.drift_score) == (0, 0, 0)
    assert not unchanged.drifted and unchanged.count == 10
    # All "a" now, and half of them unsure: both distributions move.
    current = prediction_profile([[0.97, 0.03], [0.55, 0.45]] * 3, TWO)
    scores = drift_scores(reference, current)
    class_psi = population_stability_index(smoothed([0.5, 0.5], 4), smoothed([1.0, 0.0], 4))
    confidence_psi = population_stability_index(
        smoothed(reference.confidence_histogram, 4), smoothed(current.confidence_histogram, 4)
    )
    assert scores.count == 6
    assert scores.class_mix_psi == pytest.approx(class_psi)
    assert scores.confidence_psi == pytest.approx(confidence_psi)
    assert scores.drift_score == pytest.approx(max(class_psi, confidence_psi) / PSI_DRIFT)
    assert scores.drifted
    assert scores.normalized() == pytest.approx(
        {
            "confidence": confidence_psi / PSI_DRIFT,
            "class_mix": class_psi / PSI_DRIFT,
            "combined": scores.drift_score,
        }
    )


def test_an_empty_class_in_a_small_window_does_not_decide_the_score() -> None:
    """A class of 5% is missing from 100 predictions by chance 0.6% of the time."""
    names = ["rare", "common"]
    reference = prediction_profile([[0.99, 0.01]] * 500 + [[0.01, 0.99]] * 9500, names)
    current = prediction_profile([[0.01, 0.99]] * MIN_SCORED_PREDICTIONS, names)
    assert drift_scores(reference, current).class_mix_psi < PSI_DRIFT  # ~0.11; ~0.5 unsmoothed


def test_profiles_must_share_classes_and_bins() -> None:
    reference = prediction_profile([[0.9, 0.1]], TWO)
    with pytest.raises(ValueError, match="different classes"):
        drift_scores(reference, prediction_profile([[0.9, 0.1]], ["x", "y"]))
    other_bins = prediction_profile([[0.9, 0.1]], TWO, confidence_edges=[0.5, 1.0])
    with pytest.raises(ValueError, match="reference's confidence_edges"):
        drift_scores(reference, other_bins)


def softmax_outputs(rng: np.random.Generator, n: int, sharpness: float) -> np.ndarray:
    """Outputs of a model that is mostly sure (large `sharpness`) of uneven classes."""
    classes = rng.choice(10, size=n, p=np.linspace(0.05, 0.15, 10))
    logits = rng.normal(0, 1, size=(n, 10))
    logits[np.arange(n), classes] += rng.exponential(sharpness, size=n)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def test_an_unchanged_model_stays_under_the_threshold_at_the_minimum_window() -> None:
    """The documented noise: ~(bins - 1) / n PSI, so 100 predictions rarely reach 0.25."""
    rng = np.random.default_rng(0)
    reference = prediction_profile(softmax_outputs(rng, 10_000, sharpness=8), DIGITS)
    windows = [
        prediction_profile(
            softmax_outputs(rng, MIN_SCORED_PREDICTIONS, sharpness=8),
            DIGITS,
            confidence_edges=reference.confidence_edges,
        )
        for _ in range(200)
    ]
    scores = [drift_scores(reference, window) for window in windows]
    mean_psi = np.mean([s.confidence_psi for s in scores])
    assert 0.03 < mean_psi < 0.15  # ~9 / 100
    assert sum(s.drifted for s in scores) <= 4  # at most 2% false alarms (~0.5% seen)
    # A model shown other inputs, less sure of them, is caught at the same window size.
    unsure = prediction_profile(
        softmax_outputs(rng, MIN_SCORED_PREDICTIONS, sharpness=2),
        DIGITS,
        confidence_edges=reference.confidence_edges,
    )
    assert drift_scores(reference, unsure).drifted


def test_profile_survives_json_and_refuses_inconsistent_fields() -> None:
    profile = prediction_profile([[0.93, 0.07], [0.15, 0.85]], TWO, [True, False])
    assert PredictionProfile.model_validate_json(profile.model_dump_json()) == profile
    data = profile.model_dump()
    bad = [
        ({"confidence_histogram": [1.0]}, "one share per bin"),
        ({"confidence_edges": [0.5, 0.9, 0.7, 1.0]}, "strictly ascending"),
        ({"class_mix": {"a": 0.7, "b": 0.7}}, "sum to 1"),
        ({"confidence_edges": [-0.5, *data["confidence_edges"][1:]]}, r"within \[0, 1\]"),
    ]
    for override, message in bad:
        with pytest.raises(ValidationError, match=message):
            PredictionProfile.model_validate({**data, **override})
