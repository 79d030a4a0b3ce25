"""Each subcommand end to end on tiny synthetic data, through `main(argv)`."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf

from app.contract.model_card import ModelCard
from tests.app.tiny_models import mark_as_imported
from tests.training.conftest import write_tiny_mnist, write_tiny_xray
from training.__main__ import main
from training.calibrate import apply_temperature
from training.cli import build_parser
from training.data import (
    DataError,
    file_fingerprint,
    load_mnist_training,
    load_xray_split_arrays,
)
from training.fit import compile_model, fit_in_run_dir
from training.recipes import RECIPES, TrainRequest
from training.recipes.mnist_mlp import build_mnist_mlp

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
    assert set(subparsers) == {"train", "resume", "retrain", "tune", "evaluate", "import"}
    models = next(a for a in subparsers["train"]._actions if a.dest == "model").choices  # type: ignore[union-attr]
    assert set(models) == set(RECIPES)
    every = {**subparsers, **{f"train {name}": parser for name, parser in models.items()}}
    for name, subparser in every.items():
        for action in subparser._actions:
            assert action.help, f"{name} {action.dest} has no help"


def test_help_exits_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "pneumonia-cnn", "--help"])
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

    # Calibrated inside the SavedModel: the served outputs are the trained (uncalibrated)
    # model's, scaled by the card's temperature; argmax decides, nothing else changes.
    calibration = card.calibration
    assert calibration is not None and set(calibration.splits) == {"validation", "test"}
    pixels = np.random.default_rng(3).uniform(0, 255, (5, 28, 28, 1)).astype(np.float32)
    raw = keras.models.load_model(version_dir / "model.keras").predict(pixels, verbose=0)
    served = serve(pixels=tf.constant(pixels))["probabilities"].numpy()
    np.testing.assert_allclose(served, apply_temperature(raw, calibration.temperature), atol=2e-6)
    assert card.operating_point is None and card.evaluation_at_argmax is None
    assert card.evaluation.decision == "argmax" and card.evaluation.ece is not None
    assert card.prediction_profile is not None and card.prediction_profile.count == 30
    assert card.artifacts["reliability_plot"] == "reliability.png"


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
    recipe = RECIPES["pneumonia-cnn"]
    hyperparameters = card.training.hyperparameters
    assert hyperparameters["ema_momentum"] == recipe.fit_defaults.ema_momentum
    assert hyperparameters["dropout"] == recipe.default_option("dropout")
    assert hyperparameters["patience"] == recipe.fit_defaults.patience
    power = hyperparameters["class_weight_power"]
    assert power == recipe.default_option("class_weight_power")
    train_counts = card.training.data.counts["train"]
    for name, count in train_counts.items():
        balanced = sum(train_counts.values()) / (2 * count)
        assert card.training.class_weights[name] == pytest.approx(balanced**power)
    serve = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    assert serve(pixels=tf.zeros([3, 64, 72, 1]))["probabilities"].shape == (3, 2)

    # The threshold was chosen on val/ and the card's test figures use it, as serving does.
    point = card.operating_point
    assert point is not None and point.positive_class == "PNEUMONIA"
    assert point.chosen_on == "validation"
    assert point.goal == "highest balanced accuracy (PNEUMONIA positive) on validation"
    test = load_xray_split_arrays(tiny_xray, "test", image_size=(64, 72), channels=1)
    served = serve(pixels=tf.constant(test.images))["probabilities"].numpy()
    said = (served[:, 1].astype(np.float64) >= point.threshold).astype(int)
    expected = np.zeros((2, 2), int)
    np.add.at(expected, (test.labels, said), 1)
    assert card.evaluation.confusion_matrix == expected.tolist()
    assert card.evaluation.decision == f"P(PNEUMONIA) >= {point.threshold:.6g}"
    at_argmax = card.evaluation_at_argmax
    assert at_argmax is not None and at_argmax.decision == "argmax"
    argmax_matrix = np.zeros((2, 2), int)
    np.add.at(argmax_matrix, (test.labels, served.argmax(axis=1)), 1)
    assert at_argmax.confusion_matrix == argmax_matrix.tolist()


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
    printed = capsys.readouterr()
    assert json.loads(printed.out) == report  # stdout is the report alone (pipe it to jq)
    assert "accuracy" in printed.err


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
    assert card.training.data.fingerprint == file_fingerprint(more_data)
    assert str(tmp_path) not in card.model_dump_json()  # no machine path in the card
    assert sum(card.training.data.counts["train"].values()) == 42
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert str(version_dir.parent / "2") in summary and "test accuracy" in summary


@pytest.mark.parametrize("command", ["retrain", "evaluate"])
def test_an_imported_version_is_not_retrained_or_evaluated_on_project_data(
    mnist_export: Path,
    mnist_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:
    version_dir = tmp_path / "mnist-mlp" / "1"
    shutil.copytree(mnist_export, version_dir)
    mark_as_imported(version_dir)
    code, err = run_cli([command, str(version_dir), "--data", str(mnist_data)], capsys)
    assert code == 2
    assert err.startswith(f"error: {version_dir} was imported")
    assert "--evaluate-on DIR" in err if command == "evaluate" else "import the result" in err
    assert [p.name for p in version_dir.parent.iterdir()] == ["1"]


def test_bad_data_gives_an_error_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "pneumonia-cnn", "--data", str(tmp_path / "missing"), *FAST]
    argv += ["--model-dir", str(tmp_path / "models"), "--runs-dir", str(tmp_path / "runs")]
    assert main(argv) == 2
    assert "expected" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


# --- User mistakes: a message on stderr and exit status 2, never a traceback ----------


@pytest.fixture(autouse=True)
def no_mnist_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never reach the network: the Keras MNIST download fails as it does offline."""

    def offline() -> None:
        raise Exception("URL fetch failure on mnist.npz: [Errno -2] Name or service not known")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[Any, str]:
    """`main(argv)`'s exit status (argparse's SystemExit included) and its stderr."""
    try:
        code: Any = main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    return code, capsys.readouterr().err


def output_dirs(root: Path) -> list[str]:
    return ["--model-dir", str(root / "models"), "--runs-dir", str(root / "runs")]


def test_pneumonia_without_data_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(["train", "pneumonia-cnn", *FAST, *output_dirs(tmp_path)], capsys)
    assert code == 2
    assert err.startswith("error: pneumonia-cnn needs --data: a chest X-ray folder")
    assert not (tmp_path / "runs").exists()
    recipe = RECIPES["pneumonia-cnn"]
    request = TrainRequest(
        model=recipe.name, data=None, model_dir="models", fit=recipe.fit_defaults, options={}
    )
    with pytest.raises(DataError, match="pneumonia-cnn needs --data"):
        recipe.load_data(request)


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_failed_mnist_download_asks_for_data(
    command: str, mnist_export: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if command == "train":
        argv = ["train", "mnist-mlp", *FAST, *output_dirs(tmp_path)]
    else:
        argv = ["evaluate", str(mnist_export)]
    code, err = run_cli(argv, capsys)
    assert code == 2
    assert err == (
        "error: could not download MNIST (URL fetch failure on mnist.npz: [Errno -2] Name or "
        "service not known); pass --data path/to/mnist.npz\n"
    )
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("argv", "module"),
    [
        (["train", "mnist-mlp", "--data", "mnist.npz"], "matplotlib"),
        (["retrain", "models/mnist-mlp/1", "--data", "mnist.npz"], "matplotlib"),
        (["resume", "runs/mnist-mlp-20261127-235400-123456"], "matplotlib"),
        (["tune", "--data", "mnist.npz"], "tensorboard"),
    ],
)
def test_missing_training_extra_is_reported_up_front(
    argv: list[str],
    module: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    write_tiny_mnist(tmp_path / "mnist.npz")
    monkeypatch.setitem(sys.modules, module, None)  # import fails, find_spec finds nothing
    code, err = run_cli([*argv, "--epochs", "1"], capsys)
    assert code == 2
    assert err == (
        f"error: the training extra is not installed (no module {module}): run "
        "`.venv/bin/pip install -e '.[training]'` (or `make test`, which installs it)\n"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["mnist.npz"]  # nothing else was made


def test_evaluate_needs_no_training_extra(
    mnist_export: Path,
    mnist_data: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for module in ("matplotlib", "tensorboard"):
        monkeypatch.setitem(sys.modules, module, None)
    assert main(["evaluate", str(mnist_export), "--data", str(mnist_data)]) == 0
    assert "accuracy" in capsys.readouterr().out


def test_verbose_defaults_to_auto_and_keeps_0_1_2() -> None:
    parser = build_parser()
    assert parser.parse_args(["train", "mnist-mlp"]).verbose is None
    assert parser.parse_args(["retrain", "models/x/1", "--data", "d.npz"]).verbose is None
    assert parser.parse_args(["train", "mnist-mlp", "--verbose", "auto"]).verbose is None
    for level in (0, 1, 2):
        assert parser.parse_args(["train", "mnist-mlp", "--verbose", str(level)]).verbose == level
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "mnist-mlp", "--verbose", "3"])


def test_auto_verbose_is_recorded_as_auto_not_resolved(
    tiny_mnist: Path,
    mnist_export: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """run.json keeps `verbose: null` (auto), so a resumed run picks bars or lines anew."""
    import training.pipeline

    seen: dict[str, Any] = {}

    def fake_start_run(request: TrainRequest, runs_dir: Path) -> Any:
        seen["request"] = request
        raise DataError("stop here")

    def fake_start_retrain(*args: Any, overrides: dict[str, Any], **kwargs: Any) -> Any:
        seen["overrides"] = overrides
        raise DataError("stop here")

    monkeypatch.setattr(training.pipeline, "start_run", fake_start_run)
    monkeypatch.setattr(training.pipeline, "start_retrain", fake_start_retrain)
    assert main(["train", "mnist-mlp", "--data", str(tiny_mnist), *output_dirs(tmp_path)]) == 2
    request = seen["request"]
    assert request.fit.verbose is None
    assert TrainRequest.from_json(json.loads(json.dumps(request.to_json()))).fit.verbose is None
    argv = ["retrain", str(mnist_export), "--data", str(tiny_mnist), *output_dirs(tmp_path)[2:]]
    assert main(argv) == 2
    assert seen["overrides"]["verbose"] is None
    capsys.readouterr()


class _Stdout(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.mark.parametrize(
    ("verbose", "tty", "expected"),
    [(None, True, 1), (None, False, 2), (0, True, 0), (1, False, 1), (2, True, 2)],
)
def test_auto_progress_is_a_bar_on_a_terminal_and_lines_in_a_file(
    verbose: int | None,
    tty: bool,
    expected: int,
    tiny_mnist: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, Any] = {}

    def fake_fit(self: keras.Model, *args: Any, **kwargs: Any) -> None:
        seen["verbose"] = kwargs["verbose"]

    data = load_mnist_training(tiny_mnist, validation_split=0.3, batch_size=8, seed=0)
    model = build_mnist_mlp(hidden_units=(4,))
    compile_model(model, "adam", 1e-3)
    monkeypatch.setattr(keras.Model, "fit", fake_fit)
    monkeypatch.setattr(sys, "stdout", _Stdout(tty))
    settings = dataclasses.replace(RECIPES["mnist-mlp"].fit_defaults, epochs=1, verbose=verbose)
    fit_in_run_dir(model, data, settings, tmp_path)
    assert seen["verbose"] == expected


def _folder_with_npz(root: Path) -> Path:
    folder = root / "data"
    folder.mkdir()
    write_tiny_mnist(folder / "mnist.npz")
    return folder


def _xray(root: Path, drop: str | None = None, empty: str | None = None) -> Path:
    folder = write_tiny_xray(root / "chest_xray", per_class=1)
    if drop:
        shutil.rmtree(folder / drop)
    if empty:
        for image in (folder / empty).iterdir():
            image.unlink()
    return folder


def _card_copy(root: Path, version_dir: Path, edit: Callable[[dict[str, Any]], Any]) -> Path:
    """A copy of the version folder `version_dir` with its card changed by `edit`."""
    copy = shutil.copytree(version_dir, root / "copy" / "1")
    card = json.loads((copy / "model_card.json").read_text())
    edit(card)
    (copy / "model_card.json").write_text(json.dumps(card))
    return copy


def _without_saved_model(root: Path, version_dir: Path) -> Path:
    copy = _card_copy(root, version_dir, lambda card: None)
    (copy / "saved_model.pb").unlink()
    return copy


def _junk_card(root: Path) -> Path:
    version_dir = root / "junk" / "1"
    version_dir.mkdir(parents=True)
    (version_dir / "model_card.json").write_text("{not json")
    return version_dir


def _run_folder(root: Path, text: str) -> Path:
    run_dir = root / "runs" / "mnist-mlp-20261127-235400-123456"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(text)
    return run_dir


def _mnist(root: Path) -> str:
    return str(write_tiny_mnist(root / "mnist.npz"))


Argv = Callable[[Path, Path], list[str]]
MNIST = ["train", "mnist-mlp"]
XRAY = ["train", "pneumonia-cnn"]
MISTAKES: list[tuple[str, Argv, str]] = [
    # train: --data
    ("mnist-data-missing", lambda t, v: [*MNIST, "--data", str(t / "no.npz")], "does not exist"),
    (
        "mnist-data-folder-holding-the-npz",
        lambda t, v: [*MNIST, "--data", str(_folder_with_npz(t))],
        "data is a folder; expected an .npz file; did you mean --data ",
    ),
    (
        "mnist-data-xray-folder",
        lambda t, v: [*MNIST, "--data", str(_xray(t))],
        "looks like a chest X-ray folder",
    ),
    ("xray-data-missing", lambda t, v: [*XRAY, "--data", str(t / "none")], "does not exist"),
    ("xray-data-npz", lambda t, v: [*XRAY, "--data", _mnist(t)], "is a file, not a folder"),
    (
        "xray-without-val",
        lambda t, v: [*XRAY, "--data", str(_xray(t, drop="val"))],
        "found no val/",
    ),
    (
        "xray-empty-class-folder",
        lambda t, v: [*XRAY, "--data", str(_xray(t, empty="train/NORMAL"))],
        "train/NORMAL/ holds no .jpeg/.jpg/.png images",
    ),
    # train: numbers and names
    (
        "image-size-zero",
        lambda t, v: [*XRAY, "--data", str(_xray(t)), "--image-size", "0", "0"],
        "argument --image-size: must be a positive integer, got 0",
    ),
    (
        "image-size-too-small",
        lambda t, v: [*XRAY, "--data", str(_xray(t)), "--image-size", "16", "64"],
        "--image-size 16 64 is too small for pneumonia-cnn: it needs at least 53x53",
    ),
    (
        "epochs-negative",
        lambda t, v: [*MNIST, "--data", _mnist(t), "--epochs", "-1"],
        "argument --epochs: must be a positive integer, got -1",
    ),
    (
        "epochs-zero",
        lambda t, v: [*MNIST, "--data", _mnist(t), "--epochs", "0"],
        "argument --epochs: must be a positive integer, got 0",
    ),
    (
        "batch-size-zero",
        lambda t, v: [*MNIST, "--data", _mnist(t), "--batch-size", "0"],
        "argument --batch-size: must be a positive integer, got 0",
    ),
    (
        "learning-rate-negative",
        lambda t, v: [*MNIST, "--data", _mnist(t), "--learning-rate", "-0.1"],
        "argument --learning-rate: must be a number above 0, got -0.1",
    ),
    (
        "dropout-above-1",
        lambda t, v: [*MNIST, "--data", _mnist(t), "--dropout", "2"],
        "argument --dropout: must be at least 0 and below 1, got 2",
    ),
    (
        "validation-split-above-1",
        lambda t, v: [*MNIST, "--data", _mnist(t), "--validation-split", "1.5"],
        "argument --validation-split: must be above 0 and below 1, got 1.5",
    ),
    (
        "hidden-units-zero",
        lambda t, v: [*MNIST, "--data", _mnist(t), "--hidden-units", "0"],
        "argument --hidden-units: must be a positive integer, got 0",
    ),
    (
        "patience-negative",
        lambda t, v: [*MNIST, "--data", _mnist(t), "--patience", "-1"],
        "argument --patience: must be an integer >= 0, got -1",
    ),
    (
        "epochs-not-a-number",
        lambda t, v: [*MNIST, "--data", _mnist(t), "--epochs", "ten"],
        "argument --epochs: must be a positive integer, got 'ten'",
    ),
    (
        "unknown-optimizer",
        lambda t, v: [*MNIST, "--data", _mnist(t), "--optimizer", "adamm"],
        "unknown optimizer 'adamm' (a Keras optimizer name such as adam, sgd, rmsprop)",
    ),
    (
        "model-dir-is-a-file",
        lambda t, v: [*MNIST, "--data", _mnist(t), "--model-dir", _mnist(t)],
        "mnist.npz must be a folder, but ",
    ),
    # evaluate
    (
        "evaluate-folder-without-card",
        lambda t, v: ["evaluate", str(t), "--data", _mnist(t)],
        "is not an exported version: it holds no model_card.json",
    ),
    (
        "evaluate-model-folder-not-version",
        lambda t, v: ["evaluate", str(v.parent), "--data", _mnist(t)],
        "holds versions of a model; did you mean ",
    ),
    (
        "evaluate-missing-folder",
        lambda t, v: ["evaluate", str(t / "models" / "x" / "9"), "--data", _mnist(t)],
        "9 does not exist; expected an exported version folder such as models/mnist-mlp/1",
    ),
    (
        "evaluate-card-failing-validation",
        lambda t, v: [
            "evaluate",
            str(_card_copy(t, v, lambda c: c["input"].update(channels=7))),
            "--data",
            _mnist(t),
        ],
        "model_card.json is not a valid model card: input.channels: Input should be 1 or 3",
    ),
    (
        "evaluate-card-missing-fields",
        lambda t, v: [
            "evaluate",
            str(_card_copy(t, v, lambda c: c.clear())),
            "--data",
            _mnist(t),
        ],
        "model_card.json is not a valid model card: name: Field required",
    ),
    (
        "evaluate-card-not-json",
        lambda t, v: ["evaluate", str(_junk_card(t)), "--data", _mnist(t)],
        "model_card.json is not a valid model card: Invalid JSON",
    ),
    (
        "evaluate-card-without-saved-model",
        lambda t, v: ["evaluate", str(_without_saved_model(t, v)), "--data", _mnist(t)],
        "holds no saved_model.pb: not a complete export",
    ),
    (
        "evaluate-mnist-model-on-xray-folder",
        lambda t, v: ["evaluate", str(v), "--data", str(_xray(t))],
        "looks like a chest X-ray folder",
    ),
    (
        "evaluate-mnist-model-on-folder-with-npz",
        lambda t, v: ["evaluate", str(v), "--data", str(_folder_with_npz(t))],
        "did you mean --data ",
    ),
    (
        "evaluate-xray-model-on-npz",
        lambda t, v: [
            "evaluate",
            str(_card_copy(t, v, lambda c: c.update(name="pneumonia-cnn"))),
            "--data",
            _mnist(t),
        ],
        "is a file, not a folder",
    ),
    (
        "evaluate-output-in-missing-folder",
        lambda t, v: ["evaluate", str(v), "--data", _mnist(t), "--output", str(t / "no/r.json")],
        "r.json: its folder ",
    ),
    # retrain
    (
        "retrain-folder-without-card",
        lambda t, v: ["retrain", str(t), "--data", _mnist(t)],
        "is not an exported version: it holds no model_card.json",
    ),
    (
        "retrain-mnist-on-xray-folder",
        lambda t, v: ["retrain", str(v), "--data", str(_xray(t))],
        "looks like a chest X-ray folder",
    ),
    (
        "retrain-negative-epochs",
        lambda t, v: ["retrain", str(v), "--data", _mnist(t), "--epochs", "-2"],
        "argument --epochs: must be a positive integer, got -2",
    ),
    # resume
    (
        "resume-folder-that-is-no-run",
        lambda t, v: ["resume", str(v)],
        "is not a run folder: it holds no run.json",
    ),
    (
        "resume-missing-folder",
        lambda t, v: ["resume", str(t / "runs" / "x")],
        "run folder",
    ),
    (
        "resume-runs-parent-folder",
        lambda t, v: ["resume", str(_run_folder(t, "{}").parent)],
        "holds run folders; did you mean",
    ),
    (
        "resume-broken-run-json",
        lambda t, v: ["resume", str(_run_folder(t, "{not json"))],
        "run.json cannot be resumed",
    ),
    (
        "resume-run-json-of-other-version",
        lambda t, v: [
            "resume",
            str(_run_folder(t, '{"model": "mnist-mlp", "data": null, "x": 1}')),
        ],
        "run.json cannot be resumed",
    ),
    # tune
    (
        "tune-data-folder",
        lambda t, v: ["tune", "--data", str(_folder_with_npz(t)), "--log-dir", str(t / "runs")],
        "did you mean --data ",
    ),
    (
        "tune-units-zero",
        lambda t, v: ["tune", "--data", _mnist(t), "--units", "0", "--log-dir", str(t / "runs")],
        "argument --units: must be a positive integer, got 0",
    ),
    (
        "tune-unknown-optimizer",
        lambda t, v: ["tune", "--data", _mnist(t), "--optimizer", "adam", "nadamm"],
        "unknown optimizer 'nadamm'",
    ),
]


@pytest.mark.parametrize(
    ("make_argv", "expected"), [pytest.param(argv, text, id=name) for name, argv, text in MISTAKES]
)
def test_user_mistakes_get_a_message_and_exit_2(
    make_argv: Argv,
    expected: str,
    mnist_export: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)  # anything a default folder would create lands here
    argv = make_argv(tmp_path, mnist_export)
    if argv[0] == "train":  # before the case's own flags, which win when repeated
        argv = [*argv[:2], *output_dirs(tmp_path), *argv[2:]]
    elif argv[0] == "retrain":
        argv += ["--runs-dir", str(tmp_path / "runs")]
    versions_before = sorted(p.name for p in mnist_export.parent.iterdir())
    code, err = run_cli(argv, capsys)
    assert code == 2, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(("error: ", "usage: ", "python -m training"))
    assert expected in err
    assert not [p for p in (tmp_path / "runs").glob("*/history.csv")]
    assert not (tmp_path / "models").exists()
    assert sorted(p.name for p in mnist_export.parent.iterdir()) == versions_before
