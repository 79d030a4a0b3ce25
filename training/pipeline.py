"""The training flow, top to bottom: data -> model -> fit -> evaluate -> export.

`start_run` begins a run in a new run folder, `resume_run` carries on an interrupted one
and `start_retrain` starts a run from an exported version on new data. All three end in
`_finish_run`, which fits, then exports the next version with its card.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import keras

from app.contract.model_card import ModelCard
from training.data import TrainingData
from training.export import ARTIFACTS, export_model
from training.fit import LAST_CHECKPOINT, FitSettings, compile_model, fit_in_run_dir
from training.recipes import TrainRequest, build_card, build_model, load_test_split
from training.recipes import load_training_data as load_data

RUN_REQUEST = "run.json"


@dataclass(frozen=True)
class RunResult:
    """Where a finished run exported its model, and how that model scored on test."""

    run_dir: Path
    version_dir: Path
    card: ModelCard

    def summary(self) -> str:
        evaluation = self.card.evaluation
        accuracy = f"{evaluation.accuracy:.4f}" if evaluation.accuracy is not None else "n/a"
        return (
            f"exported {self.card.name} v{self.card.version} to {self.version_dir} | "
            f"test accuracy {accuracy} on {evaluation.count} images | "
            f"{self.card.training.epochs_run} epochs, {self.card.training.duration_seconds:.0f}s"
        )


def new_run_dir(runs_dir: Path, model: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    run_dir = runs_dir / f"{model}-{stamp}"
    run_dir.mkdir(parents=True)
    return run_dir


def start_run(
    request: TrainRequest,
    runs_dir: Path,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> RunResult:
    """Train a model from scratch (or from `request.initial_model`) in a new run folder."""
    keras.utils.set_random_seed(request.seed)
    data = load_data(request)  # fail on bad data before creating anything
    run_dir = new_run_dir(runs_dir, request.model)
    (run_dir / RUN_REQUEST).write_text(json.dumps(request.to_json(), indent=2), encoding="utf-8")
    print(f"run folder: {run_dir} (resume with: python -m training resume {run_dir})")
    if request.initial_model:
        model = keras.models.load_model(request.initial_model)
    else:
        model = build_model(request)
    compile_model(model, request.optimizer, request.learning_rate, request.ema_momentum)
    return _finish_run(request, run_dir, model, data, extra_callbacks)


def resume_run(
    run_dir: Path,
    epochs: int | None = None,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> RunResult:
    """Continue an interrupted run from its last completed epoch, then export."""
    request_path = run_dir / RUN_REQUEST
    if not request_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: no {RUN_REQUEST} in it")
    request = TrainRequest.from_json(json.loads(request_path.read_text(encoding="utf-8")))
    if epochs is not None:
        request.epochs = epochs
        request_path.write_text(json.dumps(request.to_json(), indent=2), encoding="utf-8")
    # A different seed than the first part, so the resumed epochs see fresh shuffles
    # and augmentations rather than replaying the first epochs' ones.
    keras.utils.set_random_seed(request.seed + 1)
    data = load_data(request)
    checkpoint = run_dir / LAST_CHECKPOINT
    if checkpoint.exists():
        model = keras.models.load_model(checkpoint)  # weights and optimizer state
    elif request.initial_model:
        model = keras.models.load_model(request.initial_model)
        compile_model(model, request.optimizer, request.learning_rate, request.ema_momentum)
    else:
        model = build_model(request)
        compile_model(model, request.optimizer, request.learning_rate, request.ema_momentum)
    return _finish_run(request, run_dir, model, data, extra_callbacks)


def start_retrain(
    version_dir: Path,
    data: str,
    runs_dir: Path,
    *,
    model_dir: Path | None = None,
    overrides: dict[str, object] | None = None,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> RunResult:
    """Train an exported version further on `data`; export it as the next version.

    The run starts from the version's `model.keras` with the settings recorded in its
    card, changed by `overrides` (e.g. epochs, learning rate).
    """
    card = ModelCard.read(version_dir)
    keras_model = version_dir / card.artifacts.get("keras_model", ARTIFACTS["keras_model"])
    if not keras_model.is_file():
        raise FileNotFoundError(f"{version_dir} has no {keras_model.name} to retrain from")
    hyperparameters = card.training.hyperparameters
    request = TrainRequest(
        model=card.name,  # type: ignore[arg-type]
        data=data,
        model_dir=str(model_dir if model_dir is not None else version_dir.parent.parent),
        epochs=card.training.epochs_requested,
        batch_size=card.training.batch_size,
        optimizer=card.training.optimizer,
        learning_rate=card.training.learning_rate,
        seed=card.training.seed,
        early_stopping=card.training.early_stopping,
        architecture=card.architecture if card.name != "mnist-mlp" else "pneumonia-cnn",
        image_size=[card.input.height, card.input.width],
        channels=card.input.channels,
        hidden_units=hyperparameters.get("hidden_units", [128, 60]),
        dropout=hyperparameters.get("dropout") or 0.0,
        ema_momentum=hyperparameters.get("ema_momentum"),
        class_weights=card.training.class_weights is not None,
        class_weight_power=_power_or_balanced(hyperparameters.get("class_weight_power")),
        initial_model=str(keras_model.resolve()),
        parent={"name": card.name, "version": card.version},
    )
    for key, value in (overrides or {}).items():
        setattr(request, key, value)
    return start_run(request, runs_dir, extra_callbacks)


def _finish_run(
    request: TrainRequest,
    run_dir: Path,
    model: keras.Model,
    data: TrainingData,
    extra_callbacks: Sequence[keras.callbacks.Callback],
) -> RunResult:
    settings = FitSettings(
        epochs=request.epochs,
        optimizer=request.optimizer,
        learning_rate=request.learning_rate,
        early_stopping=request.early_stopping,
        patience=request.patience,
        restore_best=request.restore_best,
        reduce_lr_patience=request.reduce_lr_patience,
        ema_momentum=request.ema_momentum,
        verbose=request.verbose,
    )
    history = fit_in_run_dir(model, data, settings, run_dir, extra_callbacks)
    version_dir = export_model(
        model,
        model_dir=Path(request.model_dir),
        name=request.model,
        history=history,
        test=load_test_split(request),
        class_names=data.class_names,
        make_card=lambda version, evaluation, artifacts: build_card(
            request,
            model=model,
            data=data,
            history=history,
            version=version,
            evaluation=evaluation,
            artifacts=artifacts,
        ),
    )
    return RunResult(run_dir=run_dir, version_dir=version_dir, card=ModelCard.read(version_dir))


def _power_or_balanced(power: float | None) -> float:
    """The recorded class-weight power (0 is a valid one); balanced when none was recorded."""
    return 1.0 if power is None else power
