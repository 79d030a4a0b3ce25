"""The model card of a trained version: the recipe's words plus the run's record."""

from __future__ import annotations

import platform
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from app.contract.classification import EvaluationReport
from app.contract.decision import OperatingPoint
from app.contract.drift import PredictionProfile
from app.contract.model_card import (
    Calibration,
    DataSource,
    ModelCard,
    ParentModel,
    TrainingRecord,
)
from training.data import TrainingData, image_input_spec
from training.fit import History
from training.recipes.base import Recipe, TrainRequest


def build_card(
    recipe: Recipe,
    request: TrainRequest,
    *,
    model: keras.Model,
    data: TrainingData,
    history: History,
    evaluation: EvaluationReport,
    evaluation_at_argmax: EvaluationReport | None,
    operating_point: OperatingPoint | None,
    calibration: Calibration | None,
    prediction_profile: PredictionProfile | None,
    artifacts: dict[str, str],
) -> ModelCard:
    """The card of a version about to be published (`training.export.publish` numbers it)."""
    options = recipe.options(request)
    text = recipe.card_text(options)
    fit = request.fit
    height, width, channels = model.input_shape[1:4]
    return ModelCard(
        name=recipe.name,
        version=1,  # replaced by the version number `publish` takes
        created_at=datetime.now(UTC),
        description=text.description,
        limitations=recipe.limitations,
        class_names=data.class_names,
        input=image_input_spec((height, width), channels),
        preprocessing=text.preprocessing,
        architecture=text.architecture,
        parameter_count=int(model.count_params()),
        training=TrainingRecord(
            epochs_requested=fit.epochs,
            epochs_run=len(history.get("loss", [])),
            batch_size=fit.batch_size,
            optimizer=fit.optimizer,
            learning_rate=fit.learning_rate,
            seed=fit.seed,
            validation=data.validation_description,
            early_stopping=fit.early_stopping,
            class_weights=(
                {data.class_names[i]: w for i, w in data.class_weights.items()}
                if data.class_weights
                else None
            ),
            hyperparameters=_hyperparameters(request, asdict(options), text.notes, history),
            data=DataSource(name=data.name, fingerprint=data.fingerprint, counts=data.counts),
            duration_seconds=round(float(sum(history.get("epoch_seconds", []))), 1),
            parent=ParentModel(**request.parent) if request.parent else None,
        ),
        evaluation=evaluation,
        evaluation_at_argmax=evaluation_at_argmax,
        operating_point=operating_point,
        calibration=calibration,
        prediction_profile=prediction_profile,
        library_versions=library_versions(),
        artifacts=dict(artifacts),
    )


def library_versions() -> dict[str, str]:
    """The versions a card records: what made (or wrapped) the SavedModel."""
    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _hyperparameters(
    request: TrainRequest, options: dict[str, Any], notes: dict[str, Any], history: History
) -> dict[str, Any]:
    """The recipe's options (what `retrain` reads back) and the fit's extra settings."""
    recorded: dict[str, Any] = {
        "patience": request.fit.patience,
        "restore_best_weights": request.fit.restore_best,
        "reduce_lr_on_plateau_patience": request.fit.reduce_lr_patience,
        "ema_momentum": request.fit.ema_momentum,
        **options,
        **notes,
    }
    if history.get("val_loss"):
        recorded["best_val_loss"] = min(history["val_loss"])
    return recorded
