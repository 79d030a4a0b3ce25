"""When a compiled runtime may stand in for the SavedModel: the equivalence check.

The SavedModel is the artifact of record. Training's export converts it into a LiteRT
model (`model.tflite`) and the service may run that instead on CPU, but only after both
halves have checked, with these same functions, that it answers as the SavedModel does:

- `check_inputs(spec)`: a fixed, seeded set of real-looking inputs for a model's input
  (blank, noise, smooth gradients, bright strokes on dark and dark strokes on bright),
  so an export and a server load check the same pixels.
- `compare_runs(reference, candidate)`: every output within `MAX_ABS_DIFFERENCE` of the
  reference's, and the same top class in every row, or the reason why not.

NumPy only: both training and the service import it (`lint-imports` checks that).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from app.contract.model_card import InputSpec

MAX_ABS_DIFFERENCE = 1e-5
"""Largest difference allowed between the two runtimes' softmax outputs. Float32 runtimes
that fuse or reorder operations differ by ~1e-6 on these models; a broken or stale
conversion differs by far more."""

CHECK_SEED = 14
"""Seeds the random parts of `check_inputs`: every export and load sees the same pixels."""

Batches = Mapping[str, NDArray[np.float32]]
Predict = Callable[[NDArray[np.float32]], NDArray[np.float32]]


@dataclass(frozen=True)
class Agreement:
    """How a candidate runtime's outputs compare with the reference's on named inputs."""

    images: int
    max_difference: float
    problem: str | None  # None when the candidate may serve in the reference's place

    @property
    def agrees(self) -> bool:
        return self.problem is None


def check_inputs(spec: InputSpec, seed: int = CHECK_SEED) -> dict[str, NDArray[np.float32]]:
    """Named `[N, H, W, C]` float32 batches in the spec's value range, the same every call.

    Real-looking rather than random only: a conversion that is right on noise can still
    be wrong where real images sit (mostly dark, smooth, with a few saturated strokes).
    """
    rng = np.random.default_rng(seed)
    height, width, channels = spec.height, spec.width, spec.channels
    strokes = _strokes(rng, 4, height, width)
    unit = {  # values in 0..1, scaled to the spec's value range below
        "blank": np.zeros((1, height, width, 1)),
        "noise": rng.uniform(0.0, 1.0, (8, height, width, channels)),
        "gradients": _gradients(height, width),
        "bright strokes on dark": strokes,
        "dark strokes on bright": 1.0 - strokes,
    }
    low, high = spec.value_range
    return {
        name: np.ascontiguousarray(
            np.broadcast_to(low + (high - low) * batch, (len(batch), height, width, channels)),
            dtype=np.float32,
        )
        for name, batch in unit.items()
    }


def outputs_on(predict: Predict, batches: Batches) -> dict[str, NDArray[np.float32]]:
    """`predict`'s output for each named batch."""
    return {name: predict(batch) for name, batch in batches.items()}


def compare_runs(
    reference: Batches, candidate: Batches, *, against: str = "the reference's"
) -> Agreement:
    """Compare two runtimes' outputs on the same named batches (see `compare_outputs`).

    The problem names the first input they disagree on, worded to follow "<candidate>
    output", e.g. "differs from the SavedModel's by 3.0e-04 (more than 1e-05) on the
    noise input".
    """
    images, largest = 0, 0.0
    for name, expected in reference.items():
        actual = candidate[name]
        images += len(expected)
        largest = max(largest, _max_difference(expected, actual))
        problem = compare_outputs(expected, actual, against=against)
        if problem is not None:
            return Agreement(images, largest, f"{problem} on the {name} input")
    return Agreement(images, largest, None)


def compare_outputs(
    reference: NDArray[np.float32],
    candidate: NDArray[np.float32],
    *,
    against: str = "the reference's",
) -> str | None:
    """None when `[N, classes]` `candidate` may stand in for `reference`, else why not.

    Both conditions of the contract: every value within `MAX_ABS_DIFFERENCE`, and the
    same top class in every row. Within the tolerance the top class can only differ
    where two classes nearly tie; that is refused too, on purpose, because a served
    label must not depend on which runtime computed it.
    """
    if candidate.shape != reference.shape:
        return f"has shape {list(candidate.shape)} where {against} has {list(reference.shape)}"
    if not np.all(np.isfinite(reference)):
        return f"cannot be compared: {against} has non-finite values"
    if not np.all(np.isfinite(candidate)):
        return "has non-finite values"
    difference = _max_difference(reference, candidate)
    if difference > MAX_ABS_DIFFERENCE:
        return f"differs from {against} by {difference:.1e} (more than {MAX_ABS_DIFFERENCE:.0e})"
    expected, actual = reference.argmax(axis=-1), candidate.argmax(axis=-1)
    rows = np.flatnonzero(expected != actual)
    if rows.size:
        row = int(rows[0])
        return (
            f"picks class {int(actual[row])} where {against} picks {int(expected[row])} "
            f"(row {row}, a near tie)"
        )
    return None


def _max_difference(reference: NDArray[np.float32], candidate: NDArray[np.float32]) -> float:
    if reference.shape != candidate.shape:
        return float("inf")
    if reference.size == 0:
        return 0.0
    return float(np.max(np.abs(reference.astype(np.float64) - candidate)))


def _gradients(height: int, width: int) -> NDArray[np.float64]:
    """Four smooth `[H, W, 1]` images: left-right, top-bottom, diagonal, a bright centre."""
    ys, xs = np.mgrid[0:height, 0:width]
    y, x = ys / max(height - 1, 1), xs / max(width - 1, 1)
    centre = np.clip(1.0 - np.hypot(y - 0.5, x - 0.5) * 2.0, 0.0, 1.0)
    return np.stack([x, y, (x + y) / 2.0, centre])[..., np.newaxis]


def _strokes(rng: np.random.Generator, count: int, height: int, width: int) -> NDArray[np.float64]:
    """`count` `[H, W, 1]` images of 2-4 anti-aliased pen strokes (1.0) on 0.0, as drawn."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    half_width = max(min(height, width) / 20.0, 0.75)
    images = []
    for _ in range(count):
        ink = np.zeros((height, width))
        for _ in range(int(rng.integers(2, 5))):
            (y0, y1), (x0, x1) = rng.uniform(0.15, 0.85, (2, 2)) * [[height], [width]]
            distance = _distance_to_segment(ys, xs, (y0, x0), (y1, x1))
            ink = np.maximum(ink, np.clip(half_width + 0.5 - distance, 0.0, 1.0))
        images.append(ink)
    return np.stack(images)[..., np.newaxis]


def _distance_to_segment(
    ys: NDArray[np.float64],
    xs: NDArray[np.float64],
    start: tuple[float, float],
    end: tuple[float, float],
) -> NDArray[np.float64]:
    (y0, x0), (y1, x1) = start, end
    dy, dx = y1 - y0, x1 - x0
    length_squared = max(dy * dy + dx * dx, 1e-12)
    along = np.clip(((ys - y0) * dy + (xs - x0) * dx) / length_squared, 0.0, 1.0)
    return np.hypot(ys - (y0 + along * dy), xs - (x0 + along * dx))
