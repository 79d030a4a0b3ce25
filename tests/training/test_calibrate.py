"""Temperature scaling and threshold choice on synthetic data whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.typing import NDArray

from app.contract.classification import expected_calibration_error
from app.contract.decision import OperatingFigures, OperatingPoint, decide
from training.calibrate import (
    TEMPERATURE_RANGE,
    BalancedAccuracy,
    RecallAtLeast,
    apply_temperature,
    choose_threshold,
    fit_temperature,
)

XRAY = ["NORMAL", "PNEUMONIA"]


def softmax(logits: NDArray[np.float64]) -> NDArray[np.float64]:
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def overconfident_sample(
    true_temperature: float, count: int = 20_000, classes: int = 4, seed: int = 0
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
    """Logits, the model's softmax of them, and labels drawn from softmax(logits / T)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 3.0, (count, classes))
    truth = softmax(logits / true_temperature)
    cumulative = truth.cumsum(axis=1)
    labels = (rng.random((count, 1)) > cumulative).sum(axis=1).astype(np.int64)
    return logits, softmax(logits), labels


# --- Temperature --------------------------------------------------------------------------


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.0])
def test_fit_temperature_recovers_the_temperature_the_labels_were_drawn_with(
    true_temperature: float,
) -> None:
    logits, probabilities, labels = overconfident_sample(true_temperature)
    assert fit_temperature(probabilities, labels) == pytest.approx(true_temperature, rel=0.05)
    assert fit_temperature(logits, labels, kind="logits") == pytest.approx(
        true_temperature, rel=0.05
    )


def test_fitted_temperature_minimises_the_likelihood() -> None:
    _, probabilities, labels = overconfident_sample(1.7, count=5_000, classes=3, seed=1)

    def nll(temperature: float) -> float:
        calibrated = apply_temperature(probabilities, temperature)
        return float(-np.log(calibrated[np.arange(labels.size), labels]).mean())

    fitted = fit_temperature(probabilities, labels)
    grid = np.exp(np.linspace(math.log(0.5), math.log(5.0), 400))
    best_on_grid = grid[int(np.argmin([nll(t) for t in grid]))]
    assert fitted == pytest.approx(best_on_grid, rel=0.01)
    assert nll(fitted) <= min(nll(fitted * 0.98), nll(fitted * 1.02))


def test_calibration_lowers_the_ece_of_an_overconfident_model() -> None:
    _, probabilities, labels = overconfident_sample(2.0, seed=2)
    temperature = fit_temperature(probabilities, labels)
    before = expected_calibration_error(probabilities, labels)
    after = expected_calibration_error(apply_temperature(probabilities, temperature), labels)
    assert before is not None and after is not None
    assert before > 0.05
    assert after < 0.02


def test_a_perfect_model_is_sharpened_to_the_lower_end_of_the_range() -> None:
    probabilities = np.array([[0.8, 0.2], [0.3, 0.7]] * 10)
    labels = np.array([0, 1] * 10)
    assert fit_temperature(probabilities, labels) == pytest.approx(TEMPERATURE_RANGE[0])


def test_apply_temperature_is_softmax_of_log_probabilities_over_t() -> None:
    probabilities = np.array([[0.7, 0.2, 0.1]])
    # softmax(log p / 2) = sqrt(p) / sum(sqrt(p))
    expected = np.sqrt(probabilities) / np.sqrt(probabilities).sum()
    np.testing.assert_allclose(apply_temperature(probabilities, 2.0), expected)
    np.testing.assert_allclose(apply_temperature(probabilities, 1.0), probabilities)


def test_apply_temperature_keeps_the_argmax_and_clips_zeros_at_the_floor() -> None:
    probabilities = np.array([[1.0, 0.0], [0.4, 0.6]])
    calibrated = apply_temperature(probabilities, 3.0)
    np.testing.assert_allclose(calibrated.sum(axis=1), 1.0)
    assert calibrated.argmax(axis=1).tolist() == [0, 1]
    # log(1e-7) / 3 against log(1) / 3: the zero became (1e-7)^(1/3) / (1 + (1e-7)^(1/3))
    floor_share = 1e-7 ** (1 / 3)
    assert calibrated[0, 1] == pytest.approx(floor_share / (1 + floor_share))


@pytest.mark.parametrize("temperature", [0.0, -1.0, math.nan, math.inf])
def test_apply_temperature_refuses_a_bad_temperature(temperature: float) -> None:
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        apply_temperature([[0.5, 0.5]], temperature)


def test_fit_temperature_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="no examples"):
        fit_temperature(np.zeros((0, 2)), [])
    with pytest.raises(ValueError, match="2 labels for 1 rows"):
        fit_temperature([[0.5, 0.5]], [0, 1])
    with pytest.raises(ValueError, match=r"outside 0\.\.1"):
        fit_temperature([[0.5, 0.5]], [2])
    with pytest.raises(ValueError, match="kind must be"):
        fit_temperature([[0.5, 0.5]], [0], kind="scores")  # type: ignore[arg-type]


# --- Threshold ----------------------------------------------------------------------------


def binary_sample(count: int, seed: int) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Overlapping scores, positives higher on average, many ties (two decimals)."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(count) < 0.6).astype(np.int64)
    scores = np.clip(rng.normal(0.35 + 0.3 * labels, 0.2), 0.01, 0.99).round(2)
    return np.stack([1 - scores, scores], axis=1), labels


def counts_at(
    probabilities: NDArray[np.float64], labels: NDArray[np.int64], threshold: float
) -> tuple[int, int, int, int]:
    """(TP, FP, FN, TN) of PNEUMONIA, labelled by the contract's own rule."""
    figures = OperatingFigures(
        count=0, recall=0, specificity=0, precision=None, accuracy=0, balanced_accuracy=0
    )
    point = OperatingPoint(
        positive_class="PNEUMONIA", threshold=threshold, goal="", figures=figures
    )
    said = decide(probabilities, XRAY, point) == 1
    truth = labels == 1
    return (
        int((said & truth).sum()),
        int((said & ~truth).sum()),
        int((~said & truth).sum()),
        int((~said & ~truth).sum()),
    )


def brute_force_thresholds(scores: NDArray[np.float64]) -> list[float]:
    """Every score, and a point between each pair of neighbouring scores and at the ends."""
    distinct = np.unique(scores)
    between = (distinct[1:] + distinct[:-1]) / 2
    ends = [distinct[0] / 2, (distinct[-1] + 1) / 2]
    return sorted({float(t) for t in [*distinct, *between, *ends] if 0 < t < 1})


@pytest.mark.parametrize("seed", range(5))
def test_recall_goal_matches_a_brute_force_sweep(seed: int) -> None:
    probabilities, labels = binary_sample(300, seed)
    choice = choose_threshold(probabilities, labels, 1, RecallAtLeast(0.95))
    best = None
    for threshold in brute_force_thresholds(probabilities[:, 1]):
        tp, fp, fn, tn = counts_at(probabilities, labels, threshold)
        if tp / (tp + fn) >= 0.95:
            key = (tn / (tn + fp), tp / (tp + fn))  # specificity, then recall
            best = max(best or key, key)
    assert best is not None
    assert (choice.figures.specificity, choice.figures.recall) == pytest.approx(best)
    assert choice.figures.recall >= 0.95


@pytest.mark.parametrize("seed", range(5))
def test_balanced_accuracy_goal_matches_a_brute_force_sweep(seed: int) -> None:
    probabilities, labels = binary_sample(300, seed + 10)
    choice = choose_threshold(probabilities, labels, 1, BalancedAccuracy())
    best = 0.0
    for threshold in brute_force_thresholds(probabilities[:, 1]):
        tp, fp, fn, tn = counts_at(probabilities, labels, threshold)
        best = max(best, (tp / (tp + fn) + tn / (tn + fp)) / 2)
    assert choice.figures.balanced_accuracy == pytest.approx(best)


def test_the_figures_are_those_the_threshold_gives() -> None:
    probabilities, labels = binary_sample(500, 42)
    choice = choose_threshold(probabilities, labels, 1, RecallAtLeast(0.9))
    tp, fp, fn, tn = counts_at(probabilities, labels, choice.threshold)
    figures = choice.figures
    assert figures.count == 500
    assert figures.recall == tp / (tp + fn)
    assert figures.specificity == tn / (tn + fp)
    assert figures.precision == tp / (tp + fp)
    assert figures.accuracy == (tp + tn) / 500
    assert figures.balanced_accuracy == pytest.approx((figures.recall + figures.specificity) / 2)


def test_hand_worked_recall_goal() -> None:
    # P(PNEUMONIA) of 4 normals and 4 pneumonias. Recall >= 0.75 needs 3 of the 4
    # pneumonias (0.9, 0.6, 0.4) labelled, which lets the normal at 0.5 through too:
    # specificity 3/4. The cut goes halfway between 0.4 and the next score down, 0.35.
    scores = [0.1, 0.2, 0.35, 0.5, 0.3, 0.4, 0.6, 0.9]
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    probabilities = np.array([[1 - s, s] for s in scores])
    choice = choose_threshold(probabilities, labels, 1, RecallAtLeast(0.75))
    assert choice.threshold == pytest.approx(0.375)
    assert choice.figures.recall == 0.75
    assert choice.figures.specificity == 0.75
    point = choice.operating_point(XRAY)
    assert point.positive_class == "PNEUMONIA"
    assert point.goal == "highest specificity with PNEUMONIA recall >= 0.75 on validation"
    assert point.threshold == choice.threshold


def test_recall_goal_ties_in_specificity_go_to_the_higher_recall() -> None:
    # Cuts below 0.7 and below 0.6 both keep every normal out; the lower one finds more.
    scores = [0.1, 0.2, 0.6, 0.7, 0.8]
    labels = [0, 0, 1, 1, 1]
    probabilities = np.array([[1 - s, s] for s in scores])
    choice = choose_threshold(probabilities, labels, 1, RecallAtLeast(0.5))
    assert choice.threshold == pytest.approx(0.4)
    assert (choice.figures.recall, choice.figures.specificity) == (1.0, 1.0)


@pytest.mark.parametrize(
    ("lower_positive", "expected_threshold"),
    [(0.45, (0.1 + 0.45) / 2), (0.4, (0.6 + 0.9) / 2)],
    ids=["nearer-one-half", "as-near-so-higher"],
)
def test_balanced_accuracy_ties_go_to_the_threshold_nearest_one_half(
    lower_positive: float, expected_threshold: float
) -> None:
    # Normals at 0.1 and 0.6, pneumonias at `lower_positive` and 0.9. Labelling only 0.9
    # positive and labelling all but 0.1 positive both give balanced accuracy 0.75.
    scores = [0.1, 0.6, lower_positive, 0.9]
    probabilities = np.array([[1 - s, s] for s in scores])
    choice = choose_threshold(probabilities, [0, 0, 1, 1], 1, BalancedAccuracy())
    assert choice.figures.balanced_accuracy == 0.75
    assert choice.threshold == pytest.approx(expected_threshold)


def test_the_positive_class_may_be_the_first() -> None:
    scores = [0.1, 0.2, 0.35, 0.5, 0.3, 0.4, 0.6, 0.9]  # P(PNEUMONIA)
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    probabilities = np.array([[1 - s, s] for s in scores])
    as_second = choose_threshold(probabilities, labels, 1, BalancedAccuracy())
    # The same problem with NORMAL positive: columns and labels swapped.
    as_first = choose_threshold(
        probabilities[:, ::-1], [1 - y for y in labels], 0, BalancedAccuracy()
    )
    assert as_first.figures.balanced_accuracy == as_second.figures.balanced_accuracy
    assert as_first.operating_point(XRAY[::-1]).positive_class == "PNEUMONIA"


def test_scores_of_exactly_zero_and_one_bound_the_thresholds() -> None:
    probabilities = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    choice = choose_threshold(probabilities, [0, 1, 1], 1, RecallAtLeast(1.0))
    assert 0 < choice.threshold <= 0.5
    assert choice.figures.recall == 1.0
    with pytest.raises(ValueError, match="no threshold in \\(0, 1\\) reaches recall 1"):
        choose_threshold(probabilities, [1, 1, 0], 1, RecallAtLeast(1.0))


def test_neighbouring_floats_still_get_a_threshold_between_them() -> None:
    low = 0.3
    high = float(np.nextafter(low, 1.0))
    probabilities = np.array([[1 - low, low], [1 - high, high]])
    choice = choose_threshold(probabilities, [0, 1], 1, BalancedAccuracy())
    assert choice.figures.balanced_accuracy == 1.0
    assert low < choice.threshold <= high


def test_choose_threshold_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="two-class models"):
        choose_threshold(np.full((3, 3), 1 / 3), [0, 1, 2], 1, BalancedAccuracy())
    with pytest.raises(ValueError, match="both classes; the labels hold 0 positive"):
        choose_threshold([[0.4, 0.6], [0.8, 0.2]], [0, 0], 1, BalancedAccuracy())
    with pytest.raises(ValueError, match="positive_index must be 0 or 1"):
        choose_threshold([[0.4, 0.6], [0.8, 0.2]], [0, 1], 2, BalancedAccuracy())
    with pytest.raises(ValueError, match="recall to keep must be in"):
        RecallAtLeast(0.0)
