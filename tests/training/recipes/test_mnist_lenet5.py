"""The LeNet-5 digit recipe: the chapter's network on 28x28 digits, trainable end to end."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from app.contract.model_card import ModelCard
from training.__main__ import main
from training.recipes import RECIPES
from training.recipes.mnist_lenet5 import RECIPE, build_mnist_lenet5


def test_lenet5_reads_28x28_digits_padded_to_its_32x32() -> None:
    model = build_mnist_lenet5()
    assert model.input_shape == (None, 28, 28, 1) and model.output_shape == (None, 10)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == [
        "ZeroPadding2D",
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
    assert [c.filters for c in convolutions] == [6, 16, 120]
    assert model.count_params() == 61_706  # LeCun et al.'s 32x32 network, unchanged
    # a white page: the padding reads as more paper, not as ink
    out = np.asarray(model.get_layer("pad_to_32")(np.zeros((1, 28, 28, 1), np.float32)))
    assert out.shape == (1, 32, 32, 1) and not out.any()


def test_the_recipe_is_in_the_table_and_trains_through_the_shared_pipeline(
    tiny_mnist: Path, tmp_path: Path
) -> None:
    assert RECIPES["mnist-lenet5"] is RECIPE
    argv = ["train", "mnist-lenet5", "--data", str(tiny_mnist), "--epochs", "1"]
    argv += ["--batch-size", "8", "--verbose", "0", "--validation-split", "0.2"]
    argv += ["--model-dir", str(tmp_path / "models"), "--runs-dir", str(tmp_path / "runs")]
    assert main(argv) == 0
    card = ModelCard.read(tmp_path / "models" / "mnist-lenet5" / "1")
    assert card.architecture == "lenet5" and card.preprocessing.kind == "mnist-digit"
    assert (card.input.height, card.input.width, card.input.channels) == (28, 28, 1)
    assert card.parameter_count == 61_706
    assert card.training.hyperparameters["validation_split"] == 0.2
    assert card.training.batch_size == 8
    assert "LeNet-5" in card.description and card.limitations
