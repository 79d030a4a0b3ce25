"""Grid search over the MNIST MLP's hidden units, dropout and optimizer.

As in the chapter's HParams listing, each trial is one hidden layer of `units` relu
neurons with `dropout`, trained for a few epochs and logged with
`tensorboard.plugins.hparams.api`, so `tensorboard --logdir <log-dir>` shows the HParams
dashboard. Trials are ranked by validation accuracy: the test split stays untouched for
the final model's evaluation.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

from training.data import load_mnist_training
from training.fit import compile_model
from training.recipes.mnist_mlp import build_mnist_mlp

METRIC_ACCURACY = "val_accuracy"
METRIC_LOSS = "val_loss"


@dataclass(frozen=True)
class TrialResult:
    trial: str
    units: int
    dropout: float
    optimizer: str
    val_accuracy: float
    val_loss: float


def tune_mnist_mlp(
    data_path: Path | None,
    log_dir: Path,
    *,
    units: Sequence[int] = (16, 32),
    dropouts: Sequence[float] = (0.1, 0.2),
    optimizers: Sequence[str] = ("adam", "sgd"),
    epochs: int = 1,
    batch_size: int = 32,
    validation_split: float = 0.3,
    seed: int = 42,
    verbose: int = 0,
) -> list[TrialResult]:
    """Run every combination; write TensorBoard HParams logs and `results.csv`/`.json`.

    Returns the trials sorted best first (highest validation accuracy).
    """
    hp_units = hp.HParam("num_units", hp.Discrete(sorted(set(units))))
    hp_dropout = hp.HParam("dropout", hp.Discrete(sorted(set(dropouts))))
    hp_optimizer = hp.HParam("optimizer", hp.Discrete(sorted(set(optimizers))))
    log_dir.mkdir(parents=True, exist_ok=True)
    with tf.summary.create_file_writer(str(log_dir)).as_default():
        hp.hparams_config(
            hparams=[hp_units, hp_dropout, hp_optimizer],
            metrics=[
                hp.Metric(METRIC_ACCURACY, display_name="Validation accuracy"),
                hp.Metric(METRIC_LOSS, display_name="Validation loss"),
            ],
        )
    data = load_mnist_training(
        data_path, validation_split=validation_split, batch_size=batch_size, seed=seed
    )
    results = []
    grid = itertools.product(units, dropouts, optimizers)
    for index, (unit_count, dropout, optimizer) in enumerate(grid):
        name = f"trial-{index:03d}"
        hparams = {hp_units: unit_count, hp_dropout: dropout, hp_optimizer: optimizer}
        print(f"{name}: {json.dumps({h.name: v for h, v in hparams.items()})}")
        keras.utils.set_random_seed(seed)
        model = build_mnist_mlp(hidden_units=(unit_count,), dropout=dropout)
        compile_model(model, optimizer, learning_rate=_default_learning_rate(optimizer))
        model.fit(
            data.train,
            validation_data=data.validation,
            epochs=epochs,
            shuffle=False,
            verbose=verbose,
        )
        val_loss, val_accuracy = model.evaluate(data.validation, verbose=0)
        with tf.summary.create_file_writer(str(log_dir / name)).as_default():
            hp.hparams(hparams, trial_id=name)
            tf.summary.scalar(METRIC_ACCURACY, val_accuracy, step=epochs)
            tf.summary.scalar(METRIC_LOSS, val_loss, step=epochs)
        results.append(
            TrialResult(name, unit_count, dropout, optimizer, float(val_accuracy), float(val_loss))
        )
        print(f"{name}: val_accuracy {val_accuracy:.4f}, val_loss {val_loss:.4f}")
    ranked = sorted(results, key=lambda result: result.val_accuracy, reverse=True)
    write_results(ranked, log_dir)
    return ranked


def _default_learning_rate(optimizer: str) -> float:
    """Each optimizer's own Keras default, as the chapter used them by name."""
    return float(keras.optimizers.get(optimizer).learning_rate.numpy())


def write_results(results: Sequence[TrialResult], log_dir: Path) -> None:
    rows = [asdict(result) for result in results]
    with (log_dir / "results.csv").open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]) if rows else [])
        writer.writeheader()
        writer.writerows(rows)
    (log_dir / "results.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
