"""Tiny models exported by the tests, through training's real SavedModel writer.

They are untrained (fixed seeds), so their predictions are meaningless but
deterministic; tests that need right answers use the shipped models instead.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np

from app.contract.classification import evaluate_probabilities
from app.contract.decision import OperatingFigures, OperatingPoint
from app.contract.model_card import (
    LITERT_MODEL_FILENAME,
    LITERT_MODEL_ROLE,
    DataSource,
    ImportRecord,
    InputSpec,
    ModelCard,
    Preprocessing,
    PreprocessingKind,
    TrainingRecord,
)
from training.export import write_litert_model, write_saved_model

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
    name: str,
    version: int,
    class_names: list[str],
    spec: InputSpec,
    kind: PreprocessingKind,
    artifacts: dict[str, str] | None = None,
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
        artifacts=artifacts or {},
    )


def write_tiny_version(
    target: Path,
    model: keras.Model,
    card: ModelCard,
    *,
    litert: bool = True,
) -> Path:
    """A version folder as training exports it: SavedModel, model.tflite (unless
    `litert=False`, as older exports are) and the card listing it."""
    write_saved_model(model, target)
    if litert and write_litert_model(target, card.input):
        card = card.model_copy(update={"artifacts": {LITERT_MODEL_ROLE: LITERT_MODEL_FILENAME}})
    card.write(target)
    return target


def export_tiny_digits(
    model_dir: Path, version: int = 1, seed: int = 1, *, litert: bool = True
) -> Path:
    spec = InputSpec(height=28, width=28, channels=1, color_mode="grayscale")
    card = tiny_card(TINY_DIGITS, version, [str(d) for d in range(10)], spec, "mnist-digit")
    model = build_tiny((28, 28, 1), 10, seed)
    return write_tiny_version(model_dir / TINY_DIGITS / str(version), model, card, litert=litert)


def export_tiny_xray(
    model_dir: Path, version: int = 1, seed: int = 2, *, litert: bool = True
) -> Path:
    spec = InputSpec(height=XRAY_SIZE, width=XRAY_SIZE, channels=1, color_mode="grayscale")
    card = tiny_card(TINY_XRAY, version, ["NORMAL", "PNEUMONIA"], spec, "resize")
    model = build_tiny((XRAY_SIZE, XRAY_SIZE, 1), 2, seed)
    return write_tiny_version(model_dir / TINY_XRAY / str(version), model, card, litert=litert)


def give_foreign_litert_model(version_dir: Path, seed: int = 99) -> None:
    """Replace a tiny-digits version's model.tflite by another tiny model's of the same
    shapes: a stale or wrong conversion, which the load-time check must refuse."""
    with tempfile.TemporaryDirectory() as scratch:
        other = export_tiny_digits(Path(scratch), seed=seed)
        shutil.copyfile(other / LITERT_MODEL_FILENAME, version_dir / LITERT_MODEL_FILENAME)


def copy_with_operating_point(
    model_dir: Path,
    source: str,
    name: str,
    threshold: float,
    positive_class: str,
    **card_updates: object,
) -> Path:
    """Copy `source/1` as model `name` whose card decides by `threshold` on `positive_class`,
    its evaluations remade at the operating point and at argmax. `card_updates` are set on
    the card too (calibration, artifacts)."""
    target = model_dir / name / "1"
    shutil.copytree(model_dir / source / "1", target)
    card = ModelCard.read(target)
    names = card.class_names
    point = OperatingPoint(
        positive_class=positive_class,
        threshold=threshold,
        goal=f"highest specificity with {positive_class} recall >= 0.95 on validation",
        figures=OperatingFigures(
            count=200,
            recall=0.95,
            specificity=0.62,
            precision=0.81,
            accuracy=0.83,
            balanced_accuracy=0.785,
        ),
    )
    labels = list(range(len(names)))
    uniform = np.full((len(names), len(names)), 1 / len(names))
    data = card.model_dump() | {
        "name": name,
        "operating_point": point,
        "evaluation": evaluate_probabilities(labels, uniform, names, point),
        "evaluation_at_argmax": evaluate_probabilities(labels, uniform, names),
        **card_updates,
    }
    ModelCard.model_validate(data).write(target)  # validated, as the service will read it
    return target


def mark_as_imported(version_dir: Path) -> ModelCard:
    """Rewrite a version's card as `training import` writes one without labelled data:
    an import record, no training record, no evaluation. Returns the card written."""
    imported = ImportRecord(
        source="digits.keras",
        source_format="keras",
        fingerprint="sha256:" + "0" * 64,
        imported_at=datetime.now(UTC),
        input_range=(0.0, 1.0),
    )
    card = ModelCard.read(version_dir).model_copy(
        update={"training": None, "evaluation": None, "imported": imported}
    )
    card.write(version_dir)
    return card
