"""What differs between the two shipped models: data, network and model card text.

A `TrainRequest` is everything a training run needs, saved as JSON in its run folder so
an interrupted run can be resumed exactly as it was started.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import keras
import numpy as np
import tensorflow as tf

from app.contract.classification import EvaluationReport
from app.contract.model_card import (
    DataSource,
    ModelCard,
    ParentModel,
    Preprocessing,
    TrainingRecord,
)
from training.architectures import (
    build_alexnet,
    build_lenet5,
    build_mnist_mlp,
    build_pneumonia_cnn,
    build_vgg16,
)
from training.data import (
    XRAY_CLASS_NAMES,
    DataError,
    LabelledArrays,
    TrainingData,
    image_input_spec,
    load_mnist_arrays,
    load_mnist_training,
    load_xray_split_arrays,
    load_xray_training,
    mnist_split,
)
from training.fit import History

ModelName = Literal["mnist-mlp", "pneumonia-cnn"]
MODEL_NAMES: tuple[ModelName, ...] = ("mnist-mlp", "pneumonia-cnn")
XRAY_ARCHITECTURES = ("pneumonia-cnn", "lenet5", "alexnet", "vgg16")

XRAY_LIMITATIONS = (
    "A teaching model, not a diagnostic tool: it must not be used to diagnose, triage or "
    "treat anyone. Trained on pediatric (age 1-5) anterior-posterior chest X-rays from one "
    "hospital; it has not been validated on other populations, devices or views. "
    "Data: D. Kermany, K. Zhang, M. Goldbaum, 'Labeled Optical Coherence Tomography (OCT) "
    "and Chest X-Ray Images for Classification', Mendeley Data v2, 2018, CC BY 4.0."
)
MNIST_LIMITATIONS = (
    "Reads one handwritten digit per picture: dark or light ink, any size or position, on "
    "plain, ruled or squared paper or a sheet on a darker table (0.95-0.99 on synthetic "
    "photos of MNIST test digits, docs/digits.md). A blank page, ruled paper alone, an "
    "empty sheet or a shadow gives digit_found false and a meaningless label. Several "
    "digits, letters or other marks are still read as one of 0-9, often confidently. Not "
    "handled: a table seen along one side only, a shadow across the digit, a faint digit "
    "touching the picture's edge. Handwriting unlike MNIST's writers (Y. LeCun, C. Cortes, "
    "C. J. C. Burges) is read less well."
)


@dataclass
class TrainRequest:
    """A training run as asked for on the command line (JSON-serialisable)."""

    model: ModelName
    data: str | None
    model_dir: str = "models"
    epochs: int = 20
    batch_size: int = 32
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    seed: int = 42
    early_stopping: bool = True
    patience: int = 3
    restore_best: bool = True
    reduce_lr_patience: int | None = None
    ema_momentum: float | None = None  # Adam(use_ema=True): validate/export weight averages
    verbose: int | None = None  # Keras progress output; None: auto, chosen when fitting
    # mnist-mlp
    validation_split: float = 0.3
    hidden_units: list[int] = field(default_factory=lambda: [128, 60])
    dropout: float = 0.2  # mnist-mlp: after the first hidden layer; pneumonia-cnn: before Dense
    # pneumonia-cnn
    architecture: str = "pneumonia-cnn"
    image_size: list[int] = field(default_factory=lambda: [128, 128])
    channels: int = 1
    augment: bool = True
    class_weights: bool = True
    class_weight_power: float = 1.0  # weights = balanced ** power (1 balanced, 0 none)
    # retraining
    initial_model: str | None = None
    parent: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> TrainRequest:
        return cls(**payload)

    @property
    def size(self) -> tuple[int, int]:
        height, width = self.image_size
        return height, width


def load_training_data(request: TrainRequest) -> TrainingData:
    data = Path(request.data) if request.data else None
    if request.model == "mnist-mlp":
        return load_mnist_training(
            data,
            validation_split=request.validation_split,
            batch_size=request.batch_size,
            seed=request.seed,
        )
    if data is None:
        raise DataError(
            "pneumonia-cnn needs --data: a chest X-ray folder with train/, val/ and test/, "
            "each holding NORMAL/ and PNEUMONIA/ images"
        )
    return load_xray_training(
        data,
        image_size=request.size,
        channels=request.channels,
        batch_size=request.batch_size,
        seed=request.seed,
        augment=request.augment,
        class_weighting=request.class_weights,
        class_weight_power=request.class_weight_power,
    )


def load_test_split(request: TrainRequest) -> LabelledArrays:
    data = Path(request.data) if request.data else None
    if request.model == "mnist-mlp":
        return mnist_split(load_mnist_arrays(data), "test")
    assert data is not None  # checked when the training data was loaded
    return load_xray_split_arrays(data, "test", image_size=request.size, channels=request.channels)


def build_model(request: TrainRequest) -> keras.Model:
    if request.model == "mnist-mlp":
        return build_mnist_mlp(hidden_units=request.hidden_units, dropout=request.dropout)
    shape = (*request.size, request.channels)
    classes = len(XRAY_CLASS_NAMES)
    if request.architecture == "pneumonia-cnn":
        return build_pneumonia_cnn(request.size, request.channels, classes, request.dropout)
    if request.architecture == "lenet5":
        return build_lenet5(shape, classes)
    if request.architecture == "alexnet":
        return build_alexnet(shape, classes)
    if request.architecture == "vgg16":
        return build_vgg16(shape, classes)
    raise ValueError(f"unknown architecture {request.architecture!r}; one of {XRAY_ARCHITECTURES}")


def build_card(
    request: TrainRequest,
    *,
    model: keras.Model,
    data: TrainingData,
    history: History,
    version: int,
    evaluation: EvaluationReport,
    artifacts: dict[str, str],
) -> ModelCard:
    """The model card of an exported version, from the run that made it."""
    is_mnist = request.model == "mnist-mlp"
    height, width = (28, 28) if is_mnist else request.size
    epochs_run = len(history.get("loss", []))
    return ModelCard(
        name=request.model,
        version=version,
        created_at=datetime.now(UTC),
        description=_describe(request),
        limitations=MNIST_LIMITATIONS if is_mnist else XRAY_LIMITATIONS,
        class_names=data.class_names,
        input=image_input_spec((height, width), 1 if is_mnist else request.channels),
        preprocessing=_preprocessing(request),
        architecture=request.architecture if not is_mnist else "mnist-mlp",
        parameter_count=int(model.count_params()),
        training=TrainingRecord(
            epochs_requested=request.epochs,
            epochs_run=epochs_run,
            batch_size=request.batch_size,
            optimizer=request.optimizer,
            learning_rate=request.learning_rate,
            seed=request.seed,
            validation=data.validation_description,
            early_stopping=request.early_stopping,
            class_weights=(
                {data.class_names[i]: w for i, w in data.class_weights.items()}
                if data.class_weights
                else None
            ),
            hyperparameters=_hyperparameters(request, history),
            data=DataSource(name=data.name, fingerprint=data.fingerprint, counts=data.counts),
            duration_seconds=round(float(sum(history.get("epoch_seconds", []))), 1),
            parent=ParentModel(**request.parent) if request.parent else None,
        ),
        evaluation=evaluation,
        library_versions={
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
        artifacts=dict(artifacts),
    )


def _describe(request: TrainRequest) -> str:
    if request.model == "mnist-mlp":
        layers = " -> ".join(f"Dense {units} relu" for units in request.hidden_units)
        dropout = (
            f", Dropout {request.dropout} after the first hidden layer" if request.dropout else ""
        )
        return (
            f"Handwritten digit classifier (MNIST): Rescaling 1/255 -> Flatten -> {layers} -> "
            f"Dense 10 softmax{dropout}."
        )
    height, width = request.size
    dropout = f"Dropout {request.dropout} -> " if request.dropout else ""
    return (
        f"Chest X-ray classifier, NORMAL vs PNEUMONIA ({request.architecture}) on "
        f"{height}x{width}x{request.channels} images: Conv 32 -> MaxPool -> Conv 64 -> "
        f"MaxPool -> Conv 128 stride 2 -> {dropout}Dense 128 -> Dense 2 softmax "
        "(3x3 relu convolutions)."
        if request.architecture == "pneumonia-cnn"
        else f"Chest X-ray classifier, NORMAL vs PNEUMONIA ({request.architecture}) on "
        f"{height}x{width}x{request.channels} images."
    )


def _preprocessing(request: TrainRequest) -> Preprocessing:
    if request.model == "mnist-mlp":
        return Preprocessing(
            kind="mnist-digit",
            description="app.contract.digits.normalize_digit: grayscale (deep images by the "
            "bits their data uses); a sheet photographed on a darker table is cropped to; "
            "polarity from the border (dark-on-light inverted); paper level (a plane, or a "
            "quadratic surface on photos) and noise removed, ink stretched to 255; ruled and "
            "squared lines erased; cropped to the ink, fitted in 20x20 keeping the aspect "
            "ratio, centred by centre of mass in 28x28; MNIST-form 28x28 pictures pass "
            "unchanged. Raw 0..255 pixels (the model scales them). Each answer says whether "
            "a digit was found (digit_found).",
        )
    height, width = request.size
    mode = "L" if request.channels == 1 else "RGB"
    return Preprocessing(
        kind="resize",
        description=f"app.contract.preprocessing.prepare_image, which training read its "
        f"files with too: decode (EXIF orientation applied; JPEGs at 1/2, 1/4 or 1/8 scale "
        f"when that stays at least {width}x{height}; 16-bit images scaled by the bits their "
        f"data uses), convert('{mode}'), resize to {width}x{height} (Pillow BILINEAR); raw "
        "0..255 pixels (the model scales them).",
    )


def _hyperparameters(request: TrainRequest, history: History) -> dict[str, Any]:
    common: dict[str, Any] = {
        "patience": request.patience,
        "restore_best_weights": request.restore_best,
        "reduce_lr_on_plateau_patience": request.reduce_lr_patience,
        "ema_momentum": request.ema_momentum,
    }
    if history.get("val_loss"):
        common["best_val_loss"] = min(history["val_loss"])
    if request.model == "mnist-mlp":
        return {
            **common,
            "hidden_units": request.hidden_units,
            "dropout": request.dropout,
            "validation_split": request.validation_split,
        }
    return {
        **common,
        "dropout": request.dropout if request.architecture == "pneumonia-cnn" else None,
        "image_size": request.image_size,
        "channels": request.channels,
        "augmentation": (
            "RandomTranslation 0.05, RandomZoom 0.1, RandomRotation 0.03, RandomContrast 0.1"
            if request.augment
            else None
        ),
        "resize": "app.contract.preprocessing.prepare_image (as the service)",
        "class_weight_power": request.class_weight_power if request.class_weights else None,
    }
