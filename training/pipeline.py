"""The training flow, top to bottom: data -> build -> fit -> calibrate -> export ->
evaluate -> card -> publish.

`start_run` begins a run in a new run folder, `resume_run` carries on an interrupted one
and `start_retrain` starts a run from an exported version on new data. All three end in
`_finish_run`. Nothing here names a model: what differs between models is the recipe's
(`training.recipes`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import keras
import numpy as np
from numpy.typing import ArrayLike, NDArray

from app.contract.classification import (
    CALIBRATION_BINS,
    EvaluationReport,
    brier_score,
    evaluate_probabilities,
    expected_calibration_error,
    reliability_bins,
)
from app.contract.decision import OperatingPoint
from app.contract.drift import prediction_profile
from app.contract.model_card import Calibration, CalibrationChange, CalibrationScores, ModelCard
from training.calibrate import apply_temperature, choose_threshold, fit_temperature
from training.card import build_card
from training.data import TrainingData
from training.evaluate import predict_with_saved_model
from training.export import ARTIFACTS, publish, staging_folder, write_serving_files
from training.fit import LAST_CHECKPOINT, compile_model, fit_in_run_dir
from training.plots import plot_confusion_matrix, plot_reliability_diagram, plot_training_history
from training.recipes import Recipe, TrainRequest, recipe_for

RUN_REQUEST = "run.json"


@dataclass(frozen=True)
class RunResult:
    """Where a finished run exported its model, and how that model scored on test."""

    run_dir: Path
    version_dir: Path
    card: ModelCard

    def summary(self) -> str:
        evaluation, training = self.card.evaluation, self.card.training
        assert evaluation is not None and training is not None  # a trained card has both
        accuracy = f"{evaluation.accuracy:.4f}" if evaluation.accuracy is not None else "n/a"
        return (
            f"exported {self.card.name} v{self.card.version} to {self.version_dir} | "
            f"test accuracy {accuracy} on {evaluation.count} images | "
            f"{training.epochs_run} epochs, {training.duration_seconds:.0f}s"
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
    recipe = recipe_for(request.model)
    keras.utils.set_random_seed(request.fit.seed)
    data = recipe.load_data(request)  # fail on bad data before creating anything
    run_dir = new_run_dir(runs_dir, request.model)
    _write_request(run_dir, request)
    print(f"run folder: {run_dir} (resume with: python -m training resume {run_dir})")
    return _finish_run(recipe, request, run_dir, data, extra_callbacks)


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
        request.fit = dataclasses.replace(request.fit, epochs=epochs)
        _write_request(run_dir, request)
    # A different seed than the first part, so the resumed epochs see fresh shuffles
    # and augmentations rather than replaying the first epochs' ones.
    keras.utils.set_random_seed(request.fit.seed + 1)
    recipe = recipe_for(request.model)
    return _finish_run(recipe, request, run_dir, recipe.load_data(request), extra_callbacks)


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
    card (the fit's, and the recipe's options among its hyperparameters), changed by
    `overrides` (fit settings such as epochs or learning_rate).
    """
    card = ModelCard.read(version_dir)
    trained = card.training
    if trained is None:
        raise FileNotFoundError(
            f"{version_dir} was imported, not trained here: it has no training record "
            "to retrain with (train a recipe, or import a retrained model again)"
        )
    recipe = recipe_for(card.name)
    keras_model = version_dir / card.artifacts.get("keras_model", ARTIFACTS["keras_model"])
    if not keras_model.is_file():
        raise FileNotFoundError(f"{version_dir} has no {keras_model.name} to retrain from")
    recorded = trained.hyperparameters
    options = recipe.options_from_card(card)
    fit = dataclasses.replace(
        recipe.fit_defaults,
        epochs=trained.epochs_requested,
        batch_size=trained.batch_size,
        optimizer=trained.optimizer,
        learning_rate=trained.learning_rate,
        seed=trained.seed,
        early_stopping=trained.early_stopping,
        ema_momentum=recorded.get("ema_momentum"),
    )
    request = TrainRequest(
        model=card.name,
        data=data,
        model_dir=str(model_dir if model_dir is not None else version_dir.parent.parent),
        fit=dataclasses.replace(fit, **(overrides or {})),  # type: ignore[arg-type]
        options=dataclasses.asdict(options),
        initial_model=str(keras_model.resolve()),
        parent={"name": card.name, "version": card.version},
    )
    return start_run(request, runs_dir, extra_callbacks)


def _write_request(run_dir: Path, request: TrainRequest) -> None:
    text = json.dumps(request.to_json(), indent=2)
    (run_dir / RUN_REQUEST).write_text(text, encoding="utf-8")


def _model_to_fit(recipe: Recipe, request: TrainRequest, run_dir: Path) -> keras.Model:
    """The run's last checkpoint (with its optimizer state) when resuming; else the
    model to start from, or a new one, compiled with the request's optimizer."""
    checkpoint = run_dir / LAST_CHECKPOINT
    if checkpoint.exists():
        return keras.models.load_model(checkpoint)
    if request.initial_model:
        model = keras.models.load_model(request.initial_model)
    else:
        model = recipe.build(recipe.options(request))
    fit = request.fit
    compile_model(model, fit.optimizer, fit.learning_rate, fit.ema_momentum)
    return model


def _finish_run(
    recipe: Recipe,
    request: TrainRequest,
    run_dir: Path,
    data: TrainingData,
    extra_callbacks: Sequence[keras.callbacks.Callback],
) -> RunResult:
    model = _model_to_fit(recipe, request, run_dir)
    history = fit_in_run_dir(model, data, request.fit, run_dir, extra_callbacks)
    calibrated = _calibrate(recipe, model, data)
    test = recipe.load_split(request.data_path, "test", recipe.options(request))
    with staging_folder(Path(request.model_dir) / recipe.name) as staging:
        artifacts = write_serving_files(
            model,
            staging,
            history=history,
            check_images=test.images,
            temperature=calibrated.temperature,
        )
        # The card's figures are those of the written SavedModel: what the service loads.
        served = predict_with_saved_model(staging, test.images)
        evaluation, evaluation_at_argmax = _evaluations(
            test.labels, served, data.class_names, calibrated
        )
        uncalibrated = model.predict(test.images, batch_size=256, verbose=0)
        calibration = calibrated.record(test.labels, uncalibrated, served)
        _plot(recipe.name, staging, history, evaluation, test.labels, uncalibrated, served)
        artifacts.update({role: ARTIFACTS[role] for role in PLOTS})
        card = build_card(
            recipe,
            request,
            model=model,
            data=data,
            history=history,
            evaluation=evaluation,
            evaluation_at_argmax=evaluation_at_argmax,
            operating_point=calibrated.operating_point,
            calibration=calibration,
            prediction_profile=prediction_profile(
                served, data.class_names, operating_point=calibrated.operating_point
            ),
            artifacts=artifacts,
        )
        version_dir = publish(staging, card)
    return RunResult(run_dir=run_dir, version_dir=version_dir, card=ModelCard.read(version_dir))


PLOTS = ("training_plot", "confusion_plot", "reliability_plot")


@dataclass(frozen=True)
class _Calibrated:
    """What the validation split decided after fitting: the temperature the exported model
    ends in and, for recipes with an operating goal, the decision threshold."""

    temperature: float
    operating_point: OperatingPoint | None
    validation_labels: NDArray[np.int64]
    validation_before: NDArray[np.float64]
    validation_after: NDArray[np.float64]

    def record(
        self,
        test_labels: NDArray[np.int64],
        test_before: NDArray[np.float32],
        test_after: NDArray[np.float32],
    ) -> Calibration:
        """The card's calibration record: ECE and Brier before and after, per split."""

        def scores(probabilities: ArrayLike, labels: NDArray[np.int64]) -> CalibrationScores:
            ece = expected_calibration_error(probabilities, labels)
            brier = brier_score(probabilities, labels)
            assert ece is not None and brier is not None  # both splits hold examples
            return CalibrationScores(ece=ece, brier=brier)

        return Calibration(
            temperature=self.temperature,
            fitted_on="validation",
            bins=CALIBRATION_BINS,
            splits={
                "validation": CalibrationChange(
                    before=scores(self.validation_before, self.validation_labels),
                    after=scores(self.validation_after, self.validation_labels),
                ),
                "test": CalibrationChange(
                    before=scores(test_before, test_labels), after=scores(test_after, test_labels)
                ),
            },
        )


def _calibrate(recipe: Recipe, model: keras.Model, data: TrainingData) -> _Calibrated:
    """Temperature scaling fitted on validation, then the operating point chosen on the
    calibrated validation probabilities (the ones the service will threshold)."""
    before = np.asarray(model.predict(data.validation, verbose=0), dtype=np.float64)
    labels = np.concatenate([np.asarray(batch_labels) for _, batch_labels in data.validation])
    temperature = fit_temperature(before, labels)
    after = apply_temperature(before, temperature)
    operating_point = None
    goal = recipe.operating_goal
    if goal is not None:
        positive = data.class_names.index(goal.positive_class)
        choice = choose_threshold(after, labels, positive, goal.rule)
        operating_point = choice.operating_point(data.class_names, chosen_on="validation")
    return _Calibrated(temperature, operating_point, labels.astype(np.int64), before, after)


def _evaluations(
    labels: NDArray[np.int64],
    served: NDArray[np.float32],
    class_names: list[str],
    calibrated: _Calibrated,
) -> tuple[EvaluationReport, EvaluationReport | None]:
    """The test evaluation as the service labels (by the operating point, if any), and
    with argmax labels when that differs."""
    point = calibrated.operating_point
    at_point = evaluate_probabilities(labels, served, class_names, point)
    return at_point, (evaluate_probabilities(labels, served, class_names) if point else None)


def _plot(
    name: str,
    staging: Path,
    history: dict[str, list[float]],
    evaluation: EvaluationReport,
    labels: NDArray[np.int64],
    uncalibrated: NDArray[np.float32],
    served: NDArray[np.float32],
) -> None:
    plot_training_history(history, staging / ARTIFACTS["training_plot"], title=name)
    plot_confusion_matrix(evaluation, staging / ARTIFACTS["confusion_plot"], title=name)
    plot_reliability_diagram(
        reliability_bins(uncalibrated, labels),
        reliability_bins(served, labels),
        staging / ARTIFACTS["reliability_plot"],
        title=f"{name}: test split, before and after temperature scaling",
    )
