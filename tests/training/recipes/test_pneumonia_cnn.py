"""The chest X-ray CNN recipe: the chapter's network, its flags and its card text."""

from __future__ import annotations

from collections.abc import Callable

import keras
import pytest

from training.architectures import build_lenet5
from training.cli import build_parser, train_request
from training.recipes.pneumonia_cnn import (
    AUGMENTATION,
    MIN_IMAGE_SIZE,
    RECIPE,
    build_pneumonia_cnn,
)


def layer_kinds(model: keras.Model) -> list[str]:
    return [type(layer).__name__ for layer in model.layers]


def test_pneumonia_cnn_structure() -> None:
    model = build_pneumonia_cnn((64, 64), channels=1)
    assert layer_kinds(model) == [
        "Rescaling",
        "Conv2D",
        "MaxPooling2D",
        "Conv2D",
        "MaxPooling2D",
        "Conv2D",
        "Flatten",
        "Dense",
        "Dense",
    ]
    convolutions = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convolutions] == [32, 64, 128]
    assert all(c.kernel_size == (3, 3) and c.strides == (2, 2) for c in convolutions)
    assert model.input_shape == (None, 64, 64, 1)
    assert model.output_shape == (None, 2)


def test_pneumonia_cnn_dropout_comes_before_the_dense_layer() -> None:
    model = build_pneumonia_cnn((64, 64), channels=1, dropout=0.25)
    assert layer_kinds(model)[-4:] == ["Flatten", "Dropout", "Dense", "Dense"]
    assert model.get_layer("dropout").rate == pytest.approx(0.25)
    assert model.count_params() == build_pneumonia_cnn((64, 64), channels=1).count_params()


def test_image_size_minimums_match_the_architectures() -> None:
    builders: dict[str, Callable[[int], keras.Model]] = {
        "pneumonia-cnn": lambda size: build_pneumonia_cnn((size, size)),
        "lenet5": lambda size: build_lenet5((size, size, 1), 2),
    }
    for name, build in builders.items():
        build(MIN_IMAGE_SIZE[name])
        with pytest.raises(ValueError):
            build(MIN_IMAGE_SIZE[name] - 1)


def test_flags_and_card_text() -> None:
    argv = ["train", "pneumonia-cnn", "--image-size", "64", "72", "--augment"]
    request = train_request(build_parser().parse_args(argv))
    options = RECIPE.options(request)
    assert options.size == (64, 72) and options.augment
    assert options.class_weight_power == 0.5 and request.fit.ema_momentum == 0.99
    text = RECIPE.card_text(options)
    assert "on 64x72x1 images: Conv 32" in text.description
    assert "resize to 72x64" in text.preprocessing.description
    assert text.notes["augmentation"] == AUGMENTATION
    assert not RECIPE.default_option("augment")  # off unless asked for
    assert RECIPE.build(options).input_shape == (None, 64, 72, 1)
    with pytest.raises(ValueError, match="too small for vgg16"):
        RECIPE.check_options(RECIPE.Options(architecture="vgg16", image_size=[16, 64]))
