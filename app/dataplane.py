"""The serving core every API front-end calls: uploads or pixels in, probabilities out.

upload -> decode/preprocess (worker thread) -> micro-batch -> model -> probabilities.
Route handlers translate HTTP into these calls and the results into response schemas;
they never touch TensorFlow, Pillow or the batcher themselves. The payload log
(`app.payload_log`) is told here what each served request gave the model and got back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from app.contract.classification import EvaluationReport, evaluate_probabilities
from app.contract.images import Upload, is_tiny_image
from app.contract.model_card import ModelCard
from app.contract.preprocessing import PreparedBatch, prepare_batch
from app.drift import PredictionMonitor
from app.errors import (
    InvalidInput,
    Overloaded,
    PayloadTooLarge,
    ServingError,
    image_error,
)
from app.labelled import LabelledUpload
from app.monitoring import ServingMetrics, label_request
from app.payload_log import note_answer, note_inputs
from app.repository import ModelRepository, ServedModel
from app.settings import Settings
from app.tracing import RequestTrace, current_trace


@dataclass(frozen=True)
class FileFailure:
    """A file of a request that could not be read, and the error that says why."""

    position: int
    filename: str
    error: ServingError


@dataclass(frozen=True)
class Classification:
    """Softmax outputs for the inputs of one request, with the model version that made them.

    Row i answers the input sent at `positions[i]`; inputs that could not be read are in
    `failures` instead, so one bad file does not cost the others their answers.
    """

    model: ServedModel
    card: ModelCard
    pixels: NDArray[np.float32] | None  # [k, H, W, C]: what the model saw
    probabilities: NDArray[np.float32]  # [k, classes]
    positions: list[int]
    digit_found: list[bool] | None = None  # per row, for models that read digits
    failures: list[FileFailure] = field(default_factory=list)

    def digit_found_at(self, row: int) -> bool | None:
        """Whether row `row`'s picture held a digit; None for models that read no digits."""
        return self.digit_found[row] if self.digit_found is not None else None


@dataclass(frozen=True)
class Evaluation:
    classification: Classification
    labels: list[int]  # true class of each row of the classification
    report: EvaluationReport  # labels decided as the card decides them
    report_at_argmax: EvaluationReport | None = None  # when the card has an operating point


class DataPlane:
    """Runs classification and evaluation requests against the model repository."""

    def __init__(
        self,
        repository: ModelRepository,
        settings: Settings,
        metrics: ServingMetrics | None = None,
        predictions: PredictionMonitor | None = None,
    ) -> None:
        self.repository = repository
        self.settings = settings
        self.metrics = metrics
        self.predictions = predictions  # None: drift monitoring is off
        # Decoding is CPU-bound and mostly releases the GIL (Pillow, NumPy); two threads
        # match the two cores without the thrash of a large pool.
        self._preprocess_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="decode")

    def close(self) -> None:
        self._preprocess_pool.shutdown(wait=False, cancel_futures=True)

    async def classify_uploads(
        self,
        model_name: str,
        version: int | None,
        uploads: Sequence[Upload],
        *,
        all_or_nothing: bool = False,
    ) -> Classification:
        """Decode, preprocess and classify uploaded images, in upload order.

        Files that cannot be read are `failures` beside the others' answers, unless
        `all_or_nothing` (a protocol whose images form one tensor), where the first one
        fails the request before the model runs. A request none of whose files can be
        read fails either way.
        """
        model = self.repository.get(model_name, version)
        if not uploads:
            raise InvalidInput("no files were uploaded; send images in the form field 'files'")
        if len(uploads) > self.settings.max_files_per_request:
            raise PayloadTooLarge(
                f"{len(uploads)} files in one request is more than the limit of "
                f"{self.settings.max_files_per_request}; split them over several requests"
            )
        note_inputs(model.name, model.version, uploads)
        result = await self._classify(model, uploads, all_or_nothing=all_or_nothing)
        note_answer(result)
        if not result.positions:
            raise _unreadable(result.failures)
        self._monitor(result)
        return result

    async def classify_pixels(
        self, model_name: str, version: int | None, pixels: NDArray[np.float32]
    ) -> Classification:
        """Classify raw `[N, H, W, C]` pixels that already match the model's input."""
        model = self.repository.get(model_name, version)
        card = _card(model)
        expected = (card.input.height, card.input.width, card.input.channels)
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != expected:
            raise InvalidInput(
                f"input shape {list(pixels.shape)} does not match the model's "
                f"[N, {', '.join(map(str, expected))}]"
            )
        if len(pixels) > self.settings.max_files_per_request:
            raise PayloadTooLarge(
                f"{len(pixels)} inputs in one request is more than the limit of "
                f"{self.settings.max_files_per_request}; split them over several requests"
            )
        if not np.isfinite(pixels).all():
            raise InvalidInput("input holds NaN or infinite values")
        pixels = pixels.astype(np.float32, copy=False)
        label_request(model.name, model.version)
        trace = _traced(model, len(pixels))
        note_inputs(model.name, model.version, pixels)
        async with self._admitted(model, len(pixels)):
            probabilities = await model.predict(pixels, trace)
        result = Classification(
            model=model,
            card=card,
            pixels=pixels,
            probabilities=probabilities,
            positions=list(range(len(pixels))),
        )
        note_answer(result)
        self._monitor(result)
        return result

    def _monitor(self, result: Classification) -> None:
        """Add a served request's predictions to its version's drift window (not an
        evaluation's: labelled test sets are not traffic)."""
        if self.predictions is not None:
            self.predictions.record(result.model, result.probabilities, result.digit_found)

    async def evaluate(
        self, model_name: str, version: int | None, examples: Sequence[LabelledUpload]
    ) -> Evaluation:
        """Classify labelled uploads in batches and compute the shared metrics."""
        model = self.repository.get(model_name, version)
        if len(examples) > self.settings.max_evaluation_images:
            raise PayloadTooLarge(
                f"{len(examples)} labelled images is more than the limit of "
                f"{self.settings.max_evaluation_images} per evaluation"
            )
        chunk = self.settings.max_batch_size
        # Two chunks in flight keep decoding and the model busy at once without letting
        # one evaluation fill the model's queue and starve other requests.
        in_flight = asyncio.Semaphore(2)

        async def classify_chunk(start: int) -> Classification:
            async with in_flight:
                uploads = [e.upload for e in examples[start : start + chunk]]
                return await self._classify(model, uploads)

        starts = range(0, len(examples), chunk)
        parts = await asyncio.gather(*(classify_chunk(start) for start in starts))
        card = _card(model)
        positions: list[int] = []
        failures: list[FileFailure] = []
        for start, part in zip(starts, parts, strict=True):
            positions += [start + position for position in part.positions]
            failures += [
                FileFailure(start + f.position, f.filename, f.error) for f in part.failures
            ]
        if not positions:
            raise _unreadable(failures)
        probabilities = np.concatenate([part.probabilities for part in parts])
        labels = [examples[p].label for p in positions]
        report = evaluate_probabilities(
            labels, probabilities, card.class_names, card.operating_point
        )
        report_at_argmax = None
        if card.operating_point is not None:
            report_at_argmax = evaluate_probabilities(labels, probabilities, card.class_names)
        # Pixels of a large evaluation are not kept: thousands of X-rays would be GBs.
        found = [part.digit_found for part in parts]
        classification = Classification(
            model=model,
            card=card,
            pixels=None,
            probabilities=probabilities,
            positions=positions,
            digit_found=None if None in found else [f for part in found for f in part or []],
            failures=failures,
        )
        return Evaluation(
            classification=classification,
            labels=labels,
            report=report,
            report_at_argmax=report_at_argmax,
        )

    async def _classify(
        self, model: ServedModel, uploads: Sequence[Upload], *, all_or_nothing: bool = False
    ) -> Classification:
        """Classify what can be read of `uploads`; files that cannot be read are failures."""
        card = _card(model)
        loop = asyncio.get_running_loop()
        label_request(model.name, model.version)
        trace = _traced(model, len(uploads))
        async with self._admitted(model, len(uploads)):
            started = time.perf_counter()
            max_pixels = self.settings.max_image_pixels
            spec, kind = card.input, card.preprocessing.kind

            def prepare() -> PreparedBatch:
                return prepare_batch(uploads, spec, kind, max_pixels=max_pixels)

            if len(uploads) == 1 and is_tiny_image(uploads[0]):
                prepared = prepare()  # cheaper than the thread hop it saves (~0.1 ms)
            else:
                prepared = await loop.run_in_executor(self._preprocess_pool, prepare)
            if self.metrics is not None:
                self.metrics.observe_stage(model.name, "preprocess", time.perf_counter() - started)
            failures = [
                FileFailure(position, uploads[position].filename, image_error(error))
                for position, error in prepared.failures
            ]
            if self.metrics is not None:
                for failure in failures:
                    self.metrics.count_unreadable_file(model.name, failure.error.code)
            if all_or_nothing and failures:
                raise failures[0].error
            if prepared.positions:
                probabilities = await model.predict(prepared.pixels, trace)
            else:  # nothing to run; the caller says what was wrong with the files
                probabilities = np.empty((0, len(card.class_names)), dtype=np.float32)
        return Classification(
            model=model,
            card=card,
            pixels=prepared.pixels,
            probabilities=probabilities,
            positions=prepared.positions,
            digit_found=prepared.digit_found,
            failures=failures,
        )

    def refusal_before_reading(self, model_name: str, version: int | None) -> Overloaded | None:
        """The 503 for a request to a model whose queue is already full, else None.

        Such a request would be refused whatever it holds (it brings at least one
        image), so `EarlyAdmission` answers it before its body is parsed or decoded.
        Unknown or unready models are left to the route, which explains them.
        """
        try:
            model = self.repository.get(model_name, version)
        except ServingError:
            return None
        refusal = self._refusal(model, images=1)
        if refusal is not None:
            label_request(model.name, model.version)
        return refusal

    def _refusal(self, model: ServedModel, images: int) -> Overloaded | None:
        """The queue bound: refuse `images` more unless the model has room or is idle."""
        limit = self.settings.max_queued_images
        if model.images_in_flight + images <= limit or model.images_in_flight == 0:
            return None
        return Overloaded(
            f"model {model.name} has {model.images_in_flight} images in flight (limit "
            f"{limit}); retry shortly"
        )

    @contextlib.asynccontextmanager
    async def _admitted(self, model: ServedModel, images: int) -> AsyncIterator[None]:
        """Admit a request within the model's queue bound and the request deadline.

        A full queue answers 503 at once rather than letting latency grow without
        bound; a request past its deadline is dropped from the batch it waits for.
        """
        refusal = self._refusal(model, images)
        if refusal is not None:
            raise refusal
        timeout = self.settings.request_timeout_seconds
        async with model.serving(images):
            try:
                async with asyncio.timeout(timeout):
                    yield
            except TimeoutError:
                raise Overloaded(
                    f"model {model.name} did not answer within {timeout:g} s; retry shortly"
                ) from None


def _unreadable(failures: Sequence[FileFailure]) -> ServingError:
    """The error of a request none of whose files could be read: the first file's error,
    naming the others, so the request fails with the status it would have alone."""
    first = failures[0].error
    if len(failures) == 1:
        return first
    others = ", ".join(failure.filename for failure in failures[1:6])
    more = f" and {len(failures) - 6} more" if len(failures) > 6 else ""
    return type(first)(
        f"{first.message} (none of the {len(failures)} files could be read; also "
        f"unreadable: {others}{more})",
        **(first.details or {}),
    )


def _traced(model: ServedModel, images: int) -> RequestTrace | None:
    """The request's trace, told which model its images go to; None when not traced."""
    trace = current_trace()
    if trace is not None:
        trace.describe(model.name, model.version, images)
    return trace


def _card(model: ServedModel) -> ModelCard:
    assert model.card is not None, "a ready model always has its card"
    return model.card
