"""LiteRT on CPU: the runner, and finding a LiteRT model that answers as the SavedModel does.

`find_litert_model` takes, in order:
1. `model.tflite` from the version folder, written by training's export;
2. else (missing, or it disagrees) a conversion of the SavedModel made at load, kept in
   the cache folder (never the model folder, which may be read-only or watched) under a
   hash of the SavedModel's files, so a restart or a second worker reuses it;
3. else nothing: the SavedModel serves.

A LiteRT model is used only if its outputs agree with the SavedModel signature's on the
check batches (`app.contract.runtimes.compare_runs`). Whatever happens is said in one
sentence, the reason every status API shows.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from app.contract.model_card import LITERT_MODEL_FILENAME, ModelCard
from app.contract.runtimes import Batches, Predict, compare_runs, outputs_on

LiteRTSource = Literal["export", "converted at load"]

LITERT_THREADS = 1
"""Threads of each LiteRT interpreter. Measured on this project's 2-core machine, the
shipped models' LiteRT conversions (XNNPACK), median of 5 rounds, 1 vs 2 threads:
MNIST MLP 6.3 vs 9.0 us at batch 1 and 39 vs 73 us at batch 32; pneumonia CNN 88 vs
150 us at batch 1 and 1.4-1.6 vs 1.6-2.5 ms at batch 16, while the machine was busy.
On a quiet machine 2 threads run the CNN alone ~1.9x faster at batch 8-16
(docs/performance.md, the raw model); in the service the other core is busy decoding
X-rays and running the event loop (or a second worker process), so one is kept."""

_MISSING = f"{LITERT_MODEL_FILENAME} missing (an older export, or a SavedModel made elsewhere)"


class ConversionFailed(RuntimeError):
    """TensorFlow's converter refused the SavedModel (its errors have no common type)."""


class LiteRTRunner:
    """A LiteRT model's serving signature: `[N, H, W, C]` float32 in, `[N, classes]` out.

    The signature runner resizes its input to each batch's size (~7 us when the size
    changes for the MNIST MLP, nothing when it does not).
    """

    def __init__(self, path: Path, card: ModelCard, num_threads: int = LITERT_THREADS) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.path = path
        self._input_name, self._output_name = card.input.tensor_name, card.output_name
        self._interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        self._runner = self._interpreter.get_signature_runner(card.signature_name)
        inputs, outputs = self._runner.get_input_details(), self._runner.get_output_details()
        if self._input_name not in inputs or self._output_name not in outputs:
            raise ValueError(
                f"its signature {card.signature_name!r} takes {sorted(inputs)} and gives "
                f"{sorted(outputs)}; the model card says {self._input_name!r} -> "
                f"{self._output_name!r}"
            )
        # The batcher never runs two batches of one model at once; the lock makes sure
        # nothing else does either (an interpreter is not thread-safe).
        self._lock = threading.Lock()

    def __call__(self, pixels: NDArray[np.float32]) -> NDArray[np.float32]:
        with self._lock:
            outputs = self._runner(**{self._input_name: np.ascontiguousarray(pixels)})
        return np.asarray(outputs[self._output_name], dtype=np.float32)


@dataclass(frozen=True)
class LiteRTChoice:
    """The LiteRT model to serve (or none: the SavedModel serves), whence it came, and why."""

    runner: LiteRTRunner | None
    source: LiteRTSource | None
    reason: str


def find_litert_model(
    version_dir: Path,
    card: ModelCard,
    saved_model: Predict,
    batches: Batches,
    *,
    cache_dir: Path,
    num_threads: int = LITERT_THREADS,
) -> LiteRTChoice:
    """The exported LiteRT model, else a conversion at load, that agrees with `saved_model`.

    `saved_model` is the SavedModel signature: the reference both candidates must match
    on every batch of `batches`.
    """
    check = _Check(card, outputs_on(saved_model, batches), batches, num_threads)
    exported = version_dir / LITERT_MODEL_FILENAME
    if not exported.is_file():
        return _converted_at_load(_MISSING, version_dir, cache_dir, check)
    runner, verdict = check(exported)
    if runner is None:
        why = f"{LITERT_MODEL_FILENAME} from the export is not used: {verdict}"
        return _converted_at_load(why, version_dir, cache_dir, check)
    return LiteRTChoice(runner, "export", f"{LITERT_MODEL_FILENAME} from the export {verdict}")


@dataclass(frozen=True)
class _Check:
    """Loads a LiteRT file and compares its outputs with the SavedModel's (`reference`)."""

    card: ModelCard
    reference: Batches
    batches: Batches
    num_threads: int

    def __call__(self, path: Path) -> tuple[LiteRTRunner | None, str]:
        """A runner and "agrees with ...", or None and why the file may not serve."""
        try:
            runner = LiteRTRunner(path, self.card, self.num_threads)
        except Exception as error:  # a corrupt or foreign file: ValueError, RuntimeError
            return None, f"LiteRT cannot load it ({_describe(error)})"
        try:
            outputs = outputs_on(runner, self.batches)
        except Exception as error:
            return None, f"LiteRT cannot run it ({_describe(error)})"
        agreement = compare_runs(self.reference, outputs, against="the SavedModel's")
        if not agreement.agrees:
            return None, f"LiteRT output {agreement.problem}"
        return runner, (
            f"agrees with the SavedModel (largest difference {agreement.max_difference:.1e} "
            f"over {agreement.images} check images)"
        )


def _converted_at_load(why: str, version_dir: Path, cache_dir: Path, check: _Check) -> LiteRTChoice:
    """A conversion into the cache that passes `check`, else the SavedModel; `why` the
    exported model did not serve starts the reason."""
    try:
        converted, fresh = _cached_conversion(version_dir, check.card, cache_dir)
    except ConversionFailed as error:
        reason = f"{why}; converting it at load failed ({error}); serving the SavedModel"
        return LiteRTChoice(None, None, reason)
    except OSError as error:
        reason = (
            f"{why}; cannot write a conversion into the cache folder {cache_dir} "
            f"({error.strerror or error}): set VISION_SERVING_RUNTIME_CACHE_DIR to a "
            "writable folder; serving the SavedModel"
        )
        return LiteRTChoice(None, None, reason)
    made = f"converted at load into {converted}"
    if not fresh:
        made = f"using the conversion cached at {converted}"
    runner, verdict = check(converted)
    if runner is not None:
        return LiteRTChoice(runner, "converted at load", f"{why}; {made}, which {verdict}")
    hint = "" if fresh else " (delete it to convert again)"
    return LiteRTChoice(None, None, f"{why}; {made}{hint}, but {verdict}; serving the SavedModel")


def _cached_conversion(version_dir: Path, card: ModelCard, cache_dir: Path) -> tuple[Path, bool]:
    """The conversion of the SavedModel in the cache, made now if not there yet.

    Returns its path and whether it was made now. Raises OSError when the cache folder
    cannot be written, ConversionFailed when the SavedModel cannot be converted.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / f"{card.name}-{conversion_key(version_dir, card.signature_name)}.tflite"
    if target.is_file():
        return target, False
    data = convert_saved_model(version_dir, card.signature_name)
    write_atomically(target, data)
    return target, True


def convert_saved_model(version_dir: Path, signature_name: str) -> bytes:
    """The SavedModel's signature as a float32 LiteRT flatbuffer (as training's export)."""
    import tensorflow as tf

    try:
        converter = tf.lite.TFLiteConverter.from_saved_model(
            str(version_dir), signature_keys=[signature_name]
        )
        return bytes(converter.convert())
    except Exception as error:
        raise ConversionFailed(_describe(error)) from error


def conversion_key(version_dir: Path, signature_name: str) -> str:
    """A hash of what the conversion depends on: the graph, the weights, the converter.

    A re-exported or edited SavedModel, or another TensorFlow, gets a new cache file
    instead of a stale one.
    """
    import tensorflow as tf

    digest = hashlib.sha256(f"{tf.__version__}\0{signature_name}\0".encode())
    files = [version_dir / "saved_model.pb", *sorted((version_dir / "variables").glob("*"))]
    for path in files:
        if path.is_file():
            digest.update(f"{path.relative_to(version_dir)}\0{path.stat().st_size}\0".encode())
            with path.open("rb") as file:
                for block in iter(lambda: file.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:24]


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` so no reader (another worker) ever sees part of it."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
