"""The chapter's multilayer perceptron for handwritten digits (MNIST).

Flatten -> Dense 128 relu -> Dropout -> Dense 60 relu -> Dense 10 softmax, reading the
28x28 pictures the service's digit normalisation makes.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
from keras import layers

from training import flags
from training.data import MNIST_SIDE, LabelledArrays, TrainingData, load_mnist_training
from training.fit import FitSettings
from training.recipes import mnist_digits
from training.recipes.base import CardText, Recipe, TrainRequest

INPUT_SHAPE = (MNIST_SIDE, MNIST_SIDE, 1)  # what app.contract.digits.normalize_digit makes


@dataclass(frozen=True)
class MnistMlpOptions:
    hidden_units: list[int] = field(default_factory=lambda: [128, 60])
    dropout: float = 0.2  # after the first hidden layer
    validation_split: float = 0.3  # the chapter's


def build_mnist_mlp(
    hidden_units: Sequence[int] = (128, 60), dropout: float = 0.0, num_classes: int = 10
) -> keras.Model:
    """Rescaling 1/255 -> Flatten -> Dense relu layers -> Dense softmax.

    `dropout` > 0 adds one Dropout layer after the first hidden layer (the chapter's 0.2).
    """
    stack: list[keras.layers.Layer] = [
        keras.Input(shape=INPUT_SHAPE, name="pixels"),
        layers.Rescaling(1.0 / 255, name="scale"),
        layers.Flatten(name="flatten"),
    ]
    for index, units in enumerate(hidden_units):
        stack.append(layers.Dense(units, activation="relu", name=f"hidden_{index + 1}"))
        if index == 0 and dropout > 0:
            stack.append(layers.Dropout(dropout, name="dropout"))
    stack.append(layers.Dense(num_classes, activation="softmax", name="probabilities"))
    return keras.Sequential(stack, name="mnist_mlp")


class MnistMlp(Recipe):
    name = "mnist-mlp"
    summary = "the chapter's MLP for handwritten digits (MNIST)"
    data_help = mnist_digits.DATA_HELP
    limitations = mnist_digits.LIMITATIONS
    fit_defaults = FitSettings(
        epochs=30,
        batch_size=32,
        optimizer="adam",
        learning_rate=1e-3,
        seed=42,
        early_stopping=True,
        patience=3,
        restore_best=True,
        reduce_lr_patience=2,
        ema_momentum=None,
    )
    Options = MnistMlpOptions

    def add_option_flags(self, parser: argparse.ArgumentParser) -> None:
        mnist_digits.add_validation_split_flag(
            parser, default=self.default_option("validation_split")
        )
        parser.add_argument(
            "--hidden-units",
            type=flags.positive_int,
            nargs="+",
            default=None,
            help="sizes of the relu hidden layers "
            f"(default: {' '.join(map(str, self.default_option('hidden_units')))})",
        )
        parser.add_argument(
            "--dropout",
            type=flags.rate,
            default=None,
            help="dropout rate after the first hidden layer; 0 for none "
            f"(default: {self.default_option('dropout')})",
        )

    def load_data(self, request: TrainRequest) -> TrainingData:
        options: MnistMlpOptions = self.options(request)
        return load_mnist_training(
            request.data_path,
            validation_split=options.validation_split,
            batch_size=request.fit.batch_size,
            seed=request.fit.seed,
        )

    def load_split(self, data: Path | None, split: str, options: MnistMlpOptions) -> LabelledArrays:
        return mnist_digits.load_split(data, split)

    def build(self, options: MnistMlpOptions) -> keras.Model:
        return build_mnist_mlp(hidden_units=options.hidden_units, dropout=options.dropout)

    def card_text(self, options: MnistMlpOptions) -> CardText:
        layers_text = " -> ".join(f"Dense {units} relu" for units in options.hidden_units)
        dropout = (
            f", Dropout {options.dropout} after the first hidden layer" if options.dropout else ""
        )
        return CardText(
            description="Handwritten digit classifier (MNIST): Rescaling 1/255 -> Flatten -> "
            f"{layers_text} -> Dense 10 softmax{dropout}.",
            preprocessing=mnist_digits.PREPROCESSING,
            architecture=self.name,
        )


RECIPE = MnistMlp()
