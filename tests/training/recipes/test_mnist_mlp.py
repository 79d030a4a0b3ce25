"""The MNIST MLP recipe: the chapter's network, its flags and its card text."""

from __future__ import annotations

import keras
import pytest

from training.cli import build_parser, train_request
from training.recipes.mnist_mlp import RECIPE, build_mnist_mlp


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


def test_flags_override_the_recipe_defaults_and_land_in_the_card_text() -> None:
    parser = build_parser()
    defaults = train_request(parser.parse_args(["train", "mnist-mlp"]))
    assert defaults.options == {"hidden_units": [128, 60], "dropout": 0.2, "validation_split": 0.3}
    assert defaults.fit.epochs == 30 and defaults.fit.ema_momentum is None
    args = parser.parse_args(["train", "mnist-mlp", "--hidden-units", "64", "--dropout", "0"])
    request = train_request(args)
    options = RECIPE.options(request)
    assert options.hidden_units == [64] and options.dropout == 0
    model = RECIPE.build(options)
    assert [layer.units for layer in model.layers if isinstance(layer, keras.layers.Dense)] == [
        64,
        10,
    ]
    text = RECIPE.card_text(options)
    assert "Flatten -> Dense 64 relu -> Dense 10 softmax." in text.description
    assert "Dropout" not in text.description
    assert text.preprocessing.kind == "mnist-digit"
