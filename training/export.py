"""Export a trained model as the next version in a TensorFlow Serving-style model folder.

    models/<name>/<version>/saved_model.pb, variables/   serving signature
                            model.tflite                  the same, converted for LiteRT
                            model.keras                   for retraining
                            history.json                  per-epoch metrics
                            training.png, confusion.png,  pictures of the run
                            reliability.png
                            model_card.json               the contract with the service

Everything is written into a hidden `.tmp-<uuid>` folder beside the versions and renamed
to the version number only when complete: a server watching `models/` ignores names that
are not integers, so it never sees half a model.

`model.tflite` is written only when it agrees with the SavedModel on the contract's check
inputs and the first test images (`app.contract.runtimes`); otherwise the export goes on
without it, with a warning, and the service converts at load or serves the SavedModel.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from numpy.typing import NDArray

from app.contract.classification import PROBABILITY_FLOOR
from app.contract.model_card import (
    LITERT_MODEL_FILENAME,
    LITERT_MODEL_ROLE,
    InputSpec,
    ModelCard,
)
from app.contract.runtimes import Agreement, check_inputs, compare_runs, outputs_on
from training.data import image_input_spec
from training.evaluate import INPUT_NAME, OUTPUT_NAME, SIGNATURE, saved_model_predictor

logger = logging.getLogger(__name__)

ARTIFACTS = {
    "keras_model": "model.keras",
    "history": "history.json",
    "training_plot": "training.png",
    "confusion_plot": "confusion.png",
    "reliability_plot": "reliability.png",
}
CHECKED_TEST_IMAGES = 32  # real images join the contract's check inputs at export


def existing_versions(model_root: Path) -> list[int]:
    """Integer-named version folders under `models/<name>/`, ascending."""
    if not model_root.is_dir():
        return []
    return sorted(
        int(entry.name) for entry in model_root.iterdir() if entry.is_dir() and entry.name.isdigit()
    )


def next_version(model_root: Path) -> int:
    versions = existing_versions(model_root)
    return versions[-1] + 1 if versions else 1


def write_saved_model(
    model: keras.Model, directory: Path, temperature: float | None = None
) -> None:
    """SavedModel with one signature: `pixels` [N,H,W,C] float32 -> `probabilities`.

    With a `temperature`, the signature ends in temperature scaling,
    softmax(log(max(p, floor)) / T) as `training.calibrate.apply_temperature` computes it,
    so every runtime and protocol serves the calibrated probabilities.
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    input_spec = tf.TensorSpec(
        shape=(None, *model.input_shape[1:]), dtype=tf.float32, name=INPUT_NAME
    )

    def serve(pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        probabilities = model(pixels, training=False)
        if temperature is not None:
            logits = tf.math.log(tf.maximum(probabilities, PROBABILITY_FLOOR))
            probabilities = tf.nn.softmax(logits / temperature, axis=-1)
        return {OUTPUT_NAME: probabilities}

    archive.add_endpoint(name=SIGNATURE, fn=serve, input_signature=[input_spec])
    archive.write_out(str(directory), verbose=False)


def write_litert_model(
    directory: Path, spec: InputSpec, real_images: NDArray[np.float32] | None = None
) -> Path | None:
    """Convert the SavedModel in `directory` into `model.tflite` beside it, if it agrees.

    Checked against the SavedModel's signature on the contract's check inputs (and
    `real_images`, when given); a conversion that disagrees is deleted and a warning says
    why. Returns the file written, or None.
    """
    path = directory / LITERT_MODEL_FILENAME
    path.write_bytes(convert_to_litert(directory))
    batches = dict(check_inputs(spec))
    if real_images is not None and len(real_images):
        batches["test images"] = np.asarray(real_images, dtype=np.float32)
    agreement = litert_agreement(directory, path, batches)
    if agreement.agrees:
        return path
    path.unlink()
    logger.warning(
        "%s not exported: LiteRT output %s; the service will convert at load or serve "
        "the SavedModel",
        LITERT_MODEL_FILENAME,
        agreement.problem,
    )
    return None


def convert_to_litert(saved_model_dir: Path) -> bytes:
    """The SavedModel's serving signature as a LiteRT (TFLite) flatbuffer, float32."""
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(saved_model_dir), signature_keys=[SIGNATURE]
    )
    return bytes(converter.convert())


def litert_agreement(
    saved_model_dir: Path, litert_path: Path, batches: dict[str, NDArray[np.float32]]
) -> Agreement:
    """How the LiteRT model's outputs compare with the SavedModel signature's on `batches`."""
    runner = Interpreter(model_path=str(litert_path)).get_signature_runner(SIGNATURE)
    reference = outputs_on(saved_model_predictor(saved_model_dir), batches)
    converted = outputs_on(lambda pixels: runner(**{INPUT_NAME: pixels})[OUTPUT_NAME], batches)
    return compare_runs(reference, converted, against="the SavedModel's")


@contextlib.contextmanager
def staging_folder(model_root: Path) -> Iterator[Path]:
    """A hidden `.tmp-<uuid>` folder beside the versions, removed unless published.

    A model folder this made for a new model is removed again when nothing was published
    into it, so a failed first export leaves no empty model behind for a server to report.
    """
    new_model = not model_root.exists()
    staging = model_root / f".tmp-{uuid.uuid4().hex}"
    staging.mkdir(parents=True)  # the model folder and its staging folder in one step
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already once published
        if new_model:
            with contextlib.suppress(OSError):  # not empty: a version was published
                model_root.rmdir()


def write_serving_files(
    model: keras.Model,
    staging: Path,
    *,
    history: dict[str, list[float]],
    check_images: NDArray[np.float32],
    temperature: float | None = None,
) -> dict[str, str]:
    """The SavedModel (calibrated by `temperature`, if given), its LiteRT conversion (when
    it agrees), `model.keras` (uncalibrated, to retrain from) and the history; returns the
    artefacts by role for the card."""
    write_saved_model(model, staging, temperature)
    spec = image_input_spec(model.input_shape[1:3], model.input_shape[3])
    artifacts = {role: ARTIFACTS[role] for role in ("keras_model", "history")}
    if write_litert_model(staging, spec, check_images[:CHECKED_TEST_IMAGES]):
        artifacts[LITERT_MODEL_ROLE] = LITERT_MODEL_FILENAME
    model.save(staging / ARTIFACTS["keras_model"])
    history_text = json.dumps(history, indent=2) + "\n"
    (staging / ARTIFACTS["history"]).write_text(history_text, encoding="utf-8")
    return artifacts


def publish(staging: Path, card: ModelCard) -> Path:
    """Write the card with the next free version number and rename the staging folder
    to it, in one step a server watching the folder sees whole or not at all."""
    model_root = staging.parent
    for _ in range(100):  # another exporter may take a number between our look and rename
        version = next_version(model_root)
        card.model_copy(update={"version": version}).write(staging)
        target = model_root / str(version)
        if target.exists():
            continue
        try:
            os.rename(staging, target)
        except OSError:
            continue
        return target
    raise RuntimeError(f"could not find a free version number under {model_root}")
