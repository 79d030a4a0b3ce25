"""Atomic, versioned export in TensorFlow Serving's layout, with exactly one signature and
the LiteRT model checked against it."""

from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from app.contract.model_card import LITERT_MODEL_FILENAME, LITERT_MODEL_ROLE, InputSpec, ModelCard
from tests.app.tiny_models import tiny_card
from training import export
from training.evaluate import predict_with_saved_model
from training.export import (
    existing_versions,
    next_version,
    publish,
    staging_folder,
    write_saved_model,
    write_serving_files,
)
from training.recipes.mnist_mlp import build_mnist_mlp


def test_versions_are_integer_folders_and_hidden_ones_are_ignored(tmp_path: Path) -> None:
    assert next_version(tmp_path / "absent") == 1
    for name in ("1", "3", ".tmp-abc", "notes"):
        (tmp_path / name).mkdir()
    assert existing_versions(tmp_path) == [1, 3]
    assert next_version(tmp_path) == 4


def test_saved_model_signature_names(tmp_path: Path) -> None:
    model = build_mnist_mlp()
    write_saved_model(model, tmp_path / "sm")
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    serve = loaded.signatures["serving_default"]
    assert list(loaded.signatures) == ["serving_default"]
    _, inputs = serve.structured_input_signature
    assert list(inputs) == ["pixels"]
    assert inputs["pixels"].shape.as_list() == [None, 28, 28, 1]
    assert inputs["pixels"].dtype == tf.float32
    assert list(serve.structured_outputs) == ["probabilities"]
    pixels = np.random.default_rng(0).uniform(0, 255, (4, 28, 28, 1)).astype(np.float32)
    np.testing.assert_allclose(
        serve(pixels=tf.constant(pixels))["probabilities"].numpy(),
        model.predict(pixels, verbose=0),
        atol=1e-6,
    )


DIGITS = [str(d) for d in range(10)]
SPEC = InputSpec(height=28, width=28, channels=1, color_mode="grayscale")


def test_failed_export_leaves_no_folder_behind(tmp_path: Path) -> None:
    check_images = np.zeros((2, 28, 28, 1), np.float32)
    (tmp_path / "m" / "1").mkdir(parents=True)  # an existing model keeps its folder
    with (
        pytest.raises(RuntimeError, match="card failed"),
        staging_folder(tmp_path / "m") as staging,
    ):
        write_serving_files(build_mnist_mlp(), staging, history={}, check_images=check_images)
        assert (staging / "saved_model.pb").is_file()
        raise RuntimeError("card failed")
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["1"]


def export_untrained_mlp(model_dir: Path) -> Path:
    check_images = np.random.default_rng(1).uniform(0, 255, (6, 28, 28, 1)).astype(np.float32)
    with staging_folder(model_dir / "mnist-mlp") as staging:
        artifacts = write_serving_files(
            build_mnist_mlp(), staging, history={"loss": [1.0]}, check_images=check_images
        )
        card = tiny_card("mnist-mlp", 1, DIGITS, SPEC, "mnist-digit", artifacts)
        return publish(staging, card)


def test_publish_takes_the_next_free_version_and_writes_it_into_the_card(tmp_path: Path) -> None:
    (tmp_path / "mnist-mlp" / "1").mkdir(parents=True)
    (tmp_path / "mnist-mlp" / "3").mkdir()
    version_dir = export_untrained_mlp(tmp_path)
    assert version_dir == tmp_path / "mnist-mlp" / "4"
    assert ModelCard.read(version_dir).version == 4
    assert sorted(p.name for p in (tmp_path / "mnist-mlp").iterdir()) == ["1", "3", "4"]


def test_export_writes_a_litert_model_that_answers_as_the_saved_model(tmp_path: Path) -> None:
    version_dir = export_untrained_mlp(tmp_path)
    card = ModelCard.read(version_dir)
    assert card.artifacts[LITERT_MODEL_ROLE] == LITERT_MODEL_FILENAME == "model.tflite"
    assert card.artifacts["keras_model"] == "model.keras"
    runner = Interpreter(model_path=str(version_dir / LITERT_MODEL_FILENAME)).get_signature_runner(
        "serving_default"
    )
    pixels = np.random.default_rng(2).uniform(0, 255, (5, 28, 28, 1)).astype(np.float32)
    np.testing.assert_allclose(
        runner(pixels=pixels)["probabilities"],
        predict_with_saved_model(version_dir, pixels),
        atol=1e-5,
    )
    assert [p.name for p in tmp_path.joinpath("mnist-mlp").iterdir()] == ["1"]


def test_a_conversion_that_disagrees_is_not_exported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    other = tmp_path / "other"
    keras.utils.set_random_seed(7)
    write_saved_model(build_mnist_mlp(), other)
    foreign = export.convert_to_litert(other)
    monkeypatch.setattr(export, "convert_to_litert", lambda _: foreign)
    with caplog.at_level(logging.WARNING, logger="training.export"):
        version_dir = export_untrained_mlp(tmp_path / "models")
    assert not (version_dir / LITERT_MODEL_FILENAME).exists()
    assert LITERT_MODEL_ROLE not in ModelCard.read(version_dir).artifacts
    [warning] = [r.getMessage() for r in caplog.records if r.name == "training.export"]
    assert warning.startswith(
        "model.tflite not exported: LiteRT output differs from the SavedModel's by "
    )


def test_a_failed_first_export_leaves_no_model_folder(tmp_path: Path) -> None:
    failing = pytest.raises(RuntimeError, match="evaluation failed")
    with failing, staging_folder(tmp_path / "new-model") as staging:
        assert [p.name for p in (tmp_path / "new-model").iterdir()] == [staging.name]
        raise RuntimeError("evaluation failed")
    assert list(tmp_path.iterdir()) == []
