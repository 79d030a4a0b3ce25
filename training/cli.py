"""The `python -m training` / `vision-train` command line.

    train MODEL                       train from scratch and export the next version
                                      (one per recipe in training/recipes/)
    resume RUN_DIR                    continue an interrupted run, then export
    retrain VERSION_DIR --data PATH   train an exported version further on new data
    tune                              HParams grid search for the MNIST MLP
    evaluate VERSION_DIR --data PATH  evaluate an exported SavedModel on a data split
    import SOURCE --name NAME ...     serve a classifier trained elsewhere (.keras or
                                      SavedModel) as the next version of NAME

Parsers are built by `build_parser()` on demand, never at import time. User mistakes
(arguments, paths, data layouts, a missing `training` extra) end in `error: ...` on stderr
and exit status 2 (`main`); bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from training import flags
from training.fit import FitSettings
from training.recipes import RECIPES, Recipe, TrainRequest

if TYPE_CHECKING:
    from app.contract.model_card import ModelCard
    from training.importer import ImportRequest

# What each command imports from the `training` extra (pyproject.toml), checked up front.
TRAINING_EXTRA_MODULES = {
    "train": ("matplotlib",),  # training.png / confusion.png at export
    "resume": ("matplotlib",),
    "retrain": ("matplotlib",),
    "tune": ("tensorboard",),  # the HParams logs
}


class UsageError(Exception):
    """A mistake in the command line or in the files it names; `main` prints it, exit 2."""


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
        description="Train, resume, retrain, tune, evaluate and import the vision models.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(commands)
    _add_resume(commands)
    _add_retrain(commands)
    _add_tune(commands)
    _add_evaluate(commands)
    _add_import(commands)
    return parser


def _add_train(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train",
        help="train a model from scratch and export it as the next version",
        description="Train a model from scratch in a new run folder, evaluate it on the "
        "test split and export it to MODEL_DIR/<model>/<next version>/. Each model has its "
        "own flags and defaults: python -m training train MODEL --help.",
    )
    models = train.add_subparsers(
        dest="model", required=True, metavar="MODEL", help="the model to train (its recipe)"
    )
    for recipe in RECIPES.values():
        _add_train_recipe(models, recipe)


def _add_train_recipe(models: argparse._SubParsersAction, recipe: Recipe) -> None:
    """`train <model>`: the flags every model shares, with the recipe's defaults, then its own."""
    defaults = recipe.fit_defaults
    parser = models.add_parser(recipe.name, help=recipe.summary, description=recipe.summary)
    parser.add_argument("--data", type=str, default=None, help=recipe.data_help)
    _add_output_flags(parser)
    parser.add_argument(
        "--epochs",
        type=flags.positive_int,
        default=None,
        help=f"maximum epochs (default: {defaults.epochs})",
    )
    parser.add_argument(
        "--batch-size",
        type=flags.positive_int,
        default=None,
        help=f"examples per training step (default: {defaults.batch_size})",
    )
    parser.add_argument(
        "--optimizer",
        default=None,
        help=f"Keras optimizer name, e.g. adam, sgd (default: {defaults.optimizer})",
    )
    parser.add_argument(
        "--learning-rate",
        type=flags.positive,
        default=None,
        help=f"optimizer step size (default: {defaults.learning_rate})",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help=f"random seed (default: {defaults.seed})"
    )
    parser.add_argument(
        "--early-stopping",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="stop when validation loss stops improving "
        f"(default: {'on' if defaults.early_stopping else 'off'})",
    )
    parser.add_argument(
        "--patience",
        type=flags.count,
        default=None,
        help="epochs without validation-loss improvement before stopping "
        f"(default: {defaults.patience})",
    )
    parser.add_argument(
        "--reduce-lr-patience",
        type=flags.count,
        default=None,
        help="halve the learning rate after this many epochs without validation-loss "
        f"improvement; 0 to keep it fixed (default: {defaults.reduce_lr_patience or 0})",
    )
    parser.add_argument(
        "--ema-momentum",
        type=flags.rate,
        default=None,
        help="keep an exponential moving average of the weights with this momentum "
        "(Adam use_ema) and validate, checkpoint and export the averages; 0 for plain "
        f"weights (default: {defaults.ema_momentum or 0})",
    )
    parser.add_argument(
        "--restore-best",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="export the weights of the epoch with the lowest validation loss, not the last "
        f"(default: {'on' if defaults.restore_best else 'off'})",
    )
    recipe.add_option_flags(parser.add_argument_group(f"{recipe.name} options"))


def train_request(args: argparse.Namespace) -> TrainRequest:
    """The `train` command's request: the flags given, over the recipe's defaults."""
    recipe = RECIPES[args.model]
    given = {
        name: getattr(args, name)
        for name in (
            "epochs",
            "batch_size",
            "optimizer",
            "learning_rate",
            "seed",
            "early_stopping",
            "patience",
            "restore_best",
            "reduce_lr_patience",
            "ema_momentum",
            "verbose",
        )
        if getattr(args, name) is not None
    }
    fit: FitSettings = dataclasses.replace(recipe.fit_defaults, **given)
    # 0 on the command line turns these off, as None does in the settings
    fit = dataclasses.replace(
        fit,
        reduce_lr_patience=fit.reduce_lr_patience or None,
        ema_momentum=fit.ema_momentum or None,
    )
    return TrainRequest(
        model=recipe.name,
        data=args.data,
        model_dir=str(args.model_dir),
        fit=fit,
        options=recipe.options_from_flags(args),
    )


def _add_model_dir_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=Path("models"),
        help="where exported versions go: MODEL_DIR/<model>/<version>/ (default: models)",
    )


def _add_output_flags(parser: argparse.ArgumentParser) -> None:
    _add_model_dir_flag(parser)
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
        type=flags.positive_int,
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
        "--epochs",
        type=flags.positive_int,
        default=None,
        help="maximum epochs (default: from the card)",
    )
    retrain.add_argument(
        "--learning-rate",
        type=flags.positive,
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
        type=flags.positive_int,
        nargs="+",
        default=[16, 32],
        help="hidden units (default: 16 32)",
    )
    tune.add_argument(
        "--dropout",
        type=flags.rate,
        nargs="+",
        default=[0.1, 0.2],
        help="dropout rates (default: 0.1 0.2)",
    )
    tune.add_argument(
        "--optimizer", nargs="+", default=["adam", "sgd"], help="optimizers (default: adam sgd)"
    )
    tune.add_argument(
        "--epochs", type=flags.positive_int, default=1, help="epochs per trial (default: 1)"
    )
    tune.add_argument(
        "--batch-size", type=flags.positive_int, default=32, help="batch size (default: 32)"
    )
    tune.add_argument(
        "--validation-split",
        type=flags.share,
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


def _add_import(commands: argparse._SubParsersAction) -> None:
    # The choices and defaults are the importer's own (one place); imported here, when a
    # parser is built, not when this module is.
    from training.importer import (
        DEFAULT_PREPROCESSING,
        INPUT_RANGES,
        PREPROCESSING_KINDS,
    )

    command = commands.add_parser(
        "import",
        help="serve an image classifier trained elsewhere (.keras file or SavedModel folder)",
        description="Check that SOURCE is an image classifier (one image input of a fixed "
        "size, a softmax over the classes), wrap it in the service's signature (raw 0..255 "
        "pixels in, scaled inside to the range it was trained on) and publish it as the next "
        "version of MODEL_DIR/NAME/, with model.tflite when the conversion agrees and a "
        "model card; evaluated on --evaluate-on when given. A running server picks it up at "
        "its next rescan. Example: python -m training import digits.keras --name my-digits "
        "--classes 0 1 2 3 4 5 6 7 8 9 --preprocessing mnist-digit --input-range 0-1",
    )
    command.add_argument("source", type=Path, help="a .keras file or a SavedModel folder")
    command.add_argument(
        "--name", required=True, help="the model's name in URLs, kebab-case, e.g. my-digits"
    )
    classes = command.add_mutually_exclusive_group(required=True)
    classes.add_argument(
        "--classes", nargs="+", metavar="CLASS", help="class names, in the model's output order"
    )
    classes.add_argument(
        "--labels",
        type=Path,
        metavar="FILE",
        help="a text file with one class name per line, in the model's output order",
    )
    command.add_argument(
        "--preprocessing",
        choices=PREPROCESSING_KINDS,
        default=DEFAULT_PREPROCESSING,
        help="what the service does to an upload: resize (convert to the input's colour mode, "
        "resize to its size) or mnist-digit (MNIST-style digit normalisation, for 28x28x1 "
        f"inputs) (default: {DEFAULT_PREPROCESSING})",
    )
    command.add_argument(
        "--input-range",
        choices=tuple(INPUT_RANGES),
        required=True,
        help="(required) the pixel range the model was trained on; uploads are scaled to it "
        "inside the exported model: 0-1 for x/255, -1-1 for x/127.5 - 1, 0-255 for a model "
        "that scales its input itself (e.g. a Rescaling layer). There is no default: a wrong "
        "range passes every check and serves overconfident probabilities",
    )
    command.add_argument(
        "--evaluate-on",
        type=Path,
        metavar="DIR",
        default=None,
        help="labelled images to evaluate on, one sub-folder per class named as the classes; "
        "recorded in the card (default: none, and the card says it is not evaluated)",
    )
    _add_model_dir_flag(command)
    command.add_argument(
        "--description", default=None, help="the card's description (default: from the source)"
    )
    command.add_argument(
        "--signature",
        default=None,
        help="SavedModel only: the signature to serve (default: serving_default, or the only one)",
    )


def import_request(args: argparse.Namespace) -> ImportRequest:
    """The `import` command's request; `--labels` is read here."""
    from training.importer import ImportRequest, read_labels

    return ImportRequest(
        source=args.source,
        name=args.name,
        class_names=args.classes if args.classes is not None else read_labels(args.labels),
        model_dir=args.model_dir,
        preprocessing=args.preprocessing,
        input_range=args.input_range,
        evaluate_on=args.evaluate_on,
        description=args.description,
        signature=args.signature,
    )


def run_command(args: argparse.Namespace) -> int:
    """Dispatch parsed arguments; heavy imports happen here, after parsing."""
    if args.command == "train":
        from training.pipeline import start_run

        print(start_run(train_request(args), args.runs_dir).summary())
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
        report = evaluate_saved_model(
            args.version_dir, data, card.class_names, card.operating_point
        )
        text = report.model_dump_json(indent=2)
        if args.output:
            args.output.write_text(text + "\n", encoding="utf-8")
        print(text)
        print(  # on stderr: stdout is the JSON report alone, for `| jq` or json.load
            f"{card.name} v{card.version} on {args.split}: accuracy "
            f"{report.accuracy:.4f} over {report.count} images",
            file=sys.stderr,
        )
    elif args.command == "import":
        from training.importer import import_model

        print(import_model(import_request(args)).summary())
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
        request = train_request(args)
        _check_optimizer(request.fit.optimizer)
        recipe = RECIPES[args.model]
        try:
            recipe.check_options(recipe.options(request))
        except ValueError as error:
            raise UsageError(str(error)) from error
        _check_folder(args.model_dir, "--model-dir")
        _check_folder(args.runs_dir, "--runs-dir")
    elif args.command == "resume":
        _check_run_dir(args.run_dir)
    elif args.command == "retrain":
        card = read_card(args.version_dir)
        if card.imported is not None:
            raise UsageError(
                f"{args.version_dir} was imported from {card.imported.source}, not trained "
                "here: retrain it where it was made and import the result again"
            )
        _check_folder(args.model_dir, "--model-dir")
        _check_folder(args.runs_dir, "--runs-dir")
    elif args.command == "tune":
        for optimizer in args.optimizer:
            _check_optimizer(optimizer)
        _check_folder(args.log_dir, "--log-dir")
    elif args.command == "import":
        from training.importer import check_request

        _check_folder(args.model_dir, "--model-dir")
        check_request(import_request(args))
    elif args.command == "evaluate":
        card = read_card(args.version_dir)
        if card.imported is not None:
            raise UsageError(
                f"{args.version_dir} was imported: evaluate reads the data sets this project "
                "trains on; evaluate an imported model by importing it again with "
                "--evaluate-on DIR (one folder of images per class)"
            )
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
        request = TrainRequest.from_json(json.loads(path.read_text(encoding="utf-8")))
        RECIPES[request.model].options(request)
    except (ValueError, TypeError, KeyError) as error:  # not JSON; not a TrainRequest's fields
        raise UsageError(
            f"{path} cannot be resumed: it is not a run request this version of the training "
            f"code can read ({error})"
        ) from error


def _attach_input_range(argv: Sequence[str]) -> list[str]:
    """`--input-range -1-1` as `--input-range=-1-1`: argparse takes a separate value that
    starts with '-' for an option, and would say `expected one argument`."""
    attached: list[str] = []
    for argument in argv:
        if attached and attached[-1] == "--input-range" and argument.startswith("-"):
            attached[-1] = f"--input-range={argument}"
        else:
            attached.append(argument)
    return attached


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv) and run the command.

    User mistakes (arguments, paths, data layouts, a missing `training` extra) print
    `error: <what is wrong>` on stderr and return exit status 2, as argparse's own errors
    do; anything else is a bug and keeps its traceback.
    """
    parser = build_parser()
    args = parser.parse_args(_attach_input_range(sys.argv[1:] if argv is None else argv))
    from training.data import DataError

    try:
        check_training_extra(args.command)
        check_arguments(args)
        return run_command(args)
    except (UsageError, DataError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
