"""The `python -m training` / `vision-train` command line.

    train {mnist-mlp,pneumonia-cnn}   train from scratch and export the next version
    resume RUN_DIR                    continue an interrupted run, then export
    retrain VERSION_DIR --data PATH   train an exported version further on new data
    tune                              HParams grid search for the MNIST MLP
    evaluate VERSION_DIR --data PATH  evaluate an exported SavedModel on a data split

Parsers are built by `build_parser()` on demand, never at import time.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.recipes import MODEL_NAMES, XRAY_ARCHITECTURES, TrainRequest

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
        "x_val,y_val); omitted: keras.datasets.mnist.load_data(). pneumonia-cnn (required): "
        "a folder with train/, val/, test/, each holding NORMAL/ and PNEUMONIA/ images",
    )
    _add_output_flags(train)
    train.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"maximum epochs (default: {_per_model('epochs')})",
    )
    train.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help=f"examples per training step (default: {_per_model('batch_size')})",
    )
    train.add_argument(
        "--optimizer", default="adam", help="Keras optimizer name, e.g. adam, sgd (default: adam)"
    )
    train.add_argument(
        "--learning-rate", type=float, default=1e-3, help="optimizer step size (default: 0.001)"
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
        type=int,
        default=None,
        help="epochs without validation-loss improvement before stopping "
        f"(default: {_per_model('patience')})",
    )
    train.add_argument(
        "--reduce-lr-patience",
        type=int,
        default=None,
        help="halve the learning rate after this many epochs without validation-loss "
        f"improvement; 0 to keep it fixed (default: {_per_model('reduce_lr_patience')})",
    )
    train.add_argument(
        "--ema-momentum",
        type=float,
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
        type=float,
        default=0.3,
        help="share of x_train held out for validation when the npz has no x_val "
        "(default: 0.3, as in the chapter)",
    )
    mnist.add_argument(
        "--hidden-units",
        type=int,
        nargs="+",
        default=[128, 60],
        help="sizes of the relu hidden layers (default: 128 60)",
    )
    train.add_argument(
        "--dropout",
        type=float,
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
        type=int,
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
        type=float,
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
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=1,
        help="Keras progress output: 0 silent, 1 progress bar, 2 one line per epoch (default: 1)",
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
        type=int,
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
        "--epochs", type=int, default=None, help="maximum epochs (default: from the card)"
    )
    retrain.add_argument(
        "--learning-rate",
        type=float,
        default=None,
        help="optimizer step size (default: from the card)",
    )
    retrain.add_argument(
        "--verbose", type=int, choices=(0, 1, 2), default=1, help="Keras progress output"
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
        "--units", type=int, nargs="+", default=[16, 32], help="hidden units (default: 16 32)"
    )
    tune.add_argument(
        "--dropout",
        type=float,
        nargs="+",
        default=[0.1, 0.2],
        help="dropout rates (default: 0.1 0.2)",
    )
    tune.add_argument(
        "--optimizer", nargs="+", default=["adam", "sgd"], help="optimizers (default: adam sgd)"
    )
    tune.add_argument("--epochs", type=int, default=1, help="epochs per trial (default: 1)")
    tune.add_argument("--batch-size", type=int, default=32, help="batch size (default: 32)")
    tune.add_argument(
        "--validation-split",
        type=float,
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
            epochs=args.epochs or defaults["epochs"],
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
        from app.contract.model_card import ModelCard
        from training.evaluate import evaluate_saved_model, load_split_for_card

        card = ModelCard.read(args.version_dir)
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


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv) and run the command; errors become exit code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from training.data import DataError

    try:
        return run_command(args)
    except (DataError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
