"""The recent predictions of each served model version, and how far they drift.

Each loaded version gets a `PredictionWindow`: the probabilities of its last N answered
predictions (`VISION_SERVING_DRIFT_WINDOW`) in a ring allocated once, which the data
plane fills as each classification request is answered (a slice copy or two, no
allocation). Nothing is computed on the request path: a window is summarised
(`app.contract.drift.prediction_profile`, the function training profiles the test split
with) and scored against the profile in the model card only when asked, at a `/metrics`
scrape or a model status request.

- Recorded: every answered prediction of the native, TF Serving and V2 APIs (they all
  go through `DataPlane.classify_uploads` or `classify_pixels`). Not recorded:
  evaluations, which are labelled test sets an operator sends, not traffic.
- Rows holding NaN or infinite probabilities (a faulty model) are left out, counted in
  `non_finite_skipped` and logged once per window: a profile of them would mean nothing,
  and the summary, /metrics included, would fail for as long as they stayed in the window.
- The class mix counts the label the service answered: the card's operating point
  decides it, as it does for every API.
- Records and summaries both run on the event loop, so the window needs no lock.
- A version loaded again (its files changed) starts with an empty window; an unloaded
  version's window goes with it.
- Several worker processes (`VISION_SERVING_WORKERS`) each keep their own windows of
  the requests they served: each is a sample of the same traffic, the last N of that
  process's; `/metrics` labels them by `worker`, and the status API answers with the
  window of the process that served the status request.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from app.contract.drift import (
    MIN_SCORED_PREDICTIONS,
    PredictionProfile,
    drift_scores,
    prediction_profile,
)
from app.contract.model_card import ModelCard
from app.repository import ServedModel
from app.schemas import RecentPredictions

_NOT_CHECKED, _NO_DIGIT, _DIGIT = -1, 0, 1  # what the digit check said of each row

logger = logging.getLogger(__name__)


class PredictionWindow:
    """The last `size` predictions of one model version: a ring of probability rows."""

    def __init__(self, card: ModelCard, size: int) -> None:
        if size < 1:
            raise ValueError(f"a prediction window holds at least 1 prediction, not {size}")
        self.card = card
        self.size = size
        self._probabilities = np.zeros((size, len(card.class_names)), dtype=np.float32)
        # Only digit models keep what the check said; -1 marks rows sent as raw pixels,
        # which skip it.
        self._digit_found = (
            np.full(size, _NOT_CHECKED, dtype=np.int8)
            if card.preprocessing.kind == "mnist-digit"
            else None
        )
        self._next = 0  # where the next row goes
        self.count = 0  # rows filled: `size` once the ring has come round
        self.non_finite_skipped = 0  # rows left out for NaN or infinite probabilities

    def record(
        self, probabilities: NDArray[np.float32], digit_found: Sequence[bool] | None
    ) -> None:
        """Add the `[k, classes]` outputs of one request, overwriting the oldest rows;
        rows holding NaN or infinite values are left out and counted instead."""
        if not np.isfinite(probabilities).all():  # ~1 us; the rare bad case costs more
            probabilities, digit_found = self._finite_rows(probabilities, digit_found)
        rows = len(probabilities)
        if rows == 0:
            return
        start = self._next
        self._write(self._probabilities, start, probabilities)
        if self._digit_found is not None:
            flags = (
                np.full(rows, _NOT_CHECKED, dtype=np.int8)
                if digit_found is None
                else np.asarray(digit_found, dtype=np.int8)
            )
            self._write(self._digit_found, start, flags)
        self._next = (start + rows) % self.size
        self.count = min(self.count + rows, self.size)

    def _finite_rows(
        self, probabilities: NDArray[np.float32], digit_found: Sequence[bool] | None
    ) -> tuple[NDArray[np.float32], Sequence[bool] | None]:
        """The rows of `probabilities` (and their digit flags) without NaN or infinity."""
        finite = np.isfinite(probabilities).all(axis=1)
        if self.non_finite_skipped == 0:
            logger.warning(
                "%s v%d answered probabilities holding NaN or infinite values; such "
                "predictions are left out of its drift window (non_finite_skipped)",
                self.card.name,
                self.card.version,
            )
        self.non_finite_skipped += int((~finite).sum())
        if digit_found is not None:
            digit_found = np.asarray(digit_found, dtype=bool)[finite].tolist()
        return probabilities[finite], digit_found

    def _write(self, ring: NDArray[np.generic], start: int, values: NDArray[np.generic]) -> None:
        """Copy `values` into `ring` from `start`, wrapping round; a request larger than the
        ring keeps its last `size` rows."""
        rows = len(values)
        if rows >= self.size:
            ring[:] = values[rows - self.size :]
            return
        head = min(rows, self.size - start)
        ring[start : start + head] = values[:head]
        ring[: rows - head] = values[head:]

    def profile(self) -> PredictionProfile | None:
        """The profile of the predictions in the window (None while it is empty), in the
        reference's bins when the card has a reference profile."""
        if self.count == 0:
            return None
        digit_found = None
        if self._digit_found is not None:
            flags = self._digit_found[: self.count]
            digit_found = flags[flags != _NOT_CHECKED] == _DIGIT
        reference = self.card.prediction_profile
        return prediction_profile(
            self._probabilities[: self.count],
            self.card.class_names,
            digit_found,
            confidence_edges=reference.confidence_edges if reference else None,
            low_confidence_threshold=reference.low_confidence_threshold if reference else None,
            operating_point=self.card.operating_point,
        )


class PredictionMonitor:
    """A `PredictionWindow` per loaded model version, made at its first prediction."""

    def __init__(self, window_size: int) -> None:
        self.window_size = window_size
        # Keyed by the loaded version itself: a reloaded version is a new key, and an
        # unloaded one's window is dropped with it.
        self._windows: weakref.WeakKeyDictionary[ServedModel, PredictionWindow] = (
            weakref.WeakKeyDictionary()
        )

    def record(
        self,
        model: ServedModel,
        probabilities: NDArray[np.float32],
        digit_found: Sequence[bool] | None,
    ) -> None:
        """Add one answered request's predictions to `model`'s window (on the event loop)."""
        window = self._windows.get(model)
        if window is None:
            if model.card is None:  # a ready model always has its card
                return
            window = self._windows[model] = PredictionWindow(model.card, self.window_size)
        window.record(probabilities, digit_found)

    def recent(self, model: ServedModel) -> RecentPredictions | None:
        """`model`'s window summarised and scored against its card's reference profile."""
        if model.card is None:
            return None
        window = self._windows.get(model)
        current = window.profile() if window is not None else None
        skipped = window.non_finite_skipped if window is not None else 0
        reference = model.card.prediction_profile
        count = current.count if current is not None else 0
        scores, note = None, None
        if reference is None:
            status = "no_reference"
            note = (
                "no reference in the card: drift is not scored until the model is exported "
                "with a prediction_profile"
            )
        elif current is None or count < MIN_SCORED_PREDICTIONS:
            status = "warming_up"
            note = f"a drift score needs {MIN_SCORED_PREDICTIONS} predictions; {count} so far"
        else:
            scores = drift_scores(reference, current)
            status = "drift" if scores.drifted else "ok"
        return RecentPredictions(
            window_size=self.window_size,
            count=count,
            status=status,
            note=note,
            window=current,
            reference=reference,
            scores=scores,
            non_finite_skipped=skipped,
        )
