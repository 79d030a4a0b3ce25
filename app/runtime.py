"""One loaded model version: its card, its SavedModel signature and its device.

`ModelRuntime.predict_batch` is the only place the service calls TensorFlow. It calls
the SavedModel's serving signature (a concrete function with a fixed input signature)
directly: no `model.predict`, whose per-call set-up costs ~100x the MLP itself.
It is synchronous and is run by the batcher on a worker thread, never on the event loop.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from app.contract.model_card import ModelCard
from app.devices import DevicePlacement
from app.errors import InferenceFailed

logger = logging.getLogger(__name__)


class ModelRuntime:
    """Loads a SavedModel version folder and runs batches through its signature."""

    def __init__(self, card: ModelCard, version_dir: Path, device: DevicePlacement) -> None:
        self.card = card
        self.version_dir = version_dir
        self.device = device
        self._signature: Any = None
        self._saved_model: Any = None
        self.load_seconds: float | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        spec = self.card.input
        return (spec.height, spec.width, spec.channels)

    @property
    def num_classes(self) -> int:
        return len(self.card.class_names)

    def load(self) -> None:
        """Load the SavedModel onto the device and check its signature against the card."""
        import tensorflow as tf

        started = time.perf_counter()
        with tf.device(self.device.name):
            saved_model = tf.saved_model.load(str(self.version_dir))
        signatures = saved_model.signatures
        if self.card.signature_name not in signatures:
            raise ValueError(
                f"SavedModel has no signature {self.card.signature_name!r} "
                f"(it has {sorted(signatures.keys())})"
            )
        signature = signatures[self.card.signature_name]
        _check_signature(signature, self.card)
        self._saved_model = saved_model  # keeps the variables alive
        self._signature = signature
        self.load_seconds = time.perf_counter() - started

    def warm_up(self, batch_sizes: tuple[int, ...] = (1, 8)) -> None:
        """Run dummy batches so the first real request does not pay for graph set-up."""
        for size in batch_sizes:
            self.predict_batch(np.zeros((size, *self.input_shape), dtype=np.float32))

    def predict_batch(self, pixels: NDArray[np.float32]) -> NDArray[np.float32]:
        """Run `[N, H, W, C]` raw pixels through the signature; return `[N, classes]`."""
        if self._signature is None:
            raise InferenceFailed(f"{self.card.name} v{self.card.version} is not loaded")
        import tensorflow as tf

        with tf.device(self.device.name):
            outputs = self._signature(**{self.card.input.tensor_name: tf.constant(pixels)})
        probabilities = np.asarray(outputs[self.card.output_name].numpy(), dtype=np.float32)
        expected = (pixels.shape[0], self.num_classes)
        if probabilities.shape != expected:
            raise InferenceFailed(
                f"model returned shape {list(probabilities.shape)} for a batch needing "
                f"{list(expected)}; the export does not match its model card"
            )
        return probabilities

    def release(self) -> None:
        """Drop the references to the TensorFlow objects so their memory can be freed."""
        self._signature = None
        self._saved_model = None


def _check_signature(signature: Any, card: ModelCard) -> None:
    _, input_specs = signature.structured_input_signature
    spec = input_specs.get(card.input.tensor_name)
    if spec is None:
        raise ValueError(
            f"signature {card.signature_name!r} has no input {card.input.tensor_name!r} "
            f"(inputs: {sorted(input_specs)})"
        )
    expected = [None, card.input.height, card.input.width, card.input.channels]
    if spec.shape.as_list() != expected:
        raise ValueError(
            f"signature input {card.input.tensor_name!r} has shape {spec.shape.as_list()}, "
            f"but the model card says {expected}"
        )
    if card.output_name not in signature.structured_outputs:
        raise ValueError(
            f"signature has no output {card.output_name!r} "
            f"(outputs: {sorted(signature.structured_outputs)})"
        )
