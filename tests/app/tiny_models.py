"""Tiny models exported by the tests, through training's real SavedModel writer.

They are untrained (fixed seeds), so their predictions are meaningless but
deterministic; tests that need right answers use the shipped models instead.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np

from app.contract.classification import evaluate_probabilities
from app.contract.model_card import (
    DataSource,
    InputSpec,
    ModelCard,
    Preprocessing,
    PreprocessingKind,
    TrainingRecord,
)
from training.export import write_saved_model

TINY_DIGITS = "tiny-digits"
TINY_XRAY = "tiny-xray"
XRAY_SIZE = 32


def build_tiny(input_shape: tuple[int, int, int], classes: int, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input(shape=input_shape, name="pixels"),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Flatten(),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(classes, activation="softmax"),
        ]
    )


def tiny_card(
    name: str, version: int, class_names: list[str], spec: InputSpec, kind: PreprocessingKind
) -> ModelCard:
    probabilities = np.full((len(class_names), len(class_names)), 1 / len(class_names))
    evaluation = evaluate_probabilities(list(range(len(class_names))), probabilities, class_names)
    return ModelCard(
        name=name,
        version=version,
        created_at=datetime.now(UTC),
        description=f"untrained {name} for tests",
        class_names=class_names,
        input=spec,
        preprocessing=Preprocessing(kind=kind),
        architecture="tiny test MLP",
        parameter_count=0,
        training=TrainingRecord(
            epochs_requested=0,
            epochs_run=0,
            batch_size=1,
            optimizer="none",
            learning_rate=0.0,
            seed=0,
            validation="none",
            early_stopping=False,
            data=DataSource(name="none"),
            duration_seconds=0.0,
        ),
        evaluation=evaluation,
    )


def export_tiny_digits(model_dir: Path, version: int = 1, seed: int = 1) -> Path:
    target = model_dir / TINY_DIGITS / str(version)
    write_saved_model(build_tiny((28, 28, 1), 10, seed), target)
    spec = InputSpec(height=28, width=28, channels=1, color_mode="grayscale")
    tiny_card(TINY_DIGITS, version, [str(d) for d in range(10)], spec, "mnist-digit").write(target)
    return target


def export_tiny_xray(model_dir: Path, version: int = 1, seed: int = 2) -> Path:
    target = model_dir / TINY_XRAY / str(version)
    write_saved_model(build_tiny((XRAY_SIZE, XRAY_SIZE, 1), 2, seed), target)
    spec = InputSpec(height=XRAY_SIZE, width=XRAY_SIZE, channels=1, color_mode="grayscale")
    tiny_card(TINY_XRAY, version, ["NORMAL", "PNEUMONIA"], spec, "resize").write(target)
    return target
