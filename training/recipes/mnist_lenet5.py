"""The chapter's LeNet-5 (LeCun et al., 1998) reading handwritten digits (MNIST).

The 28x28 pictures the service's digit normalisation makes are padded to the 32x32 the
network was designed for (as LeCun padded MNIST), then: C1 6@5x5 tanh -> S2 average pool
-> C3 16@5x5 tanh -> S4 -> C5 120@5x5 tanh -> F6 84 tanh -> 10 softmax.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf
from keras import layers

from training.architectures import build_lenet5
from training.data import MNIST_SIDE, LabelledArrays, TrainingData, load_mnist_training
from training.fit import FitSettings
from training.recipes import mnist_digits
from training.recipes.base import CardText, Recipe, TrainRequest

INPUT_SHAPE = (MNIST_SIDE, MNIST_SIDE, 1)  # what app.contract.digits.normalize_digit makes
PADDING = 2  # 28 + 2 * 2 = LeNet-5's 32
_AUGMENTATION = "RandomTranslation 0.08, RandomRotation 0.03, RandomZoom 0.1"


@dataclass(frozen=True)
class MnistLenet5Options:
    # 10%, not the MLP's 30%: the convolutions need the data; 6,000 digits still
    # validate to +-0.3%.
    validation_split: float = 0.1
    augment: bool = True


def digit_augmentation(seed: int) -> keras.Sequential:
    """Small shifts, turns and size changes, as handwriting varies (training only)."""
    return keras.Sequential(
        [
            layers.RandomTranslation(0.08, 0.08, fill_mode="constant", seed=seed),
            layers.RandomRotation(0.03, fill_mode="constant", seed=seed + 1),
            layers.RandomZoom(0.1, fill_mode="constant", seed=seed + 2),
        ],
        name="digit_augmentation",
    )


def build_mnist_lenet5(num_classes: int = 10) -> keras.Model:
    """LeNet-5 on 28x28x1 raw pixels, zero-padded inside the model to 32x32."""
    side = MNIST_SIDE + 2 * PADDING
    lenet = build_lenet5((side, side, 1), num_classes)
    return keras.Sequential(
        [
            keras.Input(shape=INPUT_SHAPE, name="pixels"),
            layers.ZeroPadding2D(PADDING, name="pad_to_32"),
            *lenet.layers,  # Rescaling 1/255 first: padded zeros stay 0 (paper white)
        ],
        name="mnist_lenet5",
    )


class MnistLenet5(Recipe):
    name = "mnist-lenet5"
    summary = "the chapter's LeNet-5 for handwritten digits (MNIST)"
    data_help = mnist_digits.DATA_HELP
    limitations = mnist_digits.LIMITATIONS
    fit_defaults = FitSettings(
        epochs=30,
        batch_size=64,
        optimizer="adam",
        learning_rate=1e-3,
        seed=42,
        early_stopping=True,
        patience=4,
        restore_best=True,
        reduce_lr_patience=2,
        ema_momentum=None,
    )
    Options = MnistLenet5Options

    def add_option_flags(self, parser: argparse.ArgumentParser) -> None:
        mnist_digits.add_validation_split_flag(
            parser, default=self.default_option("validation_split")
        )
        parser.add_argument(
            "--augment",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="random shifts (8%%), turns (+-11 degrees) and zoom (10%%) of training "
            "digits (default: on)",
        )

    def load_data(self, request: TrainRequest) -> TrainingData:
        options: MnistLenet5Options = self.options(request)
        data = load_mnist_training(
            request.data_path,
            validation_split=options.validation_split,
            batch_size=request.fit.batch_size,
            seed=request.fit.seed,
        )
        if not options.augment:
            return data
        augment = digit_augmentation(request.fit.seed)
        train = data.train.map(
            lambda images, labels: (augment(images, training=True), labels),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        return dataclasses.replace(data, train=train)

    def load_split(
        self, data: Path | None, split: str, options: MnistLenet5Options
    ) -> LabelledArrays:
        return mnist_digits.load_split(data, split)

    def build(self, options: MnistLenet5Options) -> keras.Model:
        return build_mnist_lenet5()

    def card_text(self, options: MnistLenet5Options) -> CardText:
        return CardText(
            description="Handwritten digit classifier (MNIST), the chapter's LeNet-5: "
            "ZeroPadding 2 (28x28 -> 32x32) -> Rescaling 1/255 -> C1 Conv 6@5x5 tanh -> S2 "
            "AvgPool 2 -> C3 Conv 16@5x5 tanh -> S4 AvgPool 2 -> C5 Conv 120@5x5 tanh -> "
            "F6 Dense 84 tanh -> Dense 10 softmax.",
            preprocessing=mnist_digits.PREPROCESSING,
            architecture="lenet5",
            notes={"augmentation": _AUGMENTATION if options.augment else None},
        )


RECIPE = MnistLenet5()
