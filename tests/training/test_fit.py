"""Fitting in a run folder: checkpoints every epoch, and resume carries on."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from app.contract.model_card import ModelCard
from training.__main__ import main
from training.data import load_mnist_training
from training.fit import (
    BEST_CHECKPOINT,
    HISTORY_CSV,
    LAST_CHECKPOINT,
    compile_model,
    fit_in_run_dir,
    read_history,
)
from training.pipeline import RUN_REQUEST, start_run
from training.recipes import RECIPES, TrainRequest
from training.recipes.mnist_mlp import build_mnist_mlp


class Interrupt(keras.callbacks.Callback):
    """Stops the process (as Ctrl-C would) after a given number of epochs."""

    def __init__(self, after_epochs: int) -> None:
        super().__init__()
        self.after_epochs = after_epochs

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if epoch + 1 >= self.after_epochs:
            raise KeyboardInterrupt


MLP = RECIPES["mnist-mlp"]
MLP_DEFAULTS = MLP.fit_defaults


def mnist_request(data: Path, tmp_path: Path, epochs: int) -> TrainRequest:
    return TrainRequest(
        model=MLP.name,
        data=str(data),
        model_dir=str(tmp_path / "models"),
        fit=dataclasses.replace(
            MLP_DEFAULTS, epochs=epochs, batch_size=8, early_stopping=False, verbose=0
        ),
        options=dataclasses.asdict(MLP.Options()),
    )


def test_resume_continues_an_interrupted_run(tiny_mnist: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    with pytest.raises(KeyboardInterrupt):
        start_run(mnist_request(tiny_mnist, tmp_path, epochs=2), runs, [Interrupt(1)])
    (run_dir,) = runs.iterdir()
    assert (run_dir / LAST_CHECKPOINT).is_file() and (run_dir / BEST_CHECKPOINT).is_file()
    first_part = read_history(run_dir)
    assert len(first_part["loss"]) == 1
    assert not list((tmp_path / "models").glob("mnist-mlp/*"))  # nothing exported yet

    assert main(["resume", str(run_dir), "--epochs", "3"]) == 0

    history = read_history(run_dir)
    assert len(history["loss"]) == 3
    assert history["loss"][0] == first_part["loss"][0]
    assert (run_dir / HISTORY_CSV).read_text().splitlines()[0].startswith("epoch,")
    assert json.loads((run_dir / RUN_REQUEST).read_text())["fit"]["epochs"] == 3
    version_dir = tmp_path / "models" / "mnist-mlp" / "1"
    card = ModelCard.read(version_dir)
    assert card.training.epochs_run == 3
    exported = json.loads((version_dir / "history.json").read_text())
    assert exported["loss"] == history["loss"]


def test_resume_of_a_folder_that_is_not_a_run_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["resume", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_early_stopping_stops_and_restores_the_best_epoch(tiny_mnist: Path, tmp_path: Path) -> None:
    data = load_mnist_training(tiny_mnist, validation_split=0.3, batch_size=8, seed=0)
    model = build_mnist_mlp()
    compile_model(model, "adam", 0.05)  # random labels: validation loss soon rises
    settings = dataclasses.replace(
        MLP_DEFAULTS, epochs=30, learning_rate=0.05, patience=1, reduce_lr_patience=None, verbose=0
    )
    history = fit_in_run_dir(model, data, settings, tmp_path)
    assert len(history["loss"]) < 30
    best = keras.models.load_model(tmp_path / BEST_CHECKPOINT)
    for restored, saved in zip(model.get_weights(), best.get_weights(), strict=True):
        np.testing.assert_array_equal(restored, saved)


def test_ema_weights_are_validated_checkpointed_and_kept(tiny_mnist: Path, tmp_path: Path) -> None:
    """With `use_ema`, every val_loss, best.keras and the final model are the averages;
    last.keras keeps the raw weights with the averages in its optimizer (for resume)."""
    data = load_mnist_training(tiny_mnist, validation_split=0.3, batch_size=8, seed=0)
    keras.utils.set_random_seed(0)
    model = build_mnist_mlp()
    compile_model(model, "adam", 0.01, ema_momentum=0.9)
    settings = dataclasses.replace(
        MLP_DEFAULTS, epochs=3, early_stopping=False, restore_best=False, verbose=0
    )
    history = fit_in_run_dir(model, data, settings, tmp_path)

    def val_loss(m: keras.Model) -> float:
        return float(m.evaluate(data.validation, verbose=0, return_dict=True)["loss"])

    assert val_loss(model) == pytest.approx(history["val_loss"][-1], rel=1e-5)
    best = keras.models.load_model(tmp_path / BEST_CHECKPOINT)
    assert val_loss(best) == pytest.approx(min(history["val_loss"]), rel=1e-5)
    last = keras.models.load_model(tmp_path / LAST_CHECKPOINT)
    assert last.optimizer.use_ema
    averages = [v.numpy() for v in last.optimizer._model_variables_moving_average]
    for average, final in zip(averages, model.get_weights(), strict=True):
        np.testing.assert_allclose(average, final, rtol=1e-6, atol=1e-7)
    pairs = zip(last.get_weights(), model.get_weights(), strict=True)
    raw_differs = any(not np.allclose(raw, final) for raw, final in pairs)
    assert raw_differs, "last.keras should hold the raw (not averaged) weights"
