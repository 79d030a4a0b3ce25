"""The builders make the chapter's networks: layer structure and parameter counts."""

from __future__ import annotations

import keras
import pytest

from training.architectures import (
    build_alexnet,
    build_lenet5,
    build_mnist_mlp,
    build_pneumonia_cnn,
    build_vgg16,
)


def layer_kinds(model: keras.Model) -> list[str]:
    return [type(layer).__name__ for layer in model.layers]


def test_mnist_mlp_matches_the_chapter() -> None:
    model = build_mnist_mlp(dropout=0.0)
    assert layer_kinds(model) == ["Rescaling", "Flatten", "Dense", "Dense", "Dense"]
    assert [layer.units for layer in model.layers if isinstance(layer, keras.layers.Dense)] == [
        128,
        60,
        10,
    ]
    # 784*128+128 + 128*60+60 + 60*10+10
    assert model.count_params() == 100_480 + 7_740 + 610


def test_mnist_mlp_dropout_follows_the_first_hidden_layer() -> None:
    model = build_mnist_mlp(dropout=0.2)
    assert layer_kinds(model)[2:4] == ["Dense", "Dropout"]
    assert model.get_layer("dropout").rate == pytest.approx(0.2)


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


def test_lenet5_structure_and_parameters() -> None:
    model = build_lenet5((32, 32, 1), num_classes=10)
    assert layer_kinds(model) == [
        "Rescaling",
        "Conv2D",
        "AveragePooling2D",
        "Conv2D",
        "AveragePooling2D",
        "Conv2D",
        "Flatten",
        "Dense",
        "Dense",
    ]
    convolutions = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert all(c.kernel_size == (5, 5) for c in convolutions)
    assert all(c.activation.__name__ == "tanh" for c in convolutions)
    assert model.count_params() == 61_706


def test_alexnet_structure_and_parameters() -> None:
    model = build_alexnet((227, 227, 3), num_classes=1000)
    kinds = layer_kinds(model)
    assert kinds.count("Conv2D") == 5
    assert kinds.count("Dense") == 3
    assert model.get_layer("conv_1").kernel_size == (11, 11)
    assert model.count_params() == 62_378_344  # the paper's "60 million"


def test_vgg16_structure_and_parameters() -> None:
    model = build_vgg16((224, 224, 3), num_classes=1000)
    kinds = layer_kinds(model)
    assert kinds.count("Conv2D") == 13
    assert kinds.count("Dense") == 3
    assert kinds.count("MaxPooling2D") == 5
    assert model.count_params() == 138_357_544
    del model
    keras.backend.clear_session()
