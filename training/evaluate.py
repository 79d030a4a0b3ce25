"""Evaluate an exported SavedModel through its serving signature.

Evaluating the SavedModel (not the in-memory Keras model) means the figures in a model
card are the figures of the exact artefact the service loads. The metrics themselves come
from `app.contract.classification`, shared with the service.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from numpy.typing import NDArray

from app.contract.classification import EvaluationReport, evaluate_probabilities
from app.contract.decision import OperatingPoint
from app.contract.model_card import ModelCard
from training.data import LabelledArrays
from training.recipes import recipe_for

SIGNATURE = "serving_default"
INPUT_NAME = "pixels"
OUTPUT_NAME = "probabilities"


def saved_model_predictor(version_dir: Path) -> Callable[[NDArray[Any]], NDArray[np.float32]]:
    """The SavedModel's serving signature as `[N, H, W, C]` pixels -> `[N, classes]`."""
    serve = tf.saved_model.load(str(version_dir)).signatures[SIGNATURE]

    def predict(images: NDArray[Any]) -> NDArray[np.float32]:
        outputs = serve(**{INPUT_NAME: tf.constant(np.asarray(images, dtype=np.float32))})
        return np.asarray(outputs[OUTPUT_NAME].numpy(), dtype=np.float32)

    return predict


def predict_with_saved_model(
    version_dir: Path, images: NDArray[np.float32], batch_size: int = 256
) -> NDArray[np.float32]:
    """Softmax probabilities `[N, classes]` from the SavedModel's serving signature."""
    predict = saved_model_predictor(version_dir)
    batches = [
        predict(images[start : start + batch_size]) for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(batches).astype(np.float32)


def evaluate_saved_model(
    version_dir: Path,
    data: LabelledArrays,
    class_names: list[str],
    operating_point: OperatingPoint | None = None,
) -> EvaluationReport:
    """The SavedModel's serving signature evaluated on `data`, labels decided by
    `operating_point` (argmax without one), as the service decides them."""
    probabilities = predict_with_saved_model(version_dir, data.images)
    return evaluate_probabilities(data.labels, probabilities, class_names, operating_point)


def load_split_for_card(card: ModelCard, data_path: Path | None, split: str) -> LabelledArrays:
    """One labelled split read by the recipe that trained `card`, with the options its card
    records (input size, channels...): the same reading as the run's own test split."""
    recipe = recipe_for(card.name)
    return recipe.load_split(data_path, split, recipe.options_from_card(card))
