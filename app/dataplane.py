"""The serving core every API front-end calls: uploads or pixels in, probabilities out.

upload -> decode/preprocess (worker thread) -> micro-batch -> model -> probabilities.
Route handlers translate HTTP into these calls and the results into response schemas;
they never touch TensorFlow, Pillow or the batcher themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from app.errors import InvalidInput, Overloaded, PayloadTooLarge, ServingError
from app.imaging import Upload, is_tiny_image
from app.labelled import LabelledUpload
from app.metrics import EvaluationReport, evaluate_probabilities
from app.model_card import ModelCard
from app.monitoring import ServingMetrics, label_request
from app.preprocess import prepare_uploads
from app.repository import ModelRepository, ServedModel
from app.settings import Settings


@dataclass(frozen=True)
class Classification:
    """Softmax outputs for a batch of inputs, with the model version that made them."""

    model: ServedModel
    card: ModelCard
    pixels: NDArray[np.float32] | None  # [N, H, W, C]: what the model saw
    probabilities: NDArray[np.float32]  # [N, classes]


@dataclass(frozen=True)
class Evaluation:
    classification: Classification
    labels: list[int]
    report: EvaluationReport


class DataPlane:
    """Runs classification and evaluation requests against the model repository."""

    def __init__(
        self,
        repository: ModelRepository,
        settings: Settings,
        metrics: ServingMetrics | None = None,
    ) -> None:
        self.repository = repository
        self.settings = settings
        self.metrics = metrics
        # Decoding is CPU-bound and mostly releases the GIL (Pillow, NumPy); two threads
        # match the two cores without the thrash of a large pool.
        self._preprocess_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="decode")

    def close(self) -> None:
        self._preprocess_pool.shutdown(wait=False, cancel_futures=True)

    async def classify_uploads(
        self, model_name: str, version: int | None, uploads: Sequence[Upload]
    ) -> Classification:
        """Decode, preprocess and classify uploaded images, in upload order."""
        model = self.repository.get(model_name, version)
        if not uploads:
            raise InvalidInput("no files were uploaded; send images in the form field 'files'")
        if len(uploads) > self.settings.max_files_per_request:
            raise PayloadTooLarge(
                f"{len(uploads)} files in one request is more than the limit of "
                f"{self.settings.max_files_per_request}; split them over several requests"
            )
        return await self._classify(model, uploads)

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
        async with self._admitted(model, len(pixels)):
            probabilities = await model.predict(pixels)
        return Classification(model=model, card=card, pixels=pixels, probabilities=probabilities)

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

        parts = await asyncio.gather(
            *(classify_chunk(start) for start in range(0, len(examples), chunk))
        )
        card = _card(model)
        probabilities = np.concatenate([part.probabilities for part in parts])
        labels = [example.label for example in examples]
        report = evaluate_probabilities(labels, probabilities, card.class_names)
        # Pixels of a large evaluation are not kept: thousands of X-rays would be GBs.
        classification = Classification(
            model=model, card=card, pixels=None, probabilities=probabilities
        )
        return Evaluation(classification=classification, labels=labels, report=report)

    async def _classify(self, model: ServedModel, uploads: Sequence[Upload]) -> Classification:
        card = _card(model)
        loop = asyncio.get_running_loop()
        label_request(model.name, model.version)
        async with self._admitted(model, len(uploads)):
            started = time.perf_counter()
            max_pixels = self.settings.max_image_pixels
            if len(uploads) == 1 and is_tiny_image(uploads[0]):
                # Cheaper than the thread hop it saves (a 28x28 digit: ~0.1 ms).
                pixels = prepare_uploads(uploads, card, max_pixels=max_pixels)
            else:
                pixels = await loop.run_in_executor(
                    self._preprocess_pool,
                    lambda: prepare_uploads(uploads, card, max_pixels=max_pixels),
                )
            if self.metrics is not None:
                self.metrics.observe_stage(model.name, "preprocess", time.perf_counter() - started)
            probabilities = await model.predict(pixels)
        return Classification(model=model, card=card, pixels=pixels, probabilities=probabilities)

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


def _card(model: ServedModel) -> ModelCard:
    assert model.card is not None, "a ready model always has its card"
    return model.card
