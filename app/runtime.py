"""One loaded model version: its card, what runs it, and its device.

`ModelRuntime.predict_batch` is the only place the service runs a model. What runs it is
chosen at load (`choose_runtime`):
- LiteRT (`app.litert`) on CPU: the SavedModel converted to a LiteRT model, run by its
  signature runner with XNNPACK. At batch 1 the MNIST MLP takes ~7 us instead of
  ~300-600 us, the pneumonia CNN ~0.09-0.5 ms instead of ~1-2.6 ms. Used only after its
  outputs agreed with the SavedModel signature's on the warm-up batches and the
  contract's check inputs.
- The SavedModel's serving signature (a concrete function with a fixed input signature)
  on a GPU, under `tf.device`, or when LiteRT is not wanted or does not agree. Called
  directly: no `model.predict`, whose per-call set-up costs ~100x the MLP itself.

The SavedModel is always loaded first: it is the artifact of record, the reference of
the check and the fallback. When LiteRT serves, it is let go after the check.
`predict_batch` is synchronous; the batcher runs one batch of a model at a time.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from app.contract.model_card import ModelCard
from app.contract.runtimes import check_inputs
from app.devices import DevicePlacement
from app.errors import InferenceFailed
from app.litert import LITERT_THREADS, LiteRTSource, find_litert_model
from app.settings import RuntimePreference, default_runtime_cache_dir

logger = logging.getLogger(__name__)

RuntimeName = Literal["litert", "savedmodel"]
Executor = Callable[[NDArray[np.float32]], NDArray[np.float32]]

WARM_UP_TIMED_RUNS = 5


def choose_runtime(preference: RuntimePreference, device_kind: str) -> RuntimeName:
    """What should run a model: `auto` means LiteRT on CPU and the SavedModel on a GPU."""
    if preference == "auto":
        return "litert" if device_kind == "cpu" else "savedmodel"
    return preference


@dataclass(frozen=True)
class RuntimeOptions:
    """The settings that decide what runs a model (`VISION_SERVING_RUNTIME*`)."""

    preference: RuntimePreference = "auto"
    cache_dir: Path = field(default_factory=default_runtime_cache_dir)
    max_batch_size: int = 8  # the check runs the warm-up batches, 1 and this many images
    num_threads: int = LITERT_THREADS


@dataclass(frozen=True)
class RuntimeInfo:
    """What runs a loaded version, where its LiteRT model came from, and why, for status."""

    name: RuntimeName
    litert_source: LiteRTSource | None
    reason: str


class ModelRuntime:
    """Loads a version folder and runs batches through LiteRT or its SavedModel signature."""

    def __init__(
        self,
        card: ModelCard,
        version_dir: Path,
        device: DevicePlacement,
        options: RuntimeOptions | None = None,
    ) -> None:
        self.card = card
        self.version_dir = version_dir
        self.device = device
        self.options = options or RuntimeOptions()
        self.info: RuntimeInfo | None = None
        self.load_seconds: float | None = None
        self._executor: Executor | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        spec = self.card.input
        return (spec.height, spec.width, spec.channels)

    @property
    def num_classes(self) -> int:
        return len(self.card.class_names)

    def load(self) -> None:
        """Load the SavedModel, check it against the card, and choose what runs it."""
        started = time.perf_counter()
        signature = SavedModelSignature(self.version_dir, self.card, self.device)
        if choose_runtime(self.options.preference, self.device.kind) == "litert":
            self._executor, self.info = self._litert_or(signature)
        else:
            self._executor = signature
            self.info = RuntimeInfo("savedmodel", None, self._why_savedmodel())
        # When LiteRT serves, `signature` was the last reference to the SavedModel's
        # graph and variables: they are freed as this returns.
        self.load_seconds = time.perf_counter() - started
        self._log_choice()

    def warm_up(self, batch_sizes: tuple[int, ...] = (1, 8)) -> dict[int, float]:
        """Run zero batches so no request pays for set-up; return seconds per batch size.

        For each size, one untimed run (graph tracing, tensor allocation), then the
        median of `WARM_UP_TIMED_RUNS` timed runs: what a batch of that size costs.
        """
        costs: dict[int, float] = {}
        for size in dict.fromkeys(batch_sizes):
            pixels = np.zeros((size, *self.input_shape), dtype=np.float32)
            self.predict_batch(pixels)
            timings = []
            for _ in range(WARM_UP_TIMED_RUNS):
                started = time.perf_counter()
                self.predict_batch(pixels)
                timings.append(time.perf_counter() - started)
            costs[size] = statistics.median(timings)
        return costs

    def predict_batch(self, pixels: NDArray[np.float32]) -> NDArray[np.float32]:
        """Run `[N, H, W, C]` raw pixels through the model; return `[N, classes]`."""
        if self._executor is None:
            raise InferenceFailed(f"{self.card.name} v{self.card.version} is not loaded")
        probabilities = self._executor(pixels)
        expected = (pixels.shape[0], self.num_classes)
        if probabilities.shape != expected:
            raise InferenceFailed(
                f"model returned shape {list(probabilities.shape)} for a batch needing "
                f"{list(expected)}; the export does not match its model card"
            )
        return probabilities

    def release(self) -> None:
        """Drop the references to the model objects so their memory can be freed."""
        self._executor = None

    def _litert_or(self, signature: SavedModelSignature) -> tuple[Executor, RuntimeInfo]:
        """A LiteRT runner that agrees with `signature`, else `signature` itself."""
        choice = find_litert_model(
            self.version_dir,
            self.card,
            signature,
            self._check_batches(),
            cache_dir=self.options.cache_dir,
            num_threads=self.options.num_threads,
        )
        if choice.runner is None:
            return signature, RuntimeInfo("savedmodel", None, choice.reason)
        return choice.runner, RuntimeInfo("litert", choice.source, choice.reason)

    def _check_batches(self) -> dict[str, NDArray[np.float32]]:
        """The warm-up batches (zeros) and the contract's real-looking check inputs."""
        warm_up = {
            f"warm-up batch of {size}": np.zeros((size, *self.input_shape), dtype=np.float32)
            for size in dict.fromkeys((1, self.options.max_batch_size))
        }
        return {**warm_up, **check_inputs(self.card.input)}

    def _why_savedmodel(self) -> str:
        if self.options.preference == "savedmodel":
            return "VISION_SERVING_RUNTIME=savedmodel"
        if self.options.preference == "auto":
            return f"the SavedModel runs on the {self.device.kind.upper()} (runtime auto)"
        raise AssertionError(f"runtime {self.options.preference!r} chose the SavedModel")

    def _log_choice(self) -> None:
        """A warning when LiteRT was wanted but the export's model.tflite did not serve
        (missing or refused), so the operator knows to re-export; else info."""
        assert self.info is not None
        wanted_litert = choose_runtime(self.options.preference, self.device.kind) == "litert"
        fell_back = wanted_litert and self.info.litert_source != "export"
        logger.log(
            logging.WARNING if fell_back else logging.INFO,
            "model %s version %s runs on %s: %s",
            self.card.name,
            self.card.version,
            "LiteRT" if self.info.name == "litert" else "the SavedModel",
            self.info.reason,
        )


class SavedModelSignature:
    """The SavedModel's serving signature on the runtime's device, checked against the card."""

    def __init__(self, version_dir: Path, card: ModelCard, device: DevicePlacement) -> None:
        import tensorflow as tf

        with tf.device(device.name):
            saved_model = tf.saved_model.load(str(version_dir))
        signatures = saved_model.signatures
        if card.signature_name not in signatures:
            raise ValueError(
                f"SavedModel has no signature {card.signature_name!r} "
                f"(it has {sorted(signatures.keys())})"
            )
        self._signature: Any = signatures[card.signature_name]
        _check_signature(self._signature, card)
        self._saved_model = saved_model  # keeps the variables alive
        self._device_name = device.name
        self._input_name, self._output_name = card.input.tensor_name, card.output_name

    def __call__(self, pixels: NDArray[np.float32]) -> NDArray[np.float32]:
        import tensorflow as tf

        with tf.device(self._device_name):
            outputs = self._signature(**{self._input_name: tf.constant(pixels)})
        return np.asarray(outputs[self._output_name].numpy(), dtype=np.float32)


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
