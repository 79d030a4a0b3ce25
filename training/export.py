"""Export a trained model as the next version in a TensorFlow Serving-style model folder.

    models/<name>/<version>/saved_model.pb, variables/   serving signature
                            model.keras                   for retraining
                            history.json                  per-epoch metrics
                            training.png, confusion.png   pictures of the run
                            model_card.json               the contract with the service

Everything is written into a hidden `.tmp-<uuid>` folder beside the versions and renamed
to the version number only when complete: a server watching `models/` ignores names that
are not integers, so it never sees half a model.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import keras
import tensorflow as tf

from app.contract.classification import EvaluationReport
from app.contract.model_card import ModelCard
from training.data import LabelledArrays
from training.evaluate import INPUT_NAME, OUTPUT_NAME, SIGNATURE, evaluate_saved_model
from training.plots import plot_confusion_matrix, plot_training_history

ARTIFACTS = {
    "keras_model": "model.keras",
    "history": "history.json",
    "training_plot": "training.png",
    "confusion_plot": "confusion.png",
}

# Builds the card once the version and the SavedModel's evaluation are known.
CardFactory = Callable[[int, EvaluationReport, dict[str, str]], ModelCard]


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


def write_saved_model(model: keras.Model, directory: Path) -> None:
    """SavedModel with one signature: `pixels` [N,H,W,C] float32 -> `probabilities`."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    input_spec = tf.TensorSpec(
        shape=(None, *model.input_shape[1:]), dtype=tf.float32, name=INPUT_NAME
    )

    def serve(pixels: tf.Tensor) -> dict[str, tf.Tensor]:
        return {OUTPUT_NAME: model(pixels, training=False)}

    archive.add_endpoint(name=SIGNATURE, fn=serve, input_signature=[input_spec])
    archive.write_out(str(directory), verbose=False)


def export_model(
    model: keras.Model,
    *,
    model_dir: Path,
    name: str,
    history: dict[str, list[float]],
    test: LabelledArrays,
    class_names: list[str],
    make_card: CardFactory,
) -> Path:
    """Write every artefact of a new version atomically; return the version folder.

    The card's evaluation is that of the written SavedModel on `test`, so the card
    describes exactly what the service will load.
    """
    model_root = model_dir / name
    model_root.mkdir(parents=True, exist_ok=True)
    staging = model_root / f".tmp-{uuid.uuid4().hex}"
    try:
        write_saved_model(model, staging)
        model.save(staging / ARTIFACTS["keras_model"])
        history_text = json.dumps(history, indent=2) + "\n"
        (staging / ARTIFACTS["history"]).write_text(history_text, encoding="utf-8")
        evaluation = evaluate_saved_model(staging, test, class_names)
        plot_training_history(history, staging / ARTIFACTS["training_plot"], title=name)
        plot_confusion_matrix(evaluation, staging / ARTIFACTS["confusion_plot"], title=name)
        return _publish(staging, model_root, lambda v: make_card(v, evaluation, ARTIFACTS))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _publish(staging: Path, model_root: Path, card_for: Callable[[int], ModelCard]) -> Path:
    """Write the card and rename the staging folder to the next free version."""
    for _ in range(100):  # another exporter may take a number between our look and rename
        version = next_version(model_root)
        card_for(version).write(staging)
        target = model_root / str(version)
        if target.exists():
            continue
        try:
            os.rename(staging, target)
        except OSError:
            continue
        return target
    raise RuntimeError(f"could not find a free version number under {model_root}")
