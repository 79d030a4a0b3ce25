"""Compile a model and fit it inside a run folder that survives interruption.

A run folder holds:

    last.keras     the model (with optimizer state) after the last completed epoch
    best.keras     the model at the epoch with the lowest validation loss
    history.csv    one row per completed epoch, appended across resumed runs

so `fit_in_run_dir` called again on the same folder carries on from the last completed
epoch, with early stopping and the best checkpoint picking up where they left off.
"""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from training.data import TrainingData

LAST_CHECKPOINT = "last.keras"
BEST_CHECKPOINT = "best.keras"
HISTORY_CSV = "history.csv"
MONITOR = "val_loss"

History = dict[str, list[float]]


@dataclass(frozen=True)
class FitSettings:
    """How long and how to fit; what the CLI's training flags become.

    No defaults here: each recipe states its own (`Recipe.fit_defaults`).
    """

    epochs: int
    batch_size: int
    optimizer: str
    learning_rate: float
    seed: int
    early_stopping: bool
    patience: int
    restore_best: bool
    reduce_lr_patience: int | None  # halve the rate after this many flat epochs
    ema_momentum: float | None  # validate, checkpoint and export weight averages
    # Keras progress output: 0 silent, 1 progress bar, 2 one line per epoch, None auto:
    # `progress_verbosity` picks 1 or 2 when the fit starts.
    verbose: int | None = None


def progress_verbosity(verbose: int | None) -> int:
    """Keras `verbose` for `fit`: `verbose` itself, or for None (auto) a progress bar (1)
    when stdout is a terminal and one line per epoch (2) when it is a file or a pipe, where
    a bar would write thousands of carriage-return updates per epoch."""
    if verbose is not None:
        return verbose
    isatty = getattr(sys.stdout, "isatty", None)
    return 1 if isatty is not None and isatty() else 2


def make_optimizer(
    name: str, learning_rate: float, ema_momentum: float | None = None
) -> keras.optimizers.Optimizer:
    """A Keras optimizer by name (`adam`, `sgd`, `rmsprop`, ...) with a learning rate.

    With `ema_momentum`, the optimizer also keeps an exponential moving average of the
    weights (`use_ema=True`), which `fit_in_run_dir` validates, checkpoints and exports.
    """
    config: dict[str, Any] = {}
    if ema_momentum is not None:
        config = {"use_ema": True, "ema_momentum": ema_momentum}
    optimizer = keras.optimizers.get({"class_name": name, "config": config})
    optimizer.learning_rate = learning_rate
    return optimizer


def compile_model(
    model: keras.Model, optimizer: str, learning_rate: float, ema_momentum: float | None = None
) -> None:
    model.compile(
        optimizer=make_optimizer(optimizer, learning_rate, ema_momentum),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def read_history(run_dir: Path) -> History:
    """Per-epoch metrics logged so far in a run folder (empty when none)."""
    path = run_dir / HISTORY_CSV
    if not path.exists():
        return {}
    with path.open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    history: History = {}
    for row in rows:
        for key, value in row.items():
            if key != "epoch":
                history.setdefault(key, []).append(float(value))
    return history


def completed_epochs(history: History) -> int:
    return len(next(iter(history.values()), []))


class _EpochTimer(keras.callbacks.Callback):
    """Adds `epoch_seconds` to each epoch's logs, so the CSV records training time."""

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._started


class _ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Early stopping that counts the epochs of an interrupted run as if never stopped."""

    def __init__(self, previous_losses: Sequence[float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._previous_losses = list(previous_losses)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        if self._previous_losses:
            best_epoch = min(
                range(len(self._previous_losses)), key=self._previous_losses.__getitem__
            )
            self.best = self._previous_losses[best_epoch]
            self.best_epoch = best_epoch
            self.wait = len(self._previous_losses) - 1 - best_epoch


class _SwapEMA(keras.callbacks.SwapEMAWeights):
    """Validation runs on the optimizer's weight averages (EMA) instead of the raw weights.

    Keras swaps the averages in only at the very end of `fit`
    (`optimizer.finalize_variable_values`), so without this callback every per-epoch
    `val_loss` (early stopping, the best checkpoint, the learning-rate schedule) would
    judge the raw, noisier weights, and a restored best epoch would hold raw weights.
    """

    _ema_weights_in_model: bool  # set by SwapEMAWeights.__init__

    def swap_at_epoch_end(self, *, ema_in_model: bool) -> None:
        if self._ema_weights_in_model != ema_in_model:
            self._swap_variables()
            self._ema_weights_in_model = ema_in_model


class _EMAAtEpochEnd(keras.callbacks.Callback):
    """Put the EMA weights in the model (`ema_in_model=True`) or take them back out.

    `fit_in_run_dir` places one of each around the epoch-end callbacks that must see the
    EMA weights (best checkpoint, early stopping, ...), so training itself always goes on
    from the raw weights, and `last.keras` (saved before) holds the exact training state
    for `resume`: raw weights plus the optimizer's averages.
    """

    def __init__(self, swap: _SwapEMA, *, ema_in_model: bool) -> None:
        super().__init__()
        self._swap = swap
        self._ema_in_model = ema_in_model

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._swap.swap_at_epoch_end(ema_in_model=self._ema_in_model)


def fit_in_run_dir(
    model: keras.Model,
    data: TrainingData,
    settings: FitSettings,
    run_dir: Path,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> History:
    """Fit until `settings.epochs` epochs have completed in `run_dir` (or early stopping).

    Returns the full history of the run, including epochs from before a resume. With
    `restore_best`, the model ends with the weights of its best validation epoch.

    With an EMA optimizer (`compile_model(..., ema_momentum=...)`), the validation
    metrics, `best.keras` and the weights the model ends with are the weight averages;
    `last.keras` keeps the raw weights (and the averages in its optimizer state) so a
    resumed run carries on exactly.
    """
    previous = read_history(run_dir)
    previous_losses = previous.get(MONITOR, [])
    ema_swap = _SwapEMA() if getattr(model.optimizer, "use_ema", False) else None
    callbacks: list[keras.callbacks.Callback] = [
        _EpochTimer(),
        keras.callbacks.ModelCheckpoint(run_dir / LAST_CHECKPOINT),
    ]
    if ema_swap is not None:
        callbacks += [ema_swap, _EMAAtEpochEnd(ema_swap, ema_in_model=True)]
    callbacks += [
        keras.callbacks.ModelCheckpoint(
            run_dir / BEST_CHECKPOINT,
            monitor=MONITOR,
            save_best_only=True,
            initial_value_threshold=min(previous_losses) if previous_losses else None,
        ),
        keras.callbacks.CSVLogger(str(run_dir / HISTORY_CSV), append=True),
    ]
    if settings.early_stopping:
        callbacks.append(
            _ResumableEarlyStopping(
                previous_losses, monitor=MONITOR, patience=settings.patience, verbose=1
            )
        )
    if settings.reduce_lr_patience:
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor=MONITOR, factor=0.5, patience=settings.reduce_lr_patience, verbose=1
            )
        )
    if ema_swap is not None:
        # Raw weights back before the next epoch trains; `fit` then ends by copying the
        # averages into the model (`optimizer.finalize_variable_values`).
        callbacks.append(_EMAAtEpochEnd(ema_swap, ema_in_model=False))
    callbacks.extend(extra_callbacks)
    initial_epoch = completed_epochs(previous)
    if initial_epoch < settings.epochs and not _stopped_early(previous_losses, settings):
        model.fit(
            data.train,
            validation_data=data.validation,
            epochs=settings.epochs,
            initial_epoch=initial_epoch,
            class_weight=data.class_weights,
            shuffle=False,  # the tf.data pipeline shuffles with its own seed
            callbacks=callbacks,
            verbose=progress_verbosity(settings.verbose),
        )
    if settings.restore_best and (run_dir / BEST_CHECKPOINT).exists():
        model.load_weights(run_dir / BEST_CHECKPOINT)
    return read_history(run_dir)


def _stopped_early(previous_losses: Sequence[float], settings: FitSettings) -> bool:
    """Whether an earlier part of the run already ran out of patience."""
    if not settings.early_stopping or not previous_losses:
        return False
    best = min(range(len(previous_losses)), key=previous_losses.__getitem__)
    return len(previous_losses) - 1 - best >= settings.patience
