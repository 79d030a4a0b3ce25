"""Prediction profiles and drift scores, written once for training and serving.

Framework-free (NumPy and pydantic only). Training records `prediction_profile(...)` of
the model's outputs on its test split in the model card; the service summarises the
predictions it served lately with the same function (`app.drift`) and compares the two
with `drift_scores`. Labels are not needed: a model shown inputs unlike its training
data answers differently (less sure, or with another class mix) long before anyone
could count its mistakes.

What a profile holds
- `class_mix`: the share of predictions of each class: the label the model answers,
  decided as every API decides it (`app.contract.decision.decide`): the most likely
  class, or the class a two-class card's operating point picks.
- `mean_confidence`: the mean top-1 probability. `mean_entropy`: the mean Shannon
  entropy of the probabilities in nats (natural log): 0 when certain, ln(K) at most for
  K classes (2.303 for 10, 0.693 for 2).
- `low_confidence_share`: the share whose top-1 probability is below
  `low_confidence_threshold`, by default halfway between chance (1/K) and certainty:
  0.55 for 10 classes, 0.75 for 2 (a fixed 0.5 would mean nothing to a 2-class model).
- `no_digit_share`: the share of pictures in which the digit check found no digit
  (models with `mnist-digit` preprocessing; None for others).
- `confidence_histogram`: shares of the top-1 probability in fixed bins, whose edges
  the profile stores (`default_confidence_edges`): fine near certainty, where a good
  model puts most answers, coarse near chance.

How drift is scored
- PSI, the population stability index of two distributions over the same bins:
  sum((current - reference) * ln(current / reference)). The common reading: < 0.1 no
  shift, 0.1-0.25 moderate, > 0.25 significant (`PSI_DRIFT`). Both profiles' shares are
  smoothed first by the same amount, half a prediction of the smaller profile in every
  bin (`SMOOTHING_COUNT`), so an empty bin neither makes the index infinite nor, in a
  small window, dominates it (an empty bin of a 5% class would otherwise add ~0.5 at
  100 predictions), and identical distributions still score 0.
- `confidence_psi`: PSI of the confidence histograms; `class_mix_psi`: PSI of the class
  mixes (the same index on the predicted classes; unlike a chi-square p-value, which is
  ~0 for any shift once hundreds of predictions are in, it measures how large the shift
  is, on the same scale as the confidences').
- `drift_score`: the larger PSI divided by `PSI_DRIFT`, so > 1 means drift.
- An unchanged distribution still scores about (bins - 1) / n from sampling noise alone
  (PSI is close to a chi-square statistic over n): ~0.09 PSI for 10 bins and
  `MIN_SCORED_PREDICTIONS` = 100 predictions, ~0.01 for 1,000. Fewer than 100 are too
  few to score.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, Field, model_validator

from app.contract.decision import OperatingPoint, decide

SMOOTHING_COUNT = 0.5
"""Predictions of the smaller profile added to every bin of both before a PSI."""
PSI_EPSILON = 1e-6
"""The smallest share `population_stability_index` takes (0 would make it infinite)."""
PSI_MODERATE = 0.1
PSI_DRIFT = 0.25
"""A PSI above this is a significant shift: the drift score's unit."""
MIN_SCORED_PREDICTIONS = 100
"""Fewest predictions a drift score is computed from (fewer give a noisy PSI)."""

# Where the confidence bins start, as "doubt": 1 at chance (1/K), 0 at certainty. Fine near
# certainty: a trained model gives most answers above 0.99, and inputs unlike its training
# data move them down out of those bins first.
_DOUBT_EDGES = (1.0, 0.8, 0.6, 0.4, 0.2, 0.1, 0.03, 0.01, 1e-3, 1e-4, 0.0)
_SHARE_TOLERANCE = 1e-3  # shares rounded to float and back to JSON still sum to ~1
_PROBABILITY_FLOOR = 1e-12  # 0 * ln 0 counts as 0 in the entropy


class PredictionProfile(BaseModel):
    """What a model's answers to a set of inputs look like, without their labels."""

    count: int = Field(ge=1, description="How many predictions the profile summarises")
    class_mix: dict[str, float] = Field(
        description="Share of predictions of each class (the label answered: the most "
        "likely class, or the one the card's operating point decides), in class_names "
        "order; they sum to 1",
        examples=[{"NORMAL": 0.31, "PNEUMONIA": 0.69}],
    )
    mean_confidence: float = Field(ge=0, le=1, description="Mean top-1 probability")
    mean_entropy: float = Field(
        ge=0,
        description="Mean entropy of the probabilities in nats: 0 when certain, ln(K) at "
        "most for K classes",
    )
    low_confidence_threshold: float = Field(
        gt=0,
        le=1,
        description="A prediction is low-confidence when its top-1 probability is below "
        "this: by default halfway between chance (1/K) and 1",
    )
    low_confidence_share: float = Field(
        ge=0, le=1, description="Share of predictions below low_confidence_threshold"
    )
    no_digit_share: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Share of pictures in which the digit check found no digit; null for "
        "models without one, or when no prediction went through it",
    )
    confidence_edges: list[float] = Field(
        min_length=2,
        description="Edges of the confidence histogram's bins, ascending; a bin holds "
        "edges[i] <= confidence < edges[i + 1], the last one includes 1",
    )
    confidence_histogram: list[float] = Field(
        description="Share of predictions whose top-1 probability falls in each bin; they sum to 1"
    )

    @model_validator(mode="after")
    def _consistent(self) -> PredictionProfile:
        edges = self.confidence_edges
        if any(b <= a for a, b in pairwise(edges)):
            raise ValueError("confidence_edges must be strictly ascending")
        if edges[0] < 0 or edges[-1] > 1:
            raise ValueError("confidence_edges must lie within [0, 1]")
        if len(self.confidence_histogram) != len(edges) - 1:
            raise ValueError(
                f"confidence_histogram needs one share per bin: {len(edges) - 1} for "
                f"{len(edges)} edges, not {len(self.confidence_histogram)}"
            )
        for name, shares in (
            ("class_mix", list(self.class_mix.values())),
            ("confidence_histogram", self.confidence_histogram),
        ):
            if min(shares, default=0) < 0 or abs(sum(shares) - 1) > _SHARE_TOLERANCE:
                raise ValueError(f"{name} must hold shares >= 0 that sum to 1")
        return self


class DriftScores(BaseModel):
    """How far a profile of recent predictions has moved from the reference profile."""

    count: int = Field(description="Predictions the current profile summarises")
    confidence_psi: float = Field(
        description="PSI of the top-1 confidence histogram against the reference's"
    )
    class_mix_psi: float = Field(description="PSI of the class mix against the reference's")
    drift_score: float = Field(
        description=f"The larger PSI divided by {PSI_DRIFT} (a significant shift): "
        "above 1 means drift"
    )
    drifted: bool = Field(description="Whether drift_score is above 1")

    def normalized(self) -> dict[str, float]:
        """Each part on the drift score's scale (> 1: drift), and the combined score."""
        return {
            "confidence": self.confidence_psi / PSI_DRIFT,
            "class_mix": self.class_mix_psi / PSI_DRIFT,
            "combined": self.drift_score,
        }


def default_confidence_edges(class_count: int) -> list[float]:
    """Bin edges of the top-1 probability from chance (1/K) to 1, finest near 1.

    For 10 classes: 0.1, 0.28, 0.46, 0.64, 0.82, 0.91, 0.973, 0.991, 0.9991, 0.99991, 1.
    """
    if class_count < 2:
        raise ValueError(f"a classifier has at least 2 classes, not {class_count}")
    chance = 1 / class_count
    return [round(1 - (1 - chance) * doubt, 12) for doubt in _DOUBT_EDGES]


def default_low_confidence_threshold(class_count: int) -> float:
    """Halfway between chance (1/K) and certainty: 0.55 for 10 classes, 0.75 for 2."""
    return (1 + 1 / class_count) / 2


def prediction_profile(
    probabilities: ArrayLike,
    class_names: Sequence[str],
    digit_found: ArrayLike | None = None,
    *,
    confidence_edges: Sequence[float] | None = None,
    low_confidence_threshold: float | None = None,
    operating_point: OperatingPoint | None = None,
) -> PredictionProfile:
    """Summarise `[N, K]` softmax outputs (N >= 1) of a model with `class_names`.

    `digit_found` holds the digit check's answer for the pictures that went through it:
    every row, or fewer (tensors sent as raw pixels skip the check); None for a model
    without one. Pass a reference profile's `confidence_edges` and
    `low_confidence_threshold` to profile new predictions comparably; by default they
    follow from the number of classes. Pass the card's `operating_point` so the class
    mix counts the labels the service answers; the confidence figures are the top
    probability either way.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    names = list(class_names)
    if probs.ndim != 2 or probs.shape[1] != len(names):
        raise ValueError(
            f"probabilities must be [N, {len(names)}] (one column per class name), "
            f"not {list(probs.shape)}"
        )
    if len(probs) == 0:
        raise ValueError("a profile needs at least one prediction")
    if not np.isfinite(probs).all():
        raise ValueError("probabilities hold NaN or infinite values")
    if confidence_edges is None:
        confidence_edges = default_confidence_edges(len(names))
    if low_confidence_threshold is None:
        low_confidence_threshold = default_low_confidence_threshold(len(names))
    predicted = decide(probs, names, operating_point)
    confidence = probs.max(axis=1)
    entropy = -(probs * np.log(np.maximum(probs, _PROBABILITY_FLOOR))).sum(axis=1)
    class_counts = np.bincount(predicted, minlength=len(names))
    return PredictionProfile(
        count=len(probs),
        class_mix=dict(zip(names, (class_counts / len(probs)).tolist(), strict=True)),
        mean_confidence=float(confidence.mean()),
        mean_entropy=float(max(entropy.mean(), 0.0)),
        low_confidence_threshold=low_confidence_threshold,
        low_confidence_share=float((confidence < low_confidence_threshold).mean()),
        no_digit_share=_no_digit_share(digit_found, len(probs)),
        confidence_edges=list(confidence_edges),
        confidence_histogram=_histogram(confidence, confidence_edges).tolist(),
    )


def drift_scores(reference: PredictionProfile, current: PredictionProfile) -> DriftScores:
    """Score how far `current` has moved from `reference` (see the module docstring).

    Both must have the same classes and confidence bins: profile current predictions
    with the reference's `confidence_edges`.
    """
    if list(current.class_mix) != list(reference.class_mix):
        raise ValueError(
            f"the profiles have different classes: {list(reference.class_mix)} in the "
            f"reference, {list(current.class_mix)} now"
        )
    current_edges, reference_edges = current.confidence_edges, reference.confidence_edges
    if len(current_edges) != len(reference_edges) or not np.allclose(
        current_edges, reference_edges
    ):
        raise ValueError(
            "the profiles have different confidence bins; profile the current predictions "
            "with the reference's confidence_edges"
        )
    pseudo_share = SMOOTHING_COUNT / min(reference.count, current.count)
    confidence = population_stability_index(
        _smoothed(reference.confidence_histogram, pseudo_share),
        _smoothed(current.confidence_histogram, pseudo_share),
    )
    class_mix = population_stability_index(
        _smoothed(list(reference.class_mix.values()), pseudo_share),
        _smoothed(list(current.class_mix.values()), pseudo_share),
    )
    score = max(confidence, class_mix) / PSI_DRIFT
    return DriftScores(
        count=current.count,
        confidence_psi=confidence,
        class_mix_psi=class_mix,
        drift_score=score,
        drifted=score > 1,
    )


def population_stability_index(reference: ArrayLike, current: ArrayLike) -> float:
    """PSI of two share vectors over the same bins; empty bins count as `PSI_EPSILON`."""
    expected = np.maximum(np.asarray(reference, dtype=np.float64), PSI_EPSILON)
    actual = np.maximum(np.asarray(current, dtype=np.float64), PSI_EPSILON)
    if expected.shape != actual.shape:
        raise ValueError(f"{expected.size} reference bins against {actual.size} current ones")
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def _smoothed(shares: Sequence[float], pseudo_share: float) -> NDArray[np.float64]:
    """`shares` with `pseudo_share` added to every bin, summing to 1 again."""
    smoothed = np.asarray(shares, dtype=np.float64) + pseudo_share
    return smoothed / smoothed.sum()


def _histogram(confidence: NDArray[np.float64], edges: Sequence[float]) -> NDArray[np.float64]:
    """Shares per bin; values outside the edges (float rounding) go to the nearest bin."""
    bins = np.searchsorted(edges, confidence, side="right") - 1
    bins = np.clip(bins, 0, len(edges) - 2)
    return np.bincount(bins, minlength=len(edges) - 1) / len(confidence)


def _no_digit_share(digit_found: ArrayLike | None, rows: int) -> float | None:
    if digit_found is None:
        return None
    found = np.asarray(digit_found, dtype=bool).ravel()
    if len(found) > rows:
        raise ValueError(f"digit_found has {len(found)} answers for {rows} predictions")
    return float((~found).mean()) if len(found) else None
