"""How probabilities become one label: the argmax, or a two-class model's operating point.

Every place that names a single class (the native `label`, `/evaluate`, TF Serving's
`:classify`, V2's classification extension, the page, training's recorded evaluation)
calls `decide` or `rank_classes` here, so they can never disagree. The probabilities
themselves are never changed by the decision.

- Without an operating point the label is the most likely class (the first of equals).
- With one (two-class cards only), the label is `positive_class` when its probability is
  at least `threshold`, and the other class otherwise. The comparison is made in float64,
  so a float32 probability and the threshold stored in the card compare the same way in
  training and serving.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, Field

ARGMAX = "argmax"
"""The decision rule of a model without an operating point, as reports name it."""


class OperatingFigures(BaseModel):
    """How a two-class decision rule did on one labelled split, the positive class as one."""

    count: int = Field(ge=0, description="Number of examples")
    recall: float = Field(description="Share of true positives labelled positive (sensitivity)")
    specificity: float = Field(description="Share of true negatives labelled negative")
    precision: float | None = Field(
        description="Share of positive labels that were right; null when none was given"
    )
    accuracy: float = Field(description="Share of examples labelled right")
    balanced_accuracy: float = Field(description="Mean of recall and specificity")


class OperatingPoint(BaseModel):
    """The threshold that turns a two-class model's probabilities into its label.

    Chosen after training on held-out data for a stated goal, rather than left at the
    argmax's implicit 0.5, which depends on accidents of training such as class weights.
    """

    positive_class: str = Field(
        description="The class the threshold applies to", examples=["PNEUMONIA"]
    )
    threshold: float = Field(
        gt=0.0,
        lt=1.0,
        description="Label positive_class when its probability is >= threshold",
        examples=[0.37],
    )
    goal: str = Field(
        description="What the threshold was chosen for",
        examples=["highest specificity with PNEUMONIA recall >= 0.95 on validation"],
    )
    chosen_on: str = Field(default="validation", description="The split it was chosen on")
    figures: OperatingFigures = Field(description="Its figures on the `chosen_on` split")


def describe_decision(operating_point: OperatingPoint | None) -> str:
    """The rule's name in evaluation reports: `argmax`, or `P(PNEUMONIA) >= 0.37`."""
    if operating_point is None:
        return ARGMAX
    return f"P({operating_point.positive_class}) >= {operating_point.threshold:.6g}"


def positive_index(class_names: Sequence[str], operating_point: OperatingPoint) -> int:
    """The class index of the operating point's positive class, checked against the model."""
    if len(class_names) != 2:
        raise ValueError(
            f"an operating point needs a two-class model; this one has {len(class_names)} "
            "classes (remove operating_point, or use a two-class model)"
        )
    if operating_point.positive_class not in class_names:
        raise ValueError(
            f"operating point class {operating_point.positive_class!r} is not one of the "
            f"model's classes {list(class_names)}"
        )
    return list(class_names).index(operating_point.positive_class)


def decide(
    probabilities: ArrayLike,
    class_names: Sequence[str],
    operating_point: OperatingPoint | None = None,
) -> NDArray[np.int64]:
    """The label index of each row of `[N, classes]` probabilities (see the module rule)."""
    probs = np.asarray(probabilities)
    if probs.ndim != 2 or probs.shape[1] != len(class_names):
        raise ValueError(
            f"probabilities must have shape [N, {len(class_names)}], got {list(probs.shape)}"
        )
    if operating_point is None:
        return probs.argmax(axis=1).astype(np.int64)
    positive = positive_index(class_names, operating_point)
    said_positive = labelled_positive(probs[:, positive], operating_point.threshold)
    return np.where(said_positive, positive, 1 - positive).astype(np.int64)


def labelled_positive(positive_probabilities: ArrayLike, threshold: float) -> NDArray[np.bool_]:
    """Whether each probability of the positive class reaches `threshold` (in float64)."""
    return np.asarray(positive_probabilities).astype(np.float64) >= threshold


def rank_classes(
    probabilities: ArrayLike,
    class_names: Sequence[str],
    operating_point: OperatingPoint | None = None,
) -> NDArray[np.int64]:
    """Class indices of each row, `[N, classes]`, the decided label first.

    Without an operating point that is simply most likely first (equals in class order);
    with one, the decided class comes first even when the other is more likely, so a
    client that reads the first class of a ranked list gets the label.
    """
    probs = np.asarray(probabilities)
    if operating_point is None:
        return np.argsort(-probs, axis=1, kind="stable").astype(np.int64)
    decided = decide(probs, class_names, operating_point)
    return np.stack([decided, 1 - decided], axis=1)
