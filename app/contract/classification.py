"""Classification metrics, written once for training and serving.

Framework-free on purpose (NumPy and pydantic only): `training` records these figures
in the model card and the service's `/evaluate` endpoint computes them again with the
same code, so the two can never disagree about what "recall" means.

Conventions
- The confusion matrix has one row per true class and one column per predicted class,
  both in `class_names` order.
- A ratio whose denominator is zero (the precision of a class never predicted, the
  recall of a class absent from the labels) is undefined and reported as `None`, not
  as 0 or NaN; macro averages are taken over the classes where the figure is defined.
- ROC AUC is reported for two-class models only, with class index 1 as the positive
  class, and only when both classes occur in the labels.
- The labels behind the confusion matrix and every figure derived from it come from
  `app.contract.decision.decide`: the argmax, or the card's operating point. The report's
  `decision` names the rule. Loss, ROC AUC, ECE and Brier score read the probabilities
  only, so the decision rule does not change them.

Calibration (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017)
- Expected calibration error (ECE) looks at each example's top-label confidence, its
  highest probability, and whether that top label (the argmax) is right. Confidences are
  put into `bins` equal-width bins over [0, 1]; bin m (1-based) holds confidences in
  ((m-1)/bins, m/bins], left edge open and right edge closed, and the first bin also
  holds 0. ECE is the mean over bins of |accuracy - mean confidence|, each bin weighted
  by its share of the examples; empty bins weigh nothing. 0 is perfectly calibrated.
- Brier score is the multi-class one: the mean over examples of
  sum_k (p_k - onehot_k)^2, between 0 (certain and right) and 2 (certain and wrong).
  The binary Brier score often quoted for two-class models, (p_positive - y)^2, is
  exactly half of it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, Field

from app.contract.decision import OperatingPoint, decide, describe_decision

PROBABILITY_FLOOR = 1e-7
"""Smallest probability taken before a logarithm; Keras clips the same way in its
cross-entropy, and temperature scaling clips with it too."""
CALIBRATION_BINS = 15
"""Bins of the expected calibration error, as in Guo et al. (2017)."""


class ClassMetrics(BaseModel):
    """One class seen one-vs-rest. `None` marks a ratio with a zero denominator."""

    precision: float | None = Field(description="TP / (TP + FP)")
    recall: float | None = Field(description="TP / (TP + FN); the true positive rate")
    specificity: float | None = Field(description="TN / (TN + FP); the true negative rate")
    fpr: float | None = Field(description="FP / (FP + TN); 1 - specificity")
    fnr: float | None = Field(description="FN / (FN + TP); 1 - recall")
    f1: float | None = Field(description="Harmonic mean of precision and recall")
    support: int = Field(description="How many examples truly belong to this class")


class AveragedMetrics(BaseModel):
    """Per-class figures averaged over classes (macro) or weighted by support."""

    precision: float | None
    recall: float | None
    specificity: float | None
    f1: float | None


class EvaluationReport(BaseModel):
    """The metrics of one labelled evaluation, as stored in model cards and served."""

    count: int = Field(description="Number of evaluated examples")
    class_names: list[str]
    accuracy: float | None = Field(description="Share of examples predicted right")
    loss: float | None = Field(
        default=None, description="Mean categorical cross-entropy of the probabilities"
    )
    confusion_matrix: list[list[int]] = Field(
        description="Rows are true classes, columns predicted classes, in class_names order"
    )
    per_class: dict[str, ClassMetrics]
    macro_avg: AveragedMetrics
    weighted_avg: AveragedMetrics
    roc_auc: float | None = Field(
        default=None, description="Area under the ROC curve (two-class models, class 1 positive)"
    )
    ece: float | None = Field(
        default=None,
        description=f"Expected calibration error of the top-label confidence "
        f"({CALIBRATION_BINS} equal-width bins); 0 is perfectly calibrated",
    )
    brier: float | None = Field(
        default=None,
        description="Multi-class Brier score: mean of sum_k (p_k - onehot_k)^2, from 0 to 2",
    )
    decision: str = Field(
        default=describe_decision(None),
        description="The rule that turned probabilities into the labels counted above: "
        "argmax, or the model's operating point",
        examples=["argmax", "P(PNEUMONIA) >= 0.37"],
    )


class ReliabilityBin(BaseModel):
    """One confidence bin of a reliability diagram. Means are `None` for an empty bin."""

    lower: float = Field(description="Left edge, excluded (0 is included in the first bin)")
    upper: float = Field(description="Right edge, included")
    count: int
    confidence: float | None = Field(description="Mean top-label confidence in the bin")
    accuracy: float | None = Field(description="Share of the bin's top labels that are right")


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, num_classes: int) -> NDArray[np.int64]:
    """Count (true, predicted) pairs into a `num_classes` x `num_classes` matrix."""
    true = _as_labels(y_true, num_classes, "y_true")
    pred = _as_labels(y_pred, num_classes, "y_pred")
    if true.shape != pred.shape:
        raise ValueError(f"y_true has {true.size} labels but y_pred has {pred.size}")
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (true, pred), 1)
    return matrix


def evaluate_probabilities(
    y_true: ArrayLike,
    probabilities: ArrayLike,
    class_names: Sequence[str],
    operating_point: OperatingPoint | None = None,
) -> EvaluationReport:
    """Evaluate softmax outputs `[N, classes]` against integer labels `[N]`.

    Labels are decided by `operating_point` when given (two-class models), else by argmax.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    num_classes = len(class_names)
    if probs.ndim != 2 or probs.shape[1] != num_classes:
        raise ValueError(
            f"probabilities must have shape [N, {num_classes}], got {list(probs.shape)}"
        )
    true = _as_labels(y_true, num_classes, "y_true")
    if true.size != probs.shape[0]:
        raise ValueError(f"{true.size} labels for {probs.shape[0]} rows of probabilities")
    predicted = decide(probs, class_names, operating_point)
    roc_auc = None
    if num_classes == 2:
        roc_auc = binary_roc_auc(true, probs[:, 1])
    return report_from_confusion(
        confusion_matrix(true, predicted, num_classes),
        class_names,
        loss=cross_entropy(true, probs),
        roc_auc=roc_auc,
        ece=expected_calibration_error(probs, true),
        brier=brier_score(probs, true),
        decision=describe_decision(operating_point),
    )


def report_from_confusion(
    matrix: ArrayLike,
    class_names: Sequence[str],
    *,
    loss: float | None = None,
    roc_auc: float | None = None,
    ece: float | None = None,
    brier: float | None = None,
    decision: str = describe_decision(None),
) -> EvaluationReport:
    """Derive every per-class and averaged figure from a confusion matrix."""
    counts = np.asarray(matrix, dtype=np.int64)
    num_classes = len(class_names)
    if counts.shape != (num_classes, num_classes):
        raise ValueError(
            f"confusion matrix must be {num_classes}x{num_classes}, got {list(counts.shape)}"
        )
    total = int(counts.sum())
    per_class: dict[str, ClassMetrics] = {}
    for index, name in enumerate(class_names):
        tp = int(counts[index, index])
        fn = int(counts[index, :].sum()) - tp
        fp = int(counts[:, index].sum()) - tp
        tn = total - tp - fn - fp
        precision = _ratio(tp, tp + fp)
        recall = _ratio(tp, tp + fn)
        per_class[name] = ClassMetrics(
            precision=precision,
            recall=recall,
            specificity=_ratio(tn, tn + fp),
            fpr=_ratio(fp, fp + tn),
            fnr=_ratio(fn, fn + tp),
            f1=_harmonic_mean(precision, recall),
            support=tp + fn,
        )
    return EvaluationReport(
        count=total,
        class_names=list(class_names),
        accuracy=_ratio(int(np.trace(counts)), total),
        loss=loss,
        confusion_matrix=counts.tolist(),
        per_class=per_class,
        macro_avg=_average(per_class, weighted=False),
        weighted_avg=_average(per_class, weighted=True),
        roc_auc=roc_auc,
        ece=ece,
        brier=brier,
        decision=decision,
    )


def reliability_bins(
    probabilities: ArrayLike, y_true: ArrayLike, bins: int = CALIBRATION_BINS
) -> list[ReliabilityBin]:
    """Count, mean top-label confidence and top-label accuracy per confidence bin.

    Bins as the module docstring says: `bins` equal-width, each `(lower, upper]`.
    """
    probs, true = _probabilities_and_labels(probabilities, y_true)
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # side="left" counts the inner edges strictly below a confidence: (lower, upper] bins.
    which = np.searchsorted(edges[1:-1], confidence, side="left")
    counts = np.bincount(which, minlength=bins)
    confidence_sums = np.bincount(which, weights=confidence, minlength=bins)
    correct_sums = np.bincount(which, weights=correct, minlength=bins)
    return [
        ReliabilityBin(
            lower=float(edges[m]),
            upper=float(edges[m + 1]),
            count=int(counts[m]),
            confidence=float(confidence_sums[m] / counts[m]) if counts[m] else None,
            accuracy=float(correct_sums[m] / counts[m]) if counts[m] else None,
        )
        for m in range(bins)
    ]


def expected_calibration_error(
    probabilities: ArrayLike, y_true: ArrayLike, bins: int = CALIBRATION_BINS
) -> float | None:
    """ECE of the top-label confidence; `None` for no examples, where it is undefined."""
    return calibration_error_of_bins(reliability_bins(probabilities, y_true, bins))


def calibration_error_of_bins(bins: Sequence[ReliabilityBin]) -> float | None:
    """ECE from reliability bins: |accuracy - confidence| weighted by each bin's count."""
    total = sum(b.count for b in bins)
    if total == 0:
        return None
    return sum(
        b.count / total * abs(b.accuracy - b.confidence)
        for b in bins
        if b.accuracy is not None and b.confidence is not None
    )


def brier_score(probabilities: ArrayLike, y_true: ArrayLike) -> float | None:
    """Multi-class Brier score, mean of sum_k (p_k - onehot_k)^2; `None` for no examples."""
    probs, true = _probabilities_and_labels(probabilities, y_true)
    if true.size == 0:
        return None
    one_hot = np.zeros_like(probs)
    one_hot[np.arange(true.size), true] = 1.0
    return float(((probs - one_hot) ** 2).sum(axis=1).mean())


def _probabilities_and_labels(
    probabilities: ArrayLike, y_true: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"probabilities must have shape [N, classes], got {list(probs.shape)}")
    true = _as_labels(y_true, probs.shape[1], "y_true")
    if true.size != probs.shape[0]:
        raise ValueError(f"{true.size} labels for {probs.shape[0]} rows of probabilities")
    return probs, true


def cross_entropy(y_true: ArrayLike, probabilities: ArrayLike) -> float | None:
    """Mean negative log-probability of the true class (probabilities clipped at 1e-7).

    Returns `None` for no examples, where the mean is undefined.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    if true.size == 0:
        return None
    picked = np.clip(probs[np.arange(true.size), true], PROBABILITY_FLOOR, 1.0)
    return float(-np.log(picked).mean())


def binary_roc_auc(y_true: ArrayLike, positive_scores: ArrayLike) -> float | None:
    """ROC AUC as the Mann-Whitney U statistic, with ties counted as half.

    Returns `None` when the labels hold only one class, where AUC is undefined.
    """
    true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    scores = np.asarray(positive_scores, dtype=np.float64).reshape(-1)
    positives = int((true == 1).sum())
    negatives = int((true == 0).sum())
    if positives == 0 or negatives == 0:
        return None
    ranks = _average_ranks(scores)
    positive_rank_sum = float(ranks[true == 1].sum())
    u_statistic = positive_rank_sum - positives * (positives + 1) / 2
    return u_statistic / (positives * negatives)


def _average_ranks(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """1-based ranks where tied values share the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    ranks = np.empty(values.size, dtype=np.float64)
    start = 0
    while start < values.size:
        end = start
        while end + 1 < values.size and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def _as_labels(labels: ArrayLike, num_classes: int, what: str) -> NDArray[np.int64]:
    array = np.asarray(labels).reshape(-1)
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{what} must hold integer class indices, got {array.dtype}")
    array = array.astype(np.int64)
    if array.size and (array.min() < 0 or array.max() >= num_classes):
        raise ValueError(f"{what} holds a class index outside 0..{num_classes - 1}")
    return array


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _harmonic_mean(precision: float | None, recall: float | None) -> float | None:
    if precision is None or recall is None:
        return None
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def _average(per_class: dict[str, ClassMetrics], *, weighted: bool) -> AveragedMetrics:
    def mean_of(field: str) -> float | None:
        pairs = [
            (value, metrics.support if weighted else 1)
            for metrics in per_class.values()
            if (value := getattr(metrics, field)) is not None
        ]
        weight = sum(w for _, w in pairs)
        if not pairs or weight == 0:
            return None
        return sum(v * w for v, w in pairs) / weight

    return AveragedMetrics(
        precision=mean_of("precision"),
        recall=mean_of("recall"),
        specificity=mean_of("specificity"),
        f1=mean_of("f1"),
    )
