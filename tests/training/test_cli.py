"""Each subcommand end to end on tiny synthetic data, through `main(argv)`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from app.contract.model_card import ModelCard
from tests.training.conftest import write_tiny_mnist
from training.__main__ import main
from training.cli import DEFAULTS, build_parser

FAST = ["--epochs", "1", "--batch-size", "8", "--verbose", "0"]


def train_mnist(data: Path, root: Path) -> Path:
    argv = ["train", "mnist-mlp", "--data", str(data), *FAST]
    argv += ["--model-dir", str(root / "models"), "--runs-dir", str(root / "runs")]
    assert main(argv) == 0
    return root / "models" / "mnist-mlp" / "1"


@pytest.fixture(scope="module")
def mnist_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_mnist(tmp_path_factory.mktemp("data") / "mnist.npz")


@pytest.fixture(scope="module")
def mnist_export(mnist_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One exported MNIST version shared by this module's tests (exports are slow)."""
    return train_mnist(mnist_data, tmp_path_factory.mktemp("export"))


def test_every_subcommand_documents_every_flag() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices  # type: ignore[union-attr]
    assert set(subparsers) == {"train", "resume", "retrain", "tune", "evaluate"}
    for name, subparser in subparsers.items():
        for action in subparser._actions:
            assert action.help, f"{name} {action.dest} has no help"


def test_help_exits_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    assert "--image-size" in capsys.readouterr().out


def test_train_mnist_exports_a_servable_version(mnist_export: Path) -> None:
    version_dir = mnist_export

    card = ModelCard.read(version_dir)
    assert card.name == "mnist-mlp" and card.version == 1
    assert card.class_names == [str(d) for d in range(10)]
    assert card.preprocessing.kind == "mnist-digit"
    assert (card.input.height, card.input.width, card.input.channels) == (28, 28, 1)
    assert card.evaluation.count == 30
    assert card.training.data.counts["test"]["0"] == 3
    assert set(card.library_versions) == {"tensorflow", "keras", "numpy", "python"}
    for artifact in card.artifacts.values():
        assert (version_dir / artifact).is_file()
    assert (version_dir / "saved_model.pb").is_file() and (version_dir / "variables").is_dir()
    assert not [p for p in version_dir.parent.iterdir() if p.name.startswith(".")]

    loaded = tf.saved_model.load(str(version_dir))
    assert list(loaded.signatures) == ["serving_default"]
    serve = loaded.signatures["serving_default"]
    assert set(serve.structured_outputs) == {"probabilities"}
    probabilities = serve(pixels=tf.fill([2, 28, 28, 1], 255.0))["probabilities"].numpy()
    assert probabilities.shape == (2, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_train_pneumonia_records_imbalance_and_limitations(tiny_xray: Path, tmp_path: Path) -> None:
    argv = ["train", "pneumonia-cnn", "--data", str(tiny_xray), *FAST, "--image-size", "64", "72"]
    argv += ["--model-dir", str(tmp_path / "models"), "--runs-dir", str(tmp_path / "runs")]
    assert main(argv) == 0
    version_dir = tmp_path / "models" / "pneumonia-cnn" / "1"
    card = ModelCard.read(version_dir)
    assert card.class_names == ["NORMAL", "PNEUMONIA"]
    assert (card.input.height, card.input.width, card.input.channels) == (64, 72, 1)
    assert card.preprocessing.kind == "resize"
    assert card.training.class_weights is not None
    assert card.training.class_weights["NORMAL"] > card.training.class_weights["PNEUMONIA"]
    assert card.limitations and "not a diagnostic tool" in card.limitations
    assert "Kermany" in card.limitations and "CC BY 4.0" in card.limitations
    assert card.evaluation.roc_auc is not None
    assert card.training.data.counts["test"] == {"NORMAL": 4, "PNEUMONIA": 5}
    defaults = DEFAULTS["pneumonia-cnn"]
    hyperparameters = card.training.hyperparameters
    assert hyperparameters["ema_momentum"] == (defaults["ema_momentum"] or None)
    assert hyperparameters["dropout"] == defaults["dropout"]
    assert hyperparameters["patience"] == defaults["patience"]
    power = hyperparameters["class_weight_power"]
    assert power == defaults["class_weight_power"]
    train_counts = card.training.data.counts["train"]
    for name, count in train_counts.items():
        balanced = sum(train_counts.values()) / (2 * count)
        assert card.training.class_weights[name] == pytest.approx(balanced**power)
    serve = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    assert serve(pixels=tf.zeros([3, 64, 72, 1]))["probabilities"].shape == (3, 2)


def test_evaluate_reproduces_the_card(
    mnist_export: Path, mnist_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    version_dir = mnist_export
    output = tmp_path / "report.json"
    argv = ["evaluate", str(version_dir), "--data", str(mnist_data), "--output", str(output)]
    assert main(argv) == 0
    report = json.loads(output.read_text())
    card = ModelCard.read(version_dir)
    assert report["confusion_matrix"] == card.evaluation.confusion_matrix
    assert report["accuracy"] == pytest.approx(card.evaluation.accuracy)
    assert "accuracy" in capsys.readouterr().out


def test_retrain_exports_the_next_version_with_its_parent(
    mnist_export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    version_dir = mnist_export
    more_data = write_tiny_mnist(tmp_path / "more.npz", train=60, seed=5)
    argv = ["retrain", str(version_dir), "--data", str(more_data), "--epochs", "1"]
    argv += ["--runs-dir", str(tmp_path / "runs"), "--verbose", "0"]
    assert main(argv) == 0
    card = ModelCard.read(version_dir.parent / "2")
    assert card.training.parent is not None
    assert (card.training.parent.name, card.training.parent.version) == ("mnist-mlp", 1)
    assert card.training.data.fingerprint is not None
    assert sum(card.training.data.counts["train"].values()) == 42
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert str(version_dir.parent / "2") in summary and "test accuracy" in summary


def test_bad_data_gives_an_error_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "pneumonia-cnn", "--data", str(tmp_path / "missing"), *FAST]
    argv += ["--model-dir", str(tmp_path / "models"), "--runs-dir", str(tmp_path / "runs")]
    assert main(argv) == 2
    assert "expected" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
