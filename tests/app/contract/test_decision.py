"""How probabilities become a label: argmax, or a two-class operating point's threshold."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from app.contract.decision import (
    OperatingFigures,
    OperatingPoint,
    decide,
    describe_decision,
    labelled_positive,
    positive_index,
    rank_classes,
)

XRAY = ["NORMAL", "PNEUMONIA"]
FIGURES = OperatingFigures(
    count=10, recall=0.9, specificity=0.8, precision=0.75, accuracy=0.85, balanced_accuracy=0.85
)


def point(threshold: float, positive_class: str = "PNEUMONIA") -> OperatingPoint:
    return OperatingPoint(
        positive_class=positive_class, threshold=threshold, goal="test", figures=FIGURES
    )


def test_without_an_operating_point_the_label_is_the_argmax() -> None:
    probs = [[0.1, 0.7, 0.2], [0.5, 0.2, 0.3], [0.3, 0.3, 0.4]]
    assert decide(probs, ["a", "b", "c"]).tolist() == [1, 0, 2]


def test_argmax_ties_go_to_the_first_class() -> None:
    assert decide([[0.4, 0.4, 0.2], [0.5, 0.5, 0.0]], ["a", "b", "c"]).tolist() == [0, 0]


def test_threshold_labels_positive_at_or_above_it() -> None:
    p_pneumonia = [0.1, 0.36, 0.37, 0.38, 0.6]
    probs = [[1 - p, p] for p in p_pneumonia]
    # argmax says NORMAL for every row below 0.5; the threshold of 0.37 does not
    assert decide(probs, XRAY).tolist() == [0, 0, 0, 0, 1]
    assert decide(probs, XRAY, point(0.37)).tolist() == [0, 0, 1, 1, 1]


def test_threshold_on_the_first_class() -> None:
    # NORMAL positive at 0.8: NORMAL only when P(NORMAL) >= 0.8, else PNEUMONIA
    probs = [[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.2, 0.8]]
    assert decide(probs, XRAY, point(0.8, "NORMAL")).tolist() == [0, 0, 1, 1]


def test_a_threshold_above_one_half_can_overrule_a_confident_argmax() -> None:
    probs = np.array([[0.3, 0.7]], dtype=np.float32)
    assert decide(probs, XRAY).tolist() == [1]
    assert decide(probs, XRAY, point(0.9)).tolist() == [0]


def test_the_comparison_is_in_float64_whatever_the_probabilities_dtype() -> None:
    stored = np.float32(0.37)  # 0.37000000476837158 exactly
    just_above = float(np.nextafter(float(stored), 1.0))  # rounds to `stored` in float32
    probs = np.array([[1 - stored, stored]], dtype=np.float32)
    assert decide(probs, XRAY, point(float(stored))).tolist() == [1]
    assert decide(probs, XRAY, point(just_above)).tolist() == [0]
    assert labelled_positive(np.array([stored]), just_above).tolist() == [False]


def test_rank_classes_is_most_likely_first_without_an_operating_point() -> None:
    probs = np.array([[0.1, 0.7, 0.2], [0.4, 0.2, 0.4]])
    expected = [np.argsort(-row, kind="stable").tolist() for row in probs]
    assert rank_classes(probs, ["a", "b", "c"]).tolist() == expected == [[1, 2, 0], [0, 2, 1]]


def test_rank_classes_puts_the_decided_class_first() -> None:
    probs = [[0.6, 0.4], [0.7, 0.3], [0.2, 0.8]]
    assert rank_classes(probs, XRAY, point(0.35)).tolist() == [[1, 0], [0, 1], [1, 0]]


def test_describe_decision() -> None:
    assert describe_decision(None) == "argmax"
    assert describe_decision(point(0.37)) == "P(PNEUMONIA) >= 0.37"
    assert describe_decision(point(0.123456789)) == "P(PNEUMONIA) >= 0.123457"


def test_operating_point_needs_a_two_class_model() -> None:
    with pytest.raises(ValueError, match="two-class model; this one has 3 classes"):
        decide([[0.2, 0.3, 0.5]], ["a", "b", "c"], point(0.5, "a"))


def test_operating_point_needs_a_known_positive_class() -> None:
    with pytest.raises(ValueError, match=r"'pneumonia' is not one of the model's classes"):
        positive_index(XRAY, point(0.5, "pneumonia"))
    assert positive_index(XRAY, point(0.5, "NORMAL")) == 0


@pytest.mark.parametrize("threshold", [0.0, 1.0, -0.1, 1.5])
def test_threshold_must_be_strictly_between_zero_and_one(threshold: float) -> None:
    with pytest.raises(ValidationError, match="threshold"):
        point(threshold)


def test_decide_checks_the_probabilities_shape() -> None:
    with pytest.raises(ValueError, match=r"shape \[N, 2\], got \[3\]"):
        decide([0.1, 0.2, 0.7], XRAY)
