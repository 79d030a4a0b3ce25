"""The chapter's classic CNNs (LeNet-5, AlexNet, VGG-16), for the recipes to build on.

Every model takes raw 0..255 pixels and scales them itself with a `Rescaling` layer, so
the exported SavedModel needs no preprocessing beyond resizing, and training and serving
cannot drift apart. Builders only build; compiling belongs to `training.fit`.
"""

from __future__ import annotations

import keras
from keras import layers


def _pixels_input(shape: tuple[int, int, int]) -> list[keras.layers.Layer]:
    return [keras.Input(shape=shape, name="pixels"), layers.Rescaling(1.0 / 255, name="scale")]


def build_lenet5(
    input_shape: tuple[int, int, int] = (32, 32, 1), num_classes: int = 10
) -> keras.Model:
    """LeNet-5 (LeCun et al., 1998): 5x5 tanh convolutions and 2x2 average pooling.

    C1 6@28x28 -> S2 -> C3 16@10x10 -> S4 -> C5 120 -> F6 84 -> output; 61,706 parameters
    at 32x32x1 with 10 classes.
    """
    return keras.Sequential(
        [
            *_pixels_input(input_shape),
            layers.Conv2D(6, 5, activation="tanh", name="c1"),
            layers.AveragePooling2D(2, name="s2"),
            layers.Conv2D(16, 5, activation="tanh", name="c3"),
            layers.AveragePooling2D(2, name="s4"),
            layers.Conv2D(120, 5, activation="tanh", name="c5"),
            layers.Flatten(name="flatten"),
            layers.Dense(84, activation="tanh", name="f6"),
            layers.Dense(num_classes, activation="softmax", name="probabilities"),
        ],
        name="lenet5",
    )


def build_alexnet(
    input_shape: tuple[int, int, int] = (227, 227, 3), num_classes: int = 1000
) -> keras.Model:
    """AlexNet (Krizhevsky et al., 2012) as one tower: 5 convolutions, 3 dense layers.

    About 62.4M parameters at 227x227x3 with 1000 classes (the "60 million" of the paper).
    """
    return keras.Sequential(
        [
            *_pixels_input(input_shape),
            layers.Conv2D(96, 11, strides=4, activation="relu", name="conv_1"),
            layers.MaxPooling2D(3, strides=2, name="pool_1"),
            layers.Conv2D(256, 5, padding="same", activation="relu", name="conv_2"),
            layers.MaxPooling2D(3, strides=2, name="pool_2"),
            layers.Conv2D(384, 3, padding="same", activation="relu", name="conv_3"),
            layers.Conv2D(384, 3, padding="same", activation="relu", name="conv_4"),
            layers.Conv2D(256, 3, padding="same", activation="relu", name="conv_5"),
            layers.MaxPooling2D(3, strides=2, name="pool_5"),
            layers.Flatten(name="flatten"),
            layers.Dense(4096, activation="relu", name="fc_6"),
            layers.Dropout(0.5, name="dropout_6"),
            layers.Dense(4096, activation="relu", name="fc_7"),
            layers.Dropout(0.5, name="dropout_7"),
            layers.Dense(num_classes, activation="softmax", name="probabilities"),
        ],
        name="alexnet",
    )


VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))  # (filters, convolutions)


def build_vgg16(
    input_shape: tuple[int, int, int] = (224, 224, 3), num_classes: int = 1000
) -> keras.Model:
    """VGG-16 (Simonyan & Zisserman, 2014): 13 3x3 convolutions in 5 blocks, 3 dense.

    138,357,544 parameters at 224x224x3 with 1000 classes.
    """
    stack = list(_pixels_input(input_shape))
    for block, (filters, convolutions) in enumerate(VGG16_BLOCKS, start=1):
        for index in range(1, convolutions + 1):
            stack.append(
                layers.Conv2D(
                    filters, 3, padding="same", activation="relu", name=f"block{block}_conv{index}"
                )
            )
        stack.append(layers.MaxPooling2D(2, name=f"block{block}_pool"))
    stack += [
        layers.Flatten(name="flatten"),
        layers.Dense(4096, activation="relu", name="fc_1"),
        layers.Dense(4096, activation="relu", name="fc_2"),
        layers.Dense(num_classes, activation="softmax", name="probabilities"),
    ]
    return keras.Sequential(stack, name="vgg16")
