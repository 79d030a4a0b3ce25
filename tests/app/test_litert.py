"""LiteRT pieces: the runner, the conversion cache's key and its atomic writes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import app.litert
from app.contract.model_card import LITERT_MODEL_FILENAME, ModelCard
from app.litert import LiteRTRunner, conversion_key, write_atomically
from tests.app.tiny_models import TINY_DIGITS


@pytest.fixture
def version_dir(tiny_model_dir: Path) -> Path:
    return tiny_model_dir / TINY_DIGITS / "1"


def test_the_runner_resizes_to_each_batch(version_dir: Path) -> None:
    runner = LiteRTRunner(version_dir / LITERT_MODEL_FILENAME, ModelCard.read(version_dir))
    rng = np.random.default_rng(0)
    for size in (1, 7, 1, 32):
        pixels = rng.uniform(0, 255, (size, 28, 28, 1)).astype(np.float32)
        probabilities = runner(pixels)
        assert probabilities.shape == (size, 10) and probabilities.dtype == np.float32
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_a_runner_for_a_card_naming_other_tensors_is_refused(version_dir: Path) -> None:
    card = ModelCard.read(version_dir)
    card = card.model_copy(update={"output_name": "logits"})
    with pytest.raises(ValueError, match="the model card says 'pixels' -> 'logits'"):
        LiteRTRunner(version_dir / LITERT_MODEL_FILENAME, card)


def test_the_cache_key_follows_the_weights_and_the_graph(version_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(version_dir, copy)
    key = conversion_key(version_dir, "serving_default")
    assert conversion_key(copy, "serving_default") == key, "same files, same key"
    assert conversion_key(copy, "other") != key
    (copy / "model_card.json").write_text("{}")
    assert conversion_key(copy, "serving_default") == key, "the card is not converted"
    [weights] = (copy / "variables").glob("variables.data-*")
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x01")
    assert conversion_key(copy, "serving_default") != key


def test_a_failed_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "model.tflite"
    write_atomically(target, b"first")

    def full_disk(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(app.litert.os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_atomically(target, b"second")
    assert target.read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite"]
