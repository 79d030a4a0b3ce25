"""The models shipped in `models/` meet their figures, and their cards tell the truth."""

from __future__ import annotations

import json
import re
from pathlib import Path

import keras
import numpy as np
import pytest

from app.contract.model_card import ModelCard
from tests.conftest import SHIPPED_MODELS, shipped_version
from training.data import load_mnist_arrays, load_xray_split_arrays, mnist_split
from training.evaluate import evaluate_saved_model, predict_with_saved_model

MODELS = SHIPPED_MODELS


MNIST = shipped_version("mnist-mlp")
PNEUMONIA = shipped_version("pneumonia-cnn")

pytestmark = pytest.mark.slow


def shipped(version_dir: Path) -> ModelCard:
    if not (version_dir / "model_card.json").is_file():
        pytest.fail(f"no shipped model at {version_dir}")
    return ModelCard.read(version_dir)


def test_mnist_card_meets_the_figure() -> None:
    card = shipped(MNIST)
    assert card.evaluation.count == 10_000
    assert card.evaluation.accuracy is not None and card.evaluation.accuracy >= 0.977


def test_pneumonia_card_meets_the_figures() -> None:
    card = shipped(PNEUMONIA)
    evaluation = card.evaluation
    assert evaluation.accuracy is not None and evaluation.accuracy >= 0.94
    for name, metrics in evaluation.per_class.items():
        assert metrics.recall is not None and metrics.recall >= 0.90, name
    assert evaluation.roc_auc is not None and evaluation.roc_auc >= 0.98
    assert card.class_names == ["NORMAL", "PNEUMONIA"]
    assert card.limitations and "not a diagnostic tool" in card.limitations


@pytest.mark.parametrize("version_dir", [MNIST, PNEUMONIA], ids=["mnist", "pneumonia"])
def test_shipped_files_are_small_and_complete(version_dir: Path) -> None:
    card = shipped(version_dir)
    assert (version_dir / "saved_model.pb").is_file() and (version_dir / "variables").is_dir()
    for artifact in card.artifacts.values():
        assert (version_dir / artifact).is_file()
    size = sum(p.stat().st_size for p in version_dir.rglob("*") if p.is_file())
    assert size < 20_000_000


def test_mnist_card_equals_a_fresh_evaluation_of_the_saved_model(real_data_dir: Path) -> None:
    card = shipped(MNIST)
    test = mnist_split(load_mnist_arrays(real_data_dir / "mnist.npz"), "test")
    report = evaluate_saved_model(MNIST, test, card.class_names)
    assert report.confusion_matrix == card.evaluation.confusion_matrix
    assert report.loss == pytest.approx(card.evaluation.loss, rel=1e-4)


def test_pneumonia_card_equals_a_fresh_evaluation_of_the_saved_model(
    real_data_dir: Path,
) -> None:
    card = shipped(PNEUMONIA)
    test = load_xray_split_arrays(
        real_data_dir / "chest_xray",
        "test",
        image_size=(card.input.height, card.input.width),
        channels=card.input.channels,
    )
    report = evaluate_saved_model(PNEUMONIA, test, card.class_names)
    assert report.confusion_matrix == card.evaluation.confusion_matrix
    assert report.roc_auc == pytest.approx(card.evaluation.roc_auc, abs=1e-6)


@pytest.mark.parametrize("version_dir", [MNIST, PNEUMONIA], ids=["mnist", "pneumonia"])
def test_saved_model_agrees_with_model_keras(version_dir: Path) -> None:
    card = shipped(version_dir)
    shape = (64, card.input.height, card.input.width, card.input.channels)
    pixels = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
    model = keras.models.load_model(version_dir / card.artifacts["keras_model"])
    np.testing.assert_allclose(
        predict_with_saved_model(version_dir, pixels), model.predict(pixels, verbose=0), atol=1e-5
    )


def _strings(node: object) -> list[str]:
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in (key, *_strings(value))]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    return [node] if isinstance(node, str) else []


def _looks_like_a_machine_path(text: str) -> bool:
    return bool(
        re.match(r"^(/|~|[A-Za-z]:[\\/]|\\\\)", text)
        or re.search(r"(^|[\s'\"(])/(home|root|tmp|work|Users|mnt|srv|var|data)/", text)
    )


def test_no_committed_card_holds_a_machine_path() -> None:
    """Cards travel with the model: a path on the training machine means nothing elsewhere."""
    cards = sorted(MODELS.glob("*/*/model_card.json"))
    assert cards, f"no model cards under {MODELS}"
    for path in cards:
        strings = _strings(json.loads(path.read_text(encoding="utf-8")))
        offending = [text for text in strings if _looks_like_a_machine_path(text)]
        assert offending == [], f"{path.relative_to(MODELS)} holds machine paths: {offending}"
        card = ModelCard.read(path.parent)
        assert card.training.data.fingerprint is not None
        assert card.training.data.fingerprint.startswith("sha256:")


@pytest.mark.parametrize(
    "text", ["/work/shared/data/chest_xray", "C:\\data\\mnist.npz", "~/data", "read from /tmp/x"]
)
def test_the_machine_path_check_catches_paths(text: str) -> None:
    assert _looks_like_a_machine_path(text)
