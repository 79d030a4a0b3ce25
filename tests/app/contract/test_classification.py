"""Hand-computed checks of the shared classification metrics in `app.contract.classification`."""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import pytest
from numpy.typing import ArrayLike

from app.contract.classification import (
    EvaluationReport,
    binary_roc_auc,
    brier_score,
    calibration_error_of_bins,
    confusion_matrix,
    cross_entropy,
    evaluate_probabilities,
    expected_calibration_error,
    reliability_bins,
    report_from_confusion,
)
from app.contract.decision import OperatingFigures, OperatingPoint

CAT_DOG = [[80, 10], [8, 92]]  # rows: true cat, dog; columns: predicted cat, dog


def _one_hot_ish(predicted: list[int], num_classes: int, top: float) -> np.ndarray:
    """Rows with `top` on the predicted class and the rest shared evenly by the others."""
    rest = (1.0 - top) / (num_classes - 1)
    probs = np.full((len(predicted), num_classes), rest)
    probs[np.arange(len(predicted)), predicted] = top
    return probs


def _pair_counting_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Reference AUC: share of (positive, negative) pairs ranked right, ties counted as half."""
    positives = scores[y_true == 1]
    negatives = scores[y_true == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in product(positives, negatives))
    return wins / (positives.size * negatives.size)


# --- The textbook cat/dog confusion matrix -------------------------------------------------


def test_cat_dog_accuracy_and_count() -> None:
    report = report_from_confusion(CAT_DOG, ["cat", "dog"])
    # count = 80 + 10 + 8 + 92 = 190; right = trace = 80 + 92 = 172
    assert report.count == 190
    assert report.accuracy == pytest.approx(172 / 190)  # 0.905263...
    assert report.confusion_matrix == CAT_DOG
    assert report.class_names == ["cat", "dog"]
    assert report.loss is None
    assert report.roc_auc is None


def test_cat_dog_per_class_cat() -> None:
    cat = report_from_confusion(CAT_DOG, ["cat", "dog"]).per_class["cat"]
    # cat vs rest: TP = 80, FN = 10 (cats called dog), FP = 8 (dogs called cat), TN = 92
    assert cat.precision == pytest.approx(80 / 88)  # TP / (TP + FP) = 0.909091
    assert cat.recall == pytest.approx(80 / 90)  # TP / (TP + FN) = 0.888889
    assert cat.specificity == pytest.approx(92 / 100)  # TN / (TN + FP) = 0.92
    assert cat.fpr == pytest.approx(8 / 100)  # FP / (FP + TN) = 0.08
    assert cat.fnr == pytest.approx(10 / 90)  # FN / (FN + TP) = 0.111111
    # F1 = 2PR / (P + R) = 2TP / (2TP + FP + FN) = 160 / (160 + 8 + 10) = 160 / 178
    assert cat.f1 == pytest.approx(160 / 178)  # 0.898876
    assert cat.support == 90  # 80 + 10


def test_cat_dog_per_class_dog() -> None:
    dog = report_from_confusion(CAT_DOG, ["cat", "dog"]).per_class["dog"]
    # dog vs rest: TP = 92, FN = 8, FP = 10, TN = 80
    assert dog.precision == pytest.approx(92 / 102)  # 0.901961
    assert dog.recall == pytest.approx(92 / 100)  # 0.92
    assert dog.specificity == pytest.approx(80 / 90)  # 0.888889
    assert dog.fpr == pytest.approx(10 / 90)  # 0.111111
    assert dog.fnr == pytest.approx(8 / 100)  # 0.08
    assert dog.f1 == pytest.approx(184 / 202)  # 2*92 / (2*92 + 10 + 8) = 0.910891
    assert dog.support == 100  # 8 + 92


def test_cat_dog_rates_complement_each_other() -> None:
    for metrics in report_from_confusion(CAT_DOG, ["cat", "dog"]).per_class.values():
        assert metrics.specificity is not None
        assert metrics.recall is not None
        assert metrics.fpr == pytest.approx(1 - metrics.specificity)
        assert metrics.fnr == pytest.approx(1 - metrics.recall)


def test_cat_dog_macro_average() -> None:
    macro = report_from_confusion(CAT_DOG, ["cat", "dog"]).macro_avg
    # unweighted mean of the two classes
    assert macro.precision == pytest.approx((80 / 88 + 92 / 102) / 2)  # 0.905526
    assert macro.recall == pytest.approx((80 / 90 + 92 / 100) / 2)  # 0.904444
    assert macro.specificity == pytest.approx((92 / 100 + 80 / 90) / 2)  # 0.904444
    assert macro.f1 == pytest.approx((160 / 178 + 184 / 202) / 2)  # 0.904884
    assert macro.precision == pytest.approx(0.905526, abs=1e-6)


def test_cat_dog_weighted_average() -> None:
    weighted = report_from_confusion(CAT_DOG, ["cat", "dog"]).weighted_avg
    # weights are the supports: cat 90, dog 100, total 190
    assert weighted.precision == pytest.approx((90 * 80 / 88 + 100 * 92 / 102) / 190)
    # support-weighted recall = (80 + 92) / 190, i.e. the accuracy
    assert weighted.recall == pytest.approx(172 / 190)
    # (90 * 0.92 + 100 * 80/90) / 190 = (82.8 + 88.888...) / 190 = 0.903626
    assert weighted.specificity == pytest.approx((82.8 + 8000 / 90) / 190)
    assert weighted.f1 == pytest.approx((90 * 160 / 178 + 100 * 184 / 202) / 190)
    assert weighted.f1 == pytest.approx(0.905200, abs=1e-6)


# --- A three-class case from explicit labels ----------------------------------------------

Y_TRUE_3 = [0, 0, 0, 1, 1, 2, 2, 2, 2]
Y_PRED_3 = [0, 1, 0, 1, 2, 2, 2, 0, 2]
# (true, predicted) pairs: (0,0)x2 (0,1)x1 | (1,1)x1 (1,2)x1 | (2,2)x3 (2,0)x1
EXPECTED_3 = [
    [2, 1, 0],  # true a: 2 right, 1 called b
    [0, 1, 1],  # true b: 1 right, 1 called c
    [1, 0, 3],  # true c: 1 called a, 3 right
]


def test_confusion_matrix_rows_are_true_columns_predicted() -> None:
    matrix = confusion_matrix(Y_TRUE_3, Y_PRED_3, 3)
    assert matrix.dtype == np.int64
    assert matrix.tolist() == EXPECTED_3
    # orientation: one true-a example predicted b sits at [0][1], none at [1][0]
    assert matrix[0, 1] == 1
    assert matrix[1, 0] == 0


def test_confusion_matrix_single_pair() -> None:
    # a single example of true class 2 predicted as 0 lands in row 2, column 0
    assert confusion_matrix([2], [0], 3).tolist() == [[0, 0, 0], [0, 0, 0], [1, 0, 0]]


def test_three_class_evaluation() -> None:
    # 0.6 on the predicted class, 0.2 on each other class, so argmax == Y_PRED_3
    probs = _one_hot_ish(Y_PRED_3, 3, top=0.6)
    report = evaluate_probabilities(Y_TRUE_3, probs, ["a", "b", "c"])

    assert report.confusion_matrix == EXPECTED_3
    assert report.count == 9
    assert report.accuracy == pytest.approx(6 / 9)  # trace 2 + 1 + 3
    assert report.roc_auc is None  # only reported for two classes
    # 6 right: p(true) = 0.6; 3 wrong: p(true) = 0.2
    # loss = -(6 ln 0.6 + 3 ln 0.2) / 9 = (6 * 0.510826 + 3 * 1.609438) / 9 = 0.877030
    assert report.loss == pytest.approx(-(6 * math.log(0.6) + 3 * math.log(0.2)) / 9)
    assert report.loss == pytest.approx(0.877030, abs=1e-6)

    # a: TP 2, FN 1, FP 1 (column a = 2 + 0 + 1), TN 9 - 4 = 5
    assert report.per_class["a"].model_dump() == pytest.approx(
        {
            "precision": 2 / 3,
            "recall": 2 / 3,
            "specificity": 5 / 6,
            "fpr": 1 / 6,
            "fnr": 1 / 3,
            "f1": 2 / 3,
            "support": 3,
        }
    )
    # b: TP 1, FN 1, FP 1 (column b = 1 + 1 + 0), TN 9 - 3 = 6
    b = report.per_class["b"]
    assert (b.precision, b.recall, b.f1) == pytest.approx((1 / 2, 1 / 2, 1 / 2))
    assert (b.specificity, b.fpr, b.fnr) == pytest.approx((6 / 7, 1 / 7, 1 / 2))
    assert b.support == 2
    # c: TP 3, FN 1, FP 1 (column c = 0 + 1 + 3), TN 9 - 5 = 4
    c = report.per_class["c"]
    assert (c.precision, c.recall, c.f1) == pytest.approx((3 / 4, 3 / 4, 3 / 4))
    assert (c.specificity, c.fpr, c.fnr) == pytest.approx((4 / 5, 1 / 5, 1 / 4))
    assert c.support == 4

    # macro: precision = recall = f1 = (2/3 + 1/2 + 3/4) / 3 = 23/36
    assert report.macro_avg.precision == pytest.approx(23 / 36)
    assert report.macro_avg.f1 == pytest.approx(23 / 36)
    assert report.macro_avg.specificity == pytest.approx((5 / 6 + 6 / 7 + 4 / 5) / 3)
    # weighted by support 3, 2, 4: (3 * 2/3 + 2 * 1/2 + 4 * 3/4) / 9 = (2 + 1 + 3) / 9
    assert report.weighted_avg.recall == pytest.approx(6 / 9)
    assert report.weighted_avg.precision == pytest.approx(6 / 9)


# --- Degenerate cases ---------------------------------------------------------------------


def test_class_never_predicted() -> None:
    # true [0, 1, 2, 2], predicted [0, 0, 2, 2]: class b is never predicted
    report = evaluate_probabilities(
        [0, 1, 2, 2], _one_hot_ish([0, 0, 2, 2], 3, top=0.8), ["a", "b", "c"]
    )
    assert report.confusion_matrix == [[1, 0, 0], [1, 0, 0], [0, 0, 2]]
    b = report.per_class["b"]
    assert b.precision is None  # TP + FP = 0
    assert b.f1 is None  # needs a precision
    assert b.recall == 0.0  # 0 / 1
    assert b.fnr == 1.0
    assert b.support == 1
    # a: P = 1/2, R = 1, F1 = 2/3; c: P = R = F1 = 1
    # macro precision over a and c only: (1/2 + 1) / 2 = 3/4 (not (1/2 + 0 + 1) / 3)
    assert report.macro_avg.precision == pytest.approx(3 / 4)
    assert report.macro_avg.f1 == pytest.approx((2 / 3 + 1) / 2)  # 5/6
    # recall is defined for all three: (1 + 0 + 1) / 3
    assert report.macro_avg.recall == pytest.approx(2 / 3)
    # weighted precision over a (support 1) and c (support 2): (1 * 1/2 + 2 * 1) / 3
    assert report.weighted_avg.precision == pytest.approx(5 / 6)


def test_class_absent_from_labels() -> None:
    # true [0, 0, 1], predicted [0, 2, 1]: class c never occurs in the labels
    report = report_from_confusion(confusion_matrix([0, 0, 1], [0, 2, 1], 3), ["a", "b", "c"])
    c = report.per_class["c"]
    # c: TP 0, FN 0, FP 1, TN 2
    assert c.recall is None  # TP + FN = 0
    assert c.fnr is None
    assert c.f1 is None
    assert c.support == 0
    assert c.precision == 0.0  # 0 / 1: predicted once, wrongly
    assert c.specificity == pytest.approx(2 / 3)  # TN / (TN + FP) still defined
    assert c.fpr == pytest.approx(1 / 3)
    # macro recall over a (1/2) and b (1): 3/4
    assert report.macro_avg.recall == pytest.approx(3 / 4)
    # weighted precision: a (P 1, support 2), b (P 1, support 1), c (P 0, support 0) -> 1
    assert report.weighted_avg.precision == pytest.approx(1.0)
    # macro precision includes c's defined 0: (1 + 1 + 0) / 3
    assert report.macro_avg.precision == pytest.approx(2 / 3)


def test_class_neither_present_nor_predicted() -> None:
    report = report_from_confusion([[2, 0, 0], [0, 1, 0], [0, 0, 0]], ["a", "b", "c"])
    c = report.per_class["c"]
    assert (c.precision, c.recall, c.f1, c.fnr) == (None, None, None, None)
    assert c.specificity == 1.0  # TN 3 / (3 + 0)
    assert c.fpr == 0.0
    assert report.macro_avg.precision == 1.0


def test_all_examples_one_class() -> None:
    probs = [[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]]
    report = evaluate_probabilities([0, 0, 0], probs, ["cat", "dog"])
    assert report.roc_auc is None  # no positives to rank
    assert report.confusion_matrix == [[2, 1], [0, 0]]
    assert report.accuracy == pytest.approx(2 / 3)
    cat = report.per_class["cat"]
    assert cat.specificity is None  # TN + FP = 0: every example is a cat
    assert cat.recall == pytest.approx(2 / 3)
    dog = report.per_class["dog"]
    assert dog.support == 0
    assert dog.recall is None
    assert dog.precision == 0.0
    assert binary_roc_auc([1, 1], [0.2, 0.8]) is None


@pytest.mark.parametrize(
    "y_true",
    [np.zeros(0, dtype=np.int64), []],
    ids=["int-array", "empty-list"],
)
def test_empty_input(y_true: ArrayLike) -> None:
    report = evaluate_probabilities(y_true, np.zeros((0, 2)), ["cat", "dog"])
    assert report.count == 0
    assert report.accuracy is None
    assert report.loss is None  # a mean over no examples is undefined
    assert report.roc_auc is None
    assert report.confusion_matrix == [[0, 0], [0, 0]]
    assert report.per_class["cat"].support == 0
    assert report.per_class["cat"].precision is None
    assert report.macro_avg.f1 is None
    assert report.weighted_avg.recall is None
    assert confusion_matrix([], [], 2).tolist() == [[0, 0], [0, 0]]
    assert cross_entropy([], np.zeros((0, 2))) is None


def test_precision_and_recall_both_zero_give_f1_zero() -> None:
    # class a: TP 0, FP 1, FN 1 -> P = 0, R = 0, F1 = 0 (defined, not None)
    a = report_from_confusion([[0, 1], [1, 0]], ["a", "b"]).per_class["a"]
    assert (a.precision, a.recall, a.f1) == (0.0, 0.0, 0.0)


# --- ROC AUC ------------------------------------------------------------------------------


def test_roc_auc_perfect_ranking() -> None:
    assert binary_roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == pytest.approx(1.0)


def test_roc_auc_reversed_ranking() -> None:
    assert binary_roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == pytest.approx(0.0)


def test_roc_auc_all_scores_tied() -> None:
    # every (positive, negative) pair is a tie, counted as half
    assert binary_roc_auc([0, 1, 0, 1, 1], [0.5] * 5) == pytest.approx(0.5)


def test_roc_auc_hand_counted() -> None:
    # positives 0.9, 0.6, 0.3; negatives 0.7, 0.2 -> 3 * 2 = 6 pairs
    # 0.9 > 0.7 yes, 0.9 > 0.2 yes, 0.6 > 0.7 no, 0.6 > 0.2 yes, 0.3 > 0.7 no, 0.3 > 0.2 yes
    # AUC = 4 / 6
    y_true = [1, 0, 1, 1, 0]
    scores = [0.9, 0.7, 0.6, 0.3, 0.2]
    assert binary_roc_auc(y_true, scores) == pytest.approx(4 / 6)
    # order of the examples does not matter
    assert binary_roc_auc(y_true[::-1], scores[::-1]) == pytest.approx(4 / 6)


def test_roc_auc_hand_counted_with_ties() -> None:
    # positives 0.8, 0.5, 0.5; negatives 0.5, 0.1 -> 6 pairs
    # 0.8 > 0.5: 1, 0.8 > 0.1: 1, 0.5 = 0.5: 1/2, 0.5 > 0.1: 1, 0.5 = 0.5: 1/2, 0.5 > 0.1: 1
    # AUC = 5 / 6
    assert binary_roc_auc([1, 1, 0, 1, 0], [0.8, 0.5, 0.5, 0.5, 0.1]) == pytest.approx(5 / 6)


def test_roc_auc_from_evaluate_uses_class_one_as_positive() -> None:
    # dog (class 1) scores: positives 0.9, 0.6, 0.3; negatives 0.7, 0.2 -> 4/6 as above
    probs = [[0.1, 0.9], [0.3, 0.7], [0.4, 0.6], [0.7, 0.3], [0.8, 0.2]]
    report = evaluate_probabilities([1, 0, 1, 1, 0], probs, ["cat", "dog"])
    assert report.roc_auc == pytest.approx(4 / 6)


def test_roc_auc_matches_pair_counting_on_random_data() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        y_true = rng.integers(0, 2, size=40)
        y_true[:2] = [0, 1]  # both classes present
        scores = np.round(rng.random(40), 1)  # rounding makes plenty of ties
        expected = _pair_counting_auc(y_true, scores)
        assert binary_roc_auc(y_true, scores) == pytest.approx(expected)


# --- Cross-entropy ------------------------------------------------------------------------


def test_cross_entropy_hand_computed() -> None:
    probs = [[0.5, 0.3, 0.2], [0.1, 0.8, 0.1], [0.25, 0.25, 0.5]]
    # p(true) = 0.5, 0.8, 0.5 -> -(ln 0.5 + ln 0.8 + ln 0.5) / 3
    # = (0.693147 + 0.223144 + 0.693147) / 3 = 0.536479
    loss = cross_entropy([0, 1, 2], probs)
    assert loss == pytest.approx(-(2 * math.log(0.5) + math.log(0.8)) / 3)
    assert loss == pytest.approx(0.536479, abs=1e-6)


def test_cross_entropy_clips_zero_probability() -> None:
    # p(true) = 0 is clipped to 1e-7: -ln(1e-7) = 7 ln 10 = 16.118096; the second is exact
    loss = cross_entropy([0, 1], [[0.0, 1.0], [0.0, 1.0]])
    assert loss is not None
    assert math.isfinite(loss)
    assert loss == pytest.approx((7 * math.log(10) + 0.0) / 2)  # 8.059048


def test_cross_entropy_perfect_predictions_is_zero() -> None:
    assert cross_entropy([0, 1], [[1.0, 0.0], [0.0, 1.0]]) == pytest.approx(0.0)


# --- Input validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("probabilities", "message"),
    [
        ([[0.5, 0.5], [0.2, 0.8]], r"probabilities must have shape \[N, 3\], got \[2, 2\]"),
        ([0.2, 0.3, 0.5], r"probabilities must have shape \[N, 3\], got \[3\]"),
        (np.zeros((2, 3, 1)), r"probabilities must have shape \[N, 3\], got \[2, 3, 1\]"),
    ],
    ids=["too-few-columns", "one-dimensional", "three-dimensional"],
)
def test_wrong_probability_shape(probabilities: ArrayLike, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate_probabilities([0, 1], probabilities, ["a", "b", "c"])


@pytest.mark.parametrize("bad_label", [3, -1])
def test_out_of_range_labels(bad_label: int) -> None:
    with pytest.raises(ValueError, match=r"y_true holds a class index outside 0\.\.2"):
        evaluate_probabilities([0, bad_label], np.full((2, 3), 1 / 3), ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"y_pred holds a class index outside 0\.\.2"):
        confusion_matrix([0, 1], [0, bad_label], 3)


def test_float_labels_are_rejected() -> None:
    with pytest.raises(ValueError, match="y_true must hold integer class indices, got float64"):
        evaluate_probabilities([0.0, 1.0], [[0.9, 0.1], [0.2, 0.8]], ["cat", "dog"])
    with pytest.raises(ValueError, match="y_pred must hold integer class indices"):
        confusion_matrix([0, 1], [0.5, 1.0], 2)


def test_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="y_true has 3 labels but y_pred has 2"):
        confusion_matrix([0, 1, 1], [0, 1], 2)
    with pytest.raises(ValueError, match="3 labels for 2 rows of probabilities"):
        evaluate_probabilities([0, 1, 1], [[0.9, 0.1], [0.2, 0.8]], ["cat", "dog"])


def test_confusion_matrix_of_wrong_size() -> None:
    with pytest.raises(ValueError, match=r"confusion matrix must be 3x3, got \[2, 2\]"):
        report_from_confusion(CAT_DOG, ["a", "b", "c"])


# --- Calibration: ECE, Brier score, reliability bins ----------------------------------------

# Top-label confidences .9 (right), .8 (wrong), .6 (right), .7 (wrong), .5 (right: the tie
# goes to class 0, the true one).
CALIBRATION_PROBS = [[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7], [0.5, 0.5]]
CALIBRATION_LABELS = [0, 1, 1, 0, 0]


def test_reliability_bins_hand_computed() -> None:
    bins = reliability_bins(CALIBRATION_PROBS, CALIBRATION_LABELS, bins=4)
    assert [(b.lower, b.upper) for b in bins] == [(0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1)]
    assert [b.count for b in bins] == [0, 1, 2, 2]
    assert bins[0].confidence is None and bins[0].accuracy is None
    # (0.25, 0.5] holds the 0.5 on its closed right edge; right
    assert (bins[1].confidence, bins[1].accuracy) == (0.5, 1.0)
    # (0.5, 0.75]: 0.6 right, 0.7 wrong
    assert bins[2].confidence == pytest.approx(0.65)
    assert bins[2].accuracy == 0.5
    # (0.75, 1]: 0.9 right, 0.8 wrong
    assert bins[3].confidence == pytest.approx(0.85)
    assert bins[3].accuracy == 0.5


def test_ece_hand_computed() -> None:
    # 1/5 * |1 - 0.5| + 2/5 * |0.5 - 0.65| + 2/5 * |0.5 - 0.85| = 0.1 + 0.06 + 0.14
    ece = expected_calibration_error(CALIBRATION_PROBS, CALIBRATION_LABELS, bins=4)
    assert ece == pytest.approx(0.30)
    bins = reliability_bins(CALIBRATION_PROBS, CALIBRATION_LABELS, bins=4)
    assert calibration_error_of_bins(bins) == pytest.approx(0.30)


def test_bin_edges_are_open_on_the_left_and_closed_on_the_right() -> None:
    # With 2 bins the edge is 0.5: a confidence of exactly 0.5 belongs to the lower bin,
    # one of exactly 1.0 to the upper.
    bins = reliability_bins([[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]], [0, 0, 1], bins=2)
    assert [b.count for b in bins] == [1, 2]


def test_ece_of_a_constant_overconfident_model() -> None:
    # Always 90% sure, right 6 times in 10: ECE = |0.6 - 0.9|
    probs = [[0.9, 0.1]] * 10
    labels = [0] * 6 + [1] * 4
    assert expected_calibration_error(probs, labels) == pytest.approx(0.3)


def test_ece_of_a_calibrated_sample_is_near_zero() -> None:
    # Each top label is right with exactly the probability the model gives it.
    rng = np.random.default_rng(7)
    confidence = rng.uniform(0.5, 1.0, 200_000)
    right = rng.random(confidence.size) < confidence
    probs = np.stack([confidence, 1 - confidence], axis=1)
    labels = np.where(right, 0, 1)
    assert expected_calibration_error(probs, labels) < 0.005


def test_ece_of_an_overconfident_sample() -> None:
    # Told p, but right only with probability 2p - 1 (less sure the closer p is to 0.5).
    rng = np.random.default_rng(8)
    confidence = rng.uniform(0.5, 1.0, 200_000)
    right = rng.random(confidence.size) < 2 * confidence - 1
    probs = np.stack([confidence, 1 - confidence], axis=1)
    labels = np.where(right, 0, 1)
    # E|p - (2p - 1)| = E[1 - p] = 0.25 for p uniform on [0.5, 1]
    assert expected_calibration_error(probs, labels) == pytest.approx(0.25, abs=0.01)


def test_brier_score_hand_computed() -> None:
    # sum_k (p_k - onehot_k)^2 per row: 0.02, 1.28, 0.32, 0.98, 0.5 -> mean 3.1 / 5
    assert brier_score(CALIBRATION_PROBS, CALIBRATION_LABELS) == pytest.approx(0.62)
    # The binary Brier score, (p_1 - y)^2, is half of it for two classes.
    positive = np.asarray(CALIBRATION_PROBS)[:, 1]
    binary = np.mean((positive - np.asarray(CALIBRATION_LABELS)) ** 2)
    assert binary == pytest.approx(0.31)


def test_brier_score_three_classes() -> None:
    # (0.7 - 1)^2 + 0.2^2 + 0.1^2 = 0.14; 0.7^2 + (0.2 - 1)^2 + 0.1^2 = 1.14
    probs = [[0.7, 0.2, 0.1], [0.7, 0.2, 0.1]]
    assert brier_score(probs, [0, 1]) == pytest.approx((0.14 + 1.14) / 2)


def test_brier_score_bounds() -> None:
    assert brier_score([[1.0, 0.0]], [0]) == 0.0
    assert brier_score([[1.0, 0.0]], [1]) == 2.0


def test_calibration_figures_of_no_examples_are_none() -> None:
    assert expected_calibration_error(np.zeros((0, 2)), []) is None
    assert brier_score(np.zeros((0, 2)), []) is None


def test_calibration_figures_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match="bins must be at least 1"):
        reliability_bins(CALIBRATION_PROBS, CALIBRATION_LABELS, bins=0)
    with pytest.raises(ValueError, match="3 labels for 5 rows"):
        brier_score(CALIBRATION_PROBS, [0, 1, 1])
    with pytest.raises(ValueError, match="outside"):
        expected_calibration_error(CALIBRATION_PROBS, [0, 1, 2, 0, 0])


def test_evaluation_reports_calibration_and_argmax_decision() -> None:
    report = evaluate_probabilities(CALIBRATION_LABELS, CALIBRATION_PROBS, ["cat", "dog"])
    assert report.decision == "argmax"
    assert report.brier == pytest.approx(0.62)
    expected = expected_calibration_error(CALIBRATION_PROBS, CALIBRATION_LABELS, bins=15)
    assert report.ece == pytest.approx(expected)
    assert report_from_confusion(CAT_DOG, ["cat", "dog"]).ece is None


def test_evaluation_at_an_operating_point_changes_labels_not_probability_figures() -> None:
    point = OperatingPoint(
        positive_class="dog",
        threshold=0.15,
        goal="test",
        figures=OperatingFigures(
            count=1, recall=1, specificity=1, precision=1, accuracy=1, balanced_accuracy=1
        ),
    )
    at_argmax = evaluate_probabilities(CALIBRATION_LABELS, CALIBRATION_PROBS, ["cat", "dog"])
    at_point = evaluate_probabilities(CALIBRATION_LABELS, CALIBRATION_PROBS, ["cat", "dog"], point)
    # P(dog) = .1, .2, .6, .7, .5 against 0.15: dog for all but the first.
    # Argmax: cat, cat, dog, dog, cat (the tie goes to cat).
    assert at_argmax.confusion_matrix == [[2, 1], [1, 1]]
    assert at_point.confusion_matrix == [[1, 2], [0, 2]]
    assert at_point.decision == "P(dog) >= 0.15"
    for figure in ("loss", "roc_auc", "ece", "brier"):
        assert getattr(at_point, figure) == getattr(at_argmax, figure)


# --- Serialisation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "report",
    [
        report_from_confusion(CAT_DOG, ["cat", "dog"]),
        evaluate_probabilities(Y_TRUE_3, _one_hot_ish(Y_PRED_3, 3, top=0.6), ["a", "b", "c"]),
        evaluate_probabilities(
            [1, 0, 1, 1, 0],
            [[0.1, 0.9], [0.3, 0.7], [0.4, 0.6], [0.7, 0.3], [0.8, 0.2]],
            ["cat", "dog"],
        ),
        evaluate_probabilities([0, 1, 2, 2], _one_hot_ish([0, 0, 2, 2], 3, 0.8), ["a", "b", "c"]),
    ],
    ids=["cat-dog", "three-class", "binary-with-auc", "with-undefined-figures"],
)
def test_report_json_round_trip(report: EvaluationReport) -> None:
    text = report.model_dump_json()
    restored = EvaluationReport.model_validate_json(text)
    assert restored == report
    assert restored.model_dump_json() == text
    assert list(restored.per_class) == report.class_names
