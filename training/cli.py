"""The `python -m training` / `vision-train` command line.

    train {mnist-mlp,pneumonia-cnn}   train from scratch and export the next version
    resume RUN_DIR                    continue an interrupted run, then export
    retrain VERSION_DIR --data PATH   train an exported version further on new data
    tune                              HParams grid search for the MNIST MLP
    evaluate VERSION_DIR --data PATH  evaluate an exported SavedModel on a data split

Parsers are built by `build_parser()` on demand, never at import time. User mistakes
(arguments, paths, data layouts, a missing `training` extra) end in `error: ...` on stderr
and exit status 2 (`main`); bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.recipes import MODEL_NAMES, XRAY_ARCHITECTURES, TrainRequest

if TYPE_CHECKING:
    from app.contract.model_card import ModelCard

DEFAULTS: dict[str, dict[str, Any]] = {
    "mnist-mlp": {
        "epochs": 30,
        "batch_size": 32,
        "patience": 3,
        "reduce_lr_patience": 2,
        "dropout": 0.2,
        "ema_momentum": 0.0,
    },
    # Chosen on the val/ split only; docs/training.md has the experiments and why.
    "pneumonia-cnn": {
        "epochs": 20,
        "batch_size": 32,
        "patience": 6,
        "reduce_lr_patience": 2,
        "dropout": 0.3,
        "ema_momentum": 0.99,
        "class_weight_power": 0.5,  # chosen on validation: docs/training.md
    },
}


def _per_model(name: str) -> str:
    """`mnist-mlp X, pneumonia-cnn Y`: a flag's per-model defaults for its help text."""
    return ", ".join(f"{model} {values[name]}" for model, values in DEFAULTS.items())


# The smallest input each X-ray network can take: below it a convolution or pooling layer
# would get an empty image (pneumonia-cnn: three stride-2 convolutions and two poolings).
MIN_IMAGE_SIZE = {"pneumonia-cnn": 53, "lenet5": 32, "alexnet": 67, "vgg16": 32}

# What each command imports from the `training` extra (pyproject.toml), checked up front.
TRAINING_EXTRA_MODULES = {
    "train": ("matplotlib",),  # training.png / confusion.png at export
    "resume": ("matplotlib",),
    "retrain": ("matplotlib",),
    "tune": ("tensorboard",),  # the HParams logs
}


class UsageError(Exception):
    """A mistake in the command line or in the files it names; `main` prints it, exit 2."""


def _integer(what: str, minimum: int) -> Callable[[str], int]:
    """An argparse `type`: an integer >= `minimum`, else an error saying `must be <what>`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    return parse


def _number(what: str, accept: Callable[[float], bool]) -> Callable[[str], float]:
    """An argparse `type`: a finite float that `accept`s, else `must be <what>`."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if not (math.isfinite(value) and accept(value)):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    return parse


_positive_int = _integer("a positive integer", 1)
_count = _integer("an integer >= 0", 0)
_positive = _number("a number above 0", lambda value: value > 0)
_non_negative = _number("a number >= 0", lambda value: value >= 0)
_rate = _number("at least 0 and below 1", lambda value: 0 <= value < 1)
_share = _number("above 0 and below 1", lambda value: 0 < value < 1)


def _verbosity(text: str) -> int | None:
    """`--verbose`: 0, 1 or 2, or `auto` (None), resolved when fitting starts."""
    if text == "auto":
        return None
    if text in ("0", "1", "2"):
        return int(text)
    raise argparse.ArgumentTypeError(f"must be auto, 0, 1 or 2, got {text!r}")


VERBOSE_HELP = (
    "Keras progress output: 0 silent, 1 progress bar, 2 one line per epoch; auto: a bar on "
    "a terminal, one line per epoch when output goes to a file or pipe (default: auto)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train, resume, retrain, tune and evaluate the vision models.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(commands)
    _add_resume(commands)
    _add_retrain(commands)
    _add_tune(commands)
    _add_evaluate(commands)
    return parser


def _add_train(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train",
        help="train a model from scratch and export it as the next version",
        description="Train a model from scratch in a new run folder, evaluate it on the "
        "test split and export it to MODEL_DIR/<model>/<next version>/.",
    )
    train.add_argument("model", choices=MODEL_NAMES, help="which model to train")
    train.add_argument(
        "--data",
        type=str,
        default=None,
        help="mnist-mlp: an .npz with x_train,y_train,x_test,y_test (and optionally "
        "x_val,y_val); omitted: keras.datasets.mnist.load_data(), which needs internet. "
        "pneumonia-cnn (required): "
        "a folder with train/, val/, test/, each holding NORMAL/ and PNEUMONIA/ images",
    )
    _add_output_flags(train)
    train.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help=f"maximum epochs (default: {_per_model('epochs')})",
    )
    train.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        help=f"examples per training step (default: {_per_model('batch_size')})",
    )
    train.add_argument(
        "--optimizer", default="adam", help="Keras optimizer name, e.g. adam, sgd (default: adam)"
    )
    train.add_argument(
        "--learning-rate",
        type=_positive,
        default=1e-3,
        help="optimizer step size (default: 0.001)",
    )
    train.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    train.add_argument(
        "--early-stopping",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="stop when validation loss stops improving (default: on)",
    )
    train.add_argument(
        "--patience",
        type=_count,
        default=None,
        help="epochs without validation-loss improvement before stopping "
        f"(default: {_per_model('patience')})",
    )
    train.add_argument(
        "--reduce-lr-patience",
        type=_count,
        default=None,
        help="halve the learning rate after this many epochs without validation-loss "
        f"improvement; 0 to keep it fixed (default: {_per_model('reduce_lr_patience')})",
    )
    train.add_argument(
        "--ema-momentum",
        type=_rate,
        default=None,
        help="keep an exponential moving average of the weights with this momentum "
        "(Adam use_ema) and validate, checkpoint and export the averages; 0 for plain "
        f"weights (default: {_per_model('ema_momentum')})",
    )
    train.add_argument(
        "--restore-best",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="export the weights of the epoch with the lowest validation loss, not the last "
        "(default: on)",
    )
    mnist = train.add_argument_group("mnist-mlp")
    mnist.add_argument(
        "--validation-split",
        type=_share,
        default=0.3,
        help="share of x_train held out for validation when the npz has no x_val "
        "(default: 0.3, as in the chapter)",
    )
    mnist.add_argument(
        "--hidden-units",
        type=_positive_int,
        nargs="+",
        default=[128, 60],
        help="sizes of the relu hidden layers (default: 128 60)",
    )
    train.add_argument(
        "--dropout",
        type=_rate,
        default=None,
        help="dropout rate; 0 for none. mnist-mlp: after the first hidden layer; "
        f"pneumonia-cnn: before its Dense 128 layer (default: {_per_model('dropout')})",
    )
    xray = train.add_argument_group("pneumonia-cnn")
    xray.add_argument(
        "--architecture",
        choices=XRAY_ARCHITECTURES,
        default="pneumonia-cnn",
        help="network to train on the X-rays; the chapter's LeNet-5, AlexNet and VGG-16 are "
        "selectable for experiments (default: pneumonia-cnn)",
    )
    xray.add_argument(
        "--image-size",
        type=_positive_int,
        nargs=2,
        default=[128, 128],
        metavar=("HEIGHT", "WIDTH"),
        help="input size the X-rays are resized to (default: 128 128; see docs/training.md)",
    )
    xray.add_argument(
        "--channels",
        type=int,
        choices=(1, 3),
        default=1,
        help="1 = grayscale, 3 = RGB input (default: 1)",
    )
    xray.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="random shifts, zoom, rotation and contrast on training images (default: on)",
    )
    xray.add_argument(
        "--class-weights",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="weight the loss by class to offset the NORMAL/PNEUMONIA imbalance (default: on)",
    )
    xray.add_argument(
        "--class-weight-power",
        type=_non_negative,
        default=None,
        help="class weights = (N / (2 * N_class)) ** POWER: 1 makes both classes count "
        "equally, 0.5 takes the square root (a softer correction), 0 weights every image 1 "
        f"(default: {DEFAULTS['pneumonia-cnn']['class_weight_power']})",
    )


def _add_output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=Path("models"),
        help="where exported versions go: MODEL_DIR/<model>/<version>/ (default: models)",
    )
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=Path("runs"),
        help="where run folders (checkpoints, history) go (default: runs)",
    )
    parser.add_argument(
        "--verbose", type=_verbosity, default=None, metavar="{auto,0,1,2}", help=VERBOSE_HELP
    )


def _add_resume(commands: argparse._SubParsersAction) -> None:
    resume = commands.add_parser(
        "resume",
        help="continue an interrupted run from its last completed epoch",
        description="Continue a run from the checkpoint of its last completed epoch, with "
        "the settings it was started with, then evaluate and export it.",
    )
    resume.add_argument("run_dir", type=Path, help="the run folder printed when the run began")
    resume.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help="new total epoch count (default: the run's own)",
    )


def _add_retrain(commands: argparse._SubParsersAction) -> None:
    retrain = commands.add_parser(
        "retrain",
        help="train an exported version further on (more) data; export the next version",
        description="Load VERSION_DIR/model.keras, train it on --data with the settings in "
        "its model card (changed by the flags below) and export the next version, whose "
        "card names the version it came from as parent.",
    )
    retrain.add_argument("version_dir", type=Path, help="an exported version, e.g. models/x/1")
    retrain.add_argument(
        "--data", required=True, help="data in the same layout the model was trained on"
    )
    retrain.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="where to export (default: the folder VERSION_DIR's model lives in)",
    )
    retrain.add_argument(
        "--runs-dir", type=Path, default=Path("runs"), help="where run folders go (default: runs)"
    )
    retrain.add_argument(
        "--epochs", type=_positive_int, default=None, help="maximum epochs (default: from the card)"
    )
    retrain.add_argument(
        "--learning-rate",
        type=_positive,
        default=None,
        help="optimizer step size (default: from the card)",
    )
    retrain.add_argument(
        "--verbose", type=_verbosity, default=None, metavar="{auto,0,1,2}", help=VERBOSE_HELP
    )


def _add_tune(commands: argparse._SubParsersAction) -> None:
    tune = commands.add_parser(
        "tune",
        help="HParams grid search over the MNIST MLP (units, dropout, optimizer)",
        description="Train one single-hidden-layer MLP per grid point, log each in "
        "TensorBoard's HParams format under LOG_DIR, write LOG_DIR/results.csv and "
        "results.json and print the best trial (by validation accuracy).",
    )
    tune.add_argument(
        "--data",
        default=None,
        help="MNIST .npz (default: keras.datasets.mnist.load_data())",
    )
    tune.add_argument(
        "--log-dir",
        type=Path,
        default=Path("runs/hparam_tuning"),
        help="TensorBoard log folder (default: runs/hparam_tuning)",
    )
    tune.add_argument(
        "--units",
        type=_positive_int,
        nargs="+",
        default=[16, 32],
        help="hidden units (default: 16 32)",
    )
    tune.add_argument(
        "--dropout",
        type=_rate,
        nargs="+",
        default=[0.1, 0.2],
        help="dropout rates (default: 0.1 0.2)",
    )
    tune.add_argument(
        "--optimizer", nargs="+", default=["adam", "sgd"], help="optimizers (default: adam sgd)"
    )
    tune.add_argument(
        "--epochs", type=_positive_int, default=1, help="epochs per trial (default: 1)"
    )
    tune.add_argument(
        "--batch-size", type=_positive_int, default=32, help="batch size (default: 32)"
    )
    tune.add_argument(
        "--validation-split",
        type=_share,
        default=0.3,
        help="share of x_train held out to rank trials (default: 0.3)",
    )
    tune.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")


def _add_evaluate(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="evaluate an exported SavedModel on a labelled data split",
        description="Run the SavedModel's serving signature over one split and print the "
        "app.contract.classification evaluation report as JSON.",
    )
    evaluate.add_argument("version_dir", type=Path, help="an exported version, e.g. models/x/1")
    evaluate.add_argument(
        "--data",
        default=None,
        help="MNIST .npz or chest X-ray folder, as for training (MNIST default: the "
        "Keras download)",
    )
    evaluate.add_argument(
        "--split",
        choices=("train", "val", "test"),
        default="test",
        help="which split to evaluate (default: test)",
    )
    evaluate.add_argument(
        "--output", type=Path, default=None, help="also write the report to this JSON file"
    )


def run_command(args: argparse.Namespace) -> int:
    """Dispatch parsed arguments; heavy imports happen here, after parsing."""
    if args.command == "train":
        from training.pipeline import start_run

        defaults = DEFAULTS[args.model]

        def given_or_default(name: str) -> Any:
            value = getattr(args, name)
            return value if value is not None else defaults[name]

        request = TrainRequest(
            model=args.model,
            data=args.data,
            model_dir=str(args.model_dir),
            epochs=given_or_default("epochs"),
            batch_size=given_or_default("batch_size"),
            optimizer=args.optimizer,
            learning_rate=args.learning_rate,
            seed=args.seed,
            early_stopping=args.early_stopping,
            patience=given_or_default("patience"),
            restore_best=args.restore_best,
            reduce_lr_patience=given_or_default("reduce_lr_patience") or None,
            ema_momentum=given_or_default("ema_momentum") or None,
            verbose=args.verbose,
            validation_split=args.validation_split,
            hidden_units=args.hidden_units,
            dropout=given_or_default("dropout"),
            architecture=args.architecture,
            image_size=args.image_size,
            channels=args.channels,
            augment=args.augment,
            class_weights=args.class_weights,
            class_weight_power=(
                args.class_weight_power
                if args.class_weight_power is not None
                else defaults.get("class_weight_power", 1.0)
            ),
        )
        print(start_run(request, args.runs_dir).summary())
    elif args.command == "resume":
        from training.pipeline import resume_run

        print(resume_run(args.run_dir, epochs=args.epochs).summary())
    elif args.command == "retrain":
        from training.pipeline import start_retrain

        overrides: dict[str, object] = {"verbose": args.verbose}
        if args.epochs is not None:
            overrides["epochs"] = args.epochs
        if args.learning_rate is not None:
            overrides["learning_rate"] = args.learning_rate
        result = start_retrain(
            args.version_dir,
            args.data,
            args.runs_dir,
            model_dir=args.model_dir,
            overrides=overrides,
        )
        print(result.summary())
    elif args.command == "tune":
        from training.tune import tune_mnist_mlp

        ranked = tune_mnist_mlp(
            Path(args.data) if args.data else None,
            args.log_dir,
            units=args.units,
            dropouts=args.dropout,
            optimizers=args.optimizer,
            epochs=args.epochs,
            batch_size=args.batch_size,
            validation_split=args.validation_split,
            seed=args.seed,
        )
        best = ranked[0]
        print(
            f"best trial {best.trial}: units={best.units} dropout={best.dropout} "
            f"optimizer={best.optimizer} val_accuracy={best.val_accuracy:.4f} | "
            f"results in {args.log_dir / 'results.csv'}; "
            f"view with: tensorboard --logdir {args.log_dir}"
        )
    elif args.command == "evaluate":
        from training.evaluate import evaluate_saved_model, load_split_for_card

        card = read_card(args.version_dir)
        data = load_split_for_card(card, Path(args.data) if args.data else None, args.split)
        report = evaluate_saved_model(args.version_dir, data, card.class_names)
        text = report.model_dump_json(indent=2)
        if args.output:
            args.output.write_text(text + "\n", encoding="utf-8")
        print(text)
        print(
            f"{card.name} v{card.version} on {args.split}: accuracy "
            f"{report.accuracy:.4f} over {report.count} images"
        )
    return 0


def check_training_extra(command: str) -> None:
    """Fail before any work when a module of the `training` extra is not installed
    (`make serve` installs the runtime dependencies only)."""
    missing = [name for name in TRAINING_EXTRA_MODULES.get(command, ()) if not _installed(name)]
    if missing:
        raise UsageError(
            f"the training extra is not installed (no module {', '.join(missing)}): run "
            "`.venv/bin/pip install -e '.[training]'` (or `make test`, which installs it)"
        )


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # in sys.modules without a __spec__: imported, so installed
        return True


def check_arguments(args: argparse.Namespace) -> None:
    """Mistakes that can be seen before any data is read or anything is written.

    Data layouts are checked by `training.data` when the data is loaded, which also
    happens before a run folder is made.
    """
    if args.command == "train":
        _check_optimizer(args.optimizer)
        if args.model == "pneumonia-cnn":
            _check_image_size(args.architecture, args.image_size)
        _check_folder(args.model_dir, "--model-dir")
        _check_folder(args.runs_dir, "--runs-dir")
    elif args.command == "resume":
        _check_run_dir(args.run_dir)
    elif args.command == "retrain":
        read_card(args.version_dir)
        _check_folder(args.model_dir, "--model-dir")
        _check_folder(args.runs_dir, "--runs-dir")
    elif args.command == "tune":
        for optimizer in args.optimizer:
            _check_optimizer(optimizer)
        _check_folder(args.log_dir, "--log-dir")
    elif args.command == "evaluate":
        read_card(args.version_dir)
        if not (args.version_dir / "saved_model.pb").is_file():
            raise UsageError(
                f"{args.version_dir} holds no saved_model.pb: not a complete export "
                "(evaluate a version that `train` or `retrain` exported)"
            )
        if args.output is not None:
            if args.output.is_dir():
                raise UsageError(f"--output {args.output} is a folder; give a file name")
            if not args.output.parent.is_dir():
                raise UsageError(
                    f"--output {args.output}: its folder {args.output.parent} does not exist"
                )


def _check_optimizer(name: str) -> None:
    from training.fit import make_optimizer

    try:
        make_optimizer(name, learning_rate=1e-3)
    except ValueError as error:
        raise UsageError(
            f"unknown optimizer {name!r} (a Keras optimizer name such as adam, sgd, rmsprop)"
        ) from error


def _check_image_size(architecture: str, size: Sequence[int]) -> None:
    smallest = MIN_IMAGE_SIZE[architecture]
    if min(size) < smallest:
        height, width = size
        raise UsageError(
            f"--image-size {height} {width} is too small for {architecture}: it needs at least "
            f"{smallest}x{smallest}"
        )


def _check_folder(path: Path | None, flag: str) -> None:
    """An output folder may be missing (it is created) but must not be, or be in, a file."""
    if path is None:
        return
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UsageError(f"{flag} {path} must be a folder, but {existing} is a file")


def read_card(version_dir: Path) -> ModelCard:
    """The model card of an exported version, or a `UsageError` saying what is wrong."""
    from app.contract.model_card import MODEL_CARD_FILENAME, ModelCard

    example = "expected an exported version folder such as models/mnist-mlp/1"
    if not version_dir.exists():
        raise UsageError(f"{version_dir} does not exist; {example}")
    if not version_dir.is_dir():
        raise UsageError(f"{version_dir} is a file; {example}")
    path = version_dir / MODEL_CARD_FILENAME
    if not path.is_file():
        versions = sorted(
            int(p.name)
            for p in version_dir.iterdir()
            if p.name.isdigit() and (p / MODEL_CARD_FILENAME).is_file()
        )
        if versions:
            raise UsageError(
                f"{version_dir} holds versions of a model; did you mean "
                f"{version_dir / str(versions[-1])}?"
            )
        raise UsageError(
            f"{version_dir} is not an exported version: it holds no {MODEL_CARD_FILENAME}; "
            f"{example}"
        )
    try:
        return ModelCard.read(version_dir)
    except ValueError as error:  # pydantic's ValidationError (bad JSON too), UnicodeDecodeError
        raise UsageError(f"{path} is not a valid model card: {_problems(error)}") from error


def _problems(error: ValueError) -> str:
    """A pydantic ValidationError's first problems on one line (`field.path: message`)."""
    from pydantic import ValidationError

    if not isinstance(error, ValidationError):
        return str(error)
    problems = [
        f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
        if problem["loc"]
        else problem["msg"]
        for problem in error.errors()
    ]
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    return "; ".join(problems[:3]) + more


def _check_run_dir(run_dir: Path) -> None:
    from training.pipeline import RUN_REQUEST

    if not run_dir.is_dir():
        state = "is a file" if run_dir.exists() else "does not exist"
        raise UsageError(
            f"run folder {run_dir} {state}; pass the run folder printed when the run began"
        )
    path = run_dir / RUN_REQUEST
    if not path.is_file():
        runs = [p for p in run_dir.iterdir() if (p / RUN_REQUEST).is_file()]
        if runs:
            latest = max(runs, key=lambda p: (p / RUN_REQUEST).stat().st_mtime)
            raise UsageError(f"{run_dir} holds run folders; did you mean {latest}?")
        raise UsageError(f"{run_dir} is not a run folder: it holds no {RUN_REQUEST}")
    try:
        TrainRequest.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as error:  # not JSON; not the fields of a TrainRequest
        raise UsageError(
            f"{path} cannot be resumed: it is not a run request this version of the training "
            f"code can read ({error})"
        ) from error


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv) and run the command.

    User mistakes (arguments, paths, data layouts, a missing `training` extra) print
    `error: <what is wrong>` on stderr and return exit status 2, as argparse's own errors
    do; anything else is a bug and keeps its traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    from training.data import DataError

    try:
        check_training_extra(args.command)
        check_arguments(args)
        return run_command(args)
    except (UsageError, DataError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
