"""Atomic, versioned export in TensorFlow Serving's layout, with exactly one signature."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from training.architectures import build_mnist_mlp
from training.export import existing_versions, export_model, next_version, write_saved_model


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


def test_failed_export_leaves_no_folder_behind(tmp_path: Path) -> None:
    from training.data import LabelledArrays

    def broken_card(*_: object) -> None:
        raise RuntimeError("card failed")

    test = LabelledArrays(
        images=np.zeros((2, 28, 28, 1), np.float32), labels=np.array([0, 1], np.int64)
    )
    with pytest.raises(RuntimeError, match="card failed"):
        export_model(
            build_mnist_mlp(),
            model_dir=tmp_path,
            name="mnist-mlp",
            history={"loss": [1.0]},
            test=test,
            class_names=[str(d) for d in range(10)],
            make_card=broken_card,  # type: ignore[arg-type]
        )
    assert list((tmp_path / "mnist-mlp").iterdir()) == []
