"""Calibrate a trained model's probabilities and choose its operating point, in NumPy.

Both run on held-out validation outputs, after training and before export:

1. `fit_temperature` finds the temperature T that minimises the validation negative
   log-likelihood of softmax(logits / T) (Guo et al., 2017). The exported model then ends
   in the same maths `apply_temperature` does, so it serves calibrated probabilities.
   Temperature scaling never changes which class is most likely.
2. `choose_threshold` picks, for a two-class model, the probability of the positive class
   at which to label it positive, for a stated goal. Its result becomes the model card's
   `operating_point`, which `app.contract.decision.decide` applies everywhere.

No TensorFlow here: these are plain functions of arrays, tested on synthetic data whose
answer is known.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from app.contract.classification import PROBABILITY_FLOOR
from app.contract.decision import OperatingFigures, OperatingPoint, labelled_positive

TEMPERATURE_RANGE = (0.05, 20.0)
"""Where the temperature is searched. A fit at an end of it says the outputs are odd
(a model already perfect on validation pushes T to the lower end)."""
_SEARCH_TOLERANCE = 1e-6  # in log T: the temperature to about six significant digits
_GOLDEN = (math.sqrt(5) - 1) / 2


# Temperature scaling -------------------------------------------------------------------


def log_probabilities(probabilities: ArrayLike) -> NDArray[np.float64]:
    """log(p) with p clipped at the contract's floor: the logits up to a per-row constant,
    which softmax ignores, so a model ending in softmax needs no separate logit output."""
    probs = np.asarray(probabilities, dtype=np.float64)
    return np.log(np.clip(probs, PROBABILITY_FLOOR, 1.0))


def apply_temperature(probabilities: ArrayLike, temperature: float) -> NDArray[np.float64]:
    """softmax(log(p) / T) per row, p clipped at the contract's probability floor.

    The same maths as the calibration layer at the end of the exported model.
    """
    _check_temperature(temperature)
    return _softmax(log_probabilities(probabilities) / temperature)


def fit_temperature(
    outputs: ArrayLike,
    labels: ArrayLike,
    *,
    kind: Literal["probabilities", "logits"] = "probabilities",
) -> float:
    """The temperature minimising the mean negative log-likelihood of `labels`.

    `outputs` are `[N, classes]` softmax probabilities (the default; taken as log(p)) or
    raw logits. The likelihood is convex in 1/T, so it has one minimum along log T; a
    golden-section search over `TEMPERATURE_RANGE` finds it, or the nearer end when it lies
    outside.
    """
    if kind == "probabilities":
        logits = log_probabilities(outputs)
    elif kind == "logits":
        logits = np.asarray(outputs, dtype=np.float64)
    else:
        raise ValueError(f"kind must be 'probabilities' or 'logits', got {kind!r}")
    true = _labels_for(logits, labels)
    if not np.isfinite(logits).all():
        raise ValueError("outputs hold NaN or infinite values")

    def loss(log_temperature: float) -> float:
        return _negative_log_likelihood(logits / math.exp(log_temperature), true)

    low, high = (math.log(t) for t in TEMPERATURE_RANGE)
    return math.exp(_golden_section_minimum(loss, low, high))


def _negative_log_likelihood(logits: NDArray[np.float64], true: NDArray[np.int64]) -> float:
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_normaliser = np.log(np.exp(shifted).sum(axis=1))
    return float((log_normaliser - shifted[np.arange(true.size), true]).mean())


def _golden_section_minimum(function: Callable[[float], float], low: float, high: float) -> float:
    """Where a unimodal `function` is least on [low, high]."""
    a, b = low, high
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    fc, fd = function(c), function(d)
    while b - a > _SEARCH_TOLERANCE:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - _GOLDEN * (b - a)
            fc = function(c)
        else:
            a, c, fc = c, d, fd
            d = a + _GOLDEN * (b - a)
            fd = function(d)
    middle = (a + b) / 2
    # The minimum may sit at an end of the range, which interior probes only approach.
    return min((low, middle, high), key=function)


# Operating point -----------------------------------------------------------------------


@dataclass(frozen=True)
class RecallAtLeast:
    """Highest specificity while the positive class's recall stays >= `recall`.

    Ties in specificity go to the higher recall. For screening, where a missed positive
    costs more than a false alarm.
    """

    recall: float = 0.95

    def __post_init__(self) -> None:
        if not 0 < self.recall <= 1:
            raise ValueError(f"the recall to keep must be in (0, 1], got {self.recall}")

    def describe(self, positive_class: str, split: str) -> str:
        return f"highest specificity with {positive_class} recall >= {self.recall:g} on {split}"


@dataclass(frozen=True)
class BalancedAccuracy:
    """Highest mean of recall and specificity.

    Ties go to the threshold nearest 0.5 (the least departure from argmax), then to the
    higher threshold.
    """

    def describe(self, positive_class: str, split: str) -> str:
        return f"highest balanced accuracy ({positive_class} positive) on {split}"


ThresholdGoal = RecallAtLeast | BalancedAccuracy


@dataclass(frozen=True)
class ThresholdChoice:
    """A threshold on the positive class's probability, and how it did where chosen."""

    threshold: float
    positive_index: int
    goal: ThresholdGoal
    figures: OperatingFigures

    def operating_point(
        self, class_names: list[str], chosen_on: str = "validation"
    ) -> OperatingPoint:
        """The model card's `operating_point` for this choice."""
        positive = class_names[self.positive_index]
        return OperatingPoint(
            positive_class=positive,
            threshold=self.threshold,
            goal=self.goal.describe(positive, chosen_on),
            chosen_on=chosen_on,
            figures=self.figures,
        )


def choose_threshold(
    probabilities: ArrayLike,
    labels: ArrayLike,
    positive_index: int,
    goal: ThresholdGoal,
) -> ThresholdChoice:
    """The threshold on `probabilities[:, positive_index]` that best meets `goal`.

    The label is positive when the probability is >= the threshold. Every distinct way of
    splitting the examples by their score is a candidate; each is given the threshold
    halfway between the lowest score it labels positive and the highest it does not, so
    small numeric differences between runtimes do not move an example across it. A split
    that no threshold in (0, 1) makes (scores of exactly 0 or 1) is not a candidate.

    Needs `[N, 2]` probabilities and labels of both classes; raises `ValueError` when no
    threshold reaches a `RecallAtLeast` goal.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != 2:
        raise ValueError(
            f"an operating point is for two-class models: probabilities must have shape "
            f"[N, 2], got {list(probs.shape)}"
        )
    if positive_index not in (0, 1):
        raise ValueError(f"positive_index must be 0 or 1, got {positive_index}")
    truly_positive = _labels_for(probs, labels) == positive_index
    positives, negatives = int(truly_positive.sum()), int((~truly_positive).sum())
    if positives == 0 or negatives == 0:
        raise ValueError(
            "choosing a threshold needs examples of both classes; the labels hold "
            f"{positives} positive and {negatives} negative"
        )
    scores = probs[:, positive_index]
    candidates = _candidates(scores, truly_positive)
    if isinstance(goal, RecallAtLeast):
        best = _best_for_recall(candidates, positives, goal.recall)
    else:
        best = _best_balanced(candidates, positives, negatives)
    threshold = float(candidates.thresholds[best])
    return ThresholdChoice(
        threshold=threshold,
        positive_index=positive_index,
        goal=goal,
        # Counted again through the contract's own rule, as serving will apply it.
        figures=operating_figures(labelled_positive(scores, threshold), truly_positive),
    )


def operating_figures(said_positive: ArrayLike, truly_positive: ArrayLike) -> OperatingFigures:
    """Recall, specificity, precision and accuracies of positive/negative labels."""
    said = np.asarray(said_positive, dtype=bool)
    truth = np.asarray(truly_positive, dtype=bool)
    tp = int((said & truth).sum())
    fp = int((said & ~truth).sum())
    fn = int((~said & truth).sum())
    tn = int((~said & ~truth).sum())
    if tp + fn == 0 or tn + fp == 0:
        raise ValueError("figures at a threshold need examples of both classes")
    recall, specificity = tp / (tp + fn), tn / (tn + fp)
    return OperatingFigures(
        count=said.size,
        recall=recall,
        specificity=specificity,
        precision=tp / (tp + fp) if tp + fp else None,
        accuracy=(tp + tn) / said.size,
        balanced_accuracy=(recall + specificity) / 2,
    )


@dataclass(frozen=True)
class _Candidates:
    """Ways to split the examples by score, each with a threshold that makes it."""

    thresholds: NDArray[np.float64]
    true_positives: NDArray[np.int64]
    false_positives: NDArray[np.int64]


def _candidates(scores: NDArray[np.float64], truly_positive: NDArray[np.bool_]) -> _Candidates:
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    # The last position of each run of equal scores, highest scores first.
    run_ends = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))
    distinct = ranked[run_ends]
    positives_so_far = np.cumsum(truly_positive[order])[run_ends]
    # Candidate j labels the j highest distinct scores positive, from none to all.
    true_positives = np.concatenate([[0], positives_so_far])
    false_positives = np.concatenate([[0], run_ends + 1 - positives_so_far])
    lowest_positive = np.concatenate([[np.inf], distinct])
    highest_negative = np.concatenate([distinct, [-np.inf]])
    middle = np.empty(distinct.size + 1)
    middle[1:-1] = (lowest_positive[1:-1] + highest_negative[1:-1]) / 2
    middle[0] = (1.0 + highest_negative[0]) / 2  # none positive: above the top score
    middle[-1] = lowest_positive[-1] / 2  # all positive: at most the lowest score
    # Halfway between neighbouring floats can round onto the lower: then take the upper.
    thresholds = np.where(middle > highest_negative, middle, lowest_positive)
    makes_the_split = (thresholds > highest_negative) & (thresholds <= lowest_positive)
    feasible = makes_the_split & (thresholds > 0) & (thresholds < 1)
    return _Candidates(
        thresholds=thresholds[feasible],
        true_positives=true_positives[feasible].astype(np.int64),
        false_positives=false_positives[feasible].astype(np.int64),
    )


def _best_for_recall(candidates: _Candidates, positives: int, min_recall: float) -> int:
    # Integer counts, so a recall of exactly min_recall is not lost to rounding.
    needed = math.ceil(min_recall * positives - 1e-9)
    reaching = np.flatnonzero(candidates.true_positives >= needed)
    if reaching.size == 0:
        raise ValueError(
            f"no threshold in (0, 1) reaches recall {min_recall:g}: some positives score "
            "exactly 0; lower the recall to keep"
        )
    # Fewest false positives (highest specificity), then most true positives.
    fp, tp = candidates.false_positives, candidates.true_positives
    return int(min(reaching, key=lambda j: (fp[j], -tp[j])))


def _best_balanced(candidates: _Candidates, positives: int, negatives: int) -> int:
    if candidates.thresholds.size == 0:
        raise ValueError("every example scores exactly 0 or 1; no threshold in (0, 1) splits")
    # 2 * positives * negatives * balanced accuracy, in integers so ties are exact.
    tp, fp = candidates.true_positives, candidates.false_positives
    scaled = tp * negatives + (negatives - fp) * positives
    best = np.flatnonzero(scaled == scaled.max())
    thresholds = candidates.thresholds
    return int(min(best, key=lambda j: (abs(thresholds[j] - 0.5), -thresholds[j])))


# Helpers -------------------------------------------------------------------------------


def _labels_for(outputs: NDArray[np.float64], labels: ArrayLike) -> NDArray[np.int64]:
    if outputs.ndim != 2 or outputs.shape[1] < 2:
        raise ValueError(f"outputs must have shape [N, classes], got {list(outputs.shape)}")
    true = np.asarray(labels).reshape(-1)
    if true.size and not np.issubdtype(true.dtype, np.integer):
        raise ValueError(f"labels must be integer class indices, got {true.dtype}")
    if true.size != outputs.shape[0]:
        raise ValueError(f"{true.size} labels for {outputs.shape[0]} rows of outputs")
    if true.size == 0:
        raise ValueError("no examples: calibration needs labelled validation outputs")
    if true.min() < 0 or true.max() >= outputs.shape[1]:
        raise ValueError(f"labels hold a class index outside 0..{outputs.shape[1] - 1}")
    return true.astype(np.int64)


def _softmax(logits: NDArray[np.float64]) -> NDArray[np.float64]:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _check_temperature(temperature: float) -> None:
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive number, got {temperature}")
