"""The builders make the chapter's classic networks: layer structure and parameter counts."""

from __future__ import annotations

import keras

from training.architectures import build_alexnet, build_lenet5, build_vgg16


def layer_kinds(model: keras.Model) -> list[str]:
    return [type(layer).__name__ for layer in model.layers]


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
