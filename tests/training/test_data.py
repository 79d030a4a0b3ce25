"""Data loading: layouts are checked with errors that say what was expected and found."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.training.conftest import write_tiny_mnist
from training.data import (
    DataError,
    balanced_class_weights,
    list_xray_split,
    load_image_like_service,
    load_mnist_arrays,
    load_mnist_training,
    load_xray_training,
)


def test_mnist_npz_is_split_into_train_and_validation(tiny_mnist: Path) -> None:
    data = load_mnist_training(tiny_mnist, validation_split=0.3, batch_size=8, seed=1)
    assert sum(data.counts["train"].values()) == 63
    assert sum(data.counts["val"].values()) == 27
    assert sum(data.counts["test"].values()) == 30
    images, _ = next(iter(data.train))
    assert images.shape[1:] == (28, 28, 1)
    assert float(images.numpy().max()) > 1.0  # raw pixels: scaling is inside the model


def test_mnist_npz_with_validation_arrays_uses_them(tmp_path: Path) -> None:
    base = np.load(write_tiny_mnist(tmp_path / "base.npz"))
    path = tmp_path / "with_val.npz"
    np.savez(path, **base, x_val=base["x_test"][:5], y_val=base["y_test"][:5])
    data = load_mnist_training(path, validation_split=0.3, batch_size=8, seed=1)
    assert sum(data.counts["val"].values()) == 5
    assert "x_val" in data.validation_description


def test_missing_mnist_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_mnist_arrays(tmp_path / "nope.npz")


def test_npz_without_expected_keys_names_them(tmp_path: Path) -> None:
    path = tmp_path / "wrong.npz"
    np.savez(path, images=np.zeros((3, 28, 28), np.uint8), labels=np.zeros(3, np.uint8))
    with pytest.raises(DataError, match=r"missing x_train, y_train, x_test, y_test.*images"):
        load_mnist_arrays(path)


def test_npz_with_wrong_image_shape_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "flat.npz"
    np.savez(
        path,
        x_train=np.zeros((3, 784), np.uint8),
        y_train=np.zeros(3, np.uint8),
        x_test=np.zeros((2, 28, 28), np.uint8),
        y_test=np.zeros(2, np.uint8),
    )
    with pytest.raises(DataError, match=r"x_train must have shape \(N, 28, 28\)"):
        load_mnist_arrays(path)


def test_npz_with_mismatched_labels_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "short.npz"
    np.savez(
        path,
        x_train=np.zeros((3, 28, 28), np.uint8),
        y_train=np.zeros(2, np.uint8),
        x_test=np.zeros((2, 28, 28), np.uint8),
        y_test=np.zeros(2, np.uint8),
    )
    with pytest.raises(DataError, match="y_train must have shape"):
        load_mnist_arrays(path)


def test_file_that_is_not_npz_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "text.npz"
    path.write_text("hello")
    with pytest.raises(DataError, match=r"not a readable \.npz"):
        load_mnist_arrays(path)


def test_missing_xray_folder_is_reported(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist; expected"):
        load_xray_training(
            tmp_path / "nowhere",
            image_size=(16, 16),
            channels=1,
            batch_size=4,
            seed=0,
            augment=False,
            class_weighting=True,
        )


def test_missing_split_lists_what_was_found(tiny_xray: Path) -> None:
    shutil.rmtree(tiny_xray / "val")
    with pytest.raises(DataError, match=r"found no val/ \(found: test/, train/\)"):
        list_xray_split(tiny_xray, "val")


def test_missing_class_folder_lists_what_was_found(tiny_xray: Path) -> None:
    (tiny_xray / "train" / "NORMAL").rename(tiny_xray / "train" / "normal")
    with pytest.raises(DataError, match=r"found no train/NORMAL/ \(found: PNEUMONIA/, normal/\)"):
        list_xray_split(tiny_xray, "train")


def test_class_folder_without_images_is_reported(tiny_xray: Path) -> None:
    for image in (tiny_xray / "test" / "PNEUMONIA").iterdir():
        image.unlink()
    with pytest.raises(DataError, match="test/PNEUMONIA/ holds no"):
        list_xray_split(tiny_xray, "test")


def test_xray_training_data_counts_and_class_weights(tiny_xray: Path) -> None:
    data = load_xray_training(
        tiny_xray,
        image_size=(16, 20),
        channels=1,
        batch_size=4,
        seed=0,
        augment=True,
        class_weighting=True,
    )
    assert data.counts["train"] == {"NORMAL": 4, "PNEUMONIA": 5}
    assert data.class_weights is not None
    assert data.class_weights[0] > 1 > data.class_weights[1]
    images, _ = next(iter(data.train))
    assert images.shape[1:] == (16, 20, 1)


def test_balanced_class_weights_make_each_class_count_equally() -> None:
    labels = np.array([0] * 10 + [1] * 30)
    weights = balanced_class_weights(labels, 2)
    assert weights[0] * 10 == pytest.approx(weights[1] * 30)


def test_class_weight_power_softens_the_balanced_weights() -> None:
    labels = np.array([0] * 10 + [1] * 30)
    balanced = balanced_class_weights(labels, 2)
    assert balanced == pytest.approx({0: 2.0, 1: 2 / 3})
    assert balanced_class_weights(labels, 2, power=1.0) == balanced
    assert balanced_class_weights(labels, 2, power=0.5) == pytest.approx(
        {0: np.sqrt(2.0), 1: np.sqrt(2 / 3)}
    )
    assert balanced_class_weights(labels, 2, power=0.0) == {0: 1.0, 1: 1.0}
    with pytest.raises(ValueError, match="power"):
        balanced_class_weights(labels, 2, power=-1.0)


def test_images_are_resized_exactly_as_the_service_does(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    path = tmp_path / "scan.jpeg"
    Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(path)
    with Image.open(path) as image:
        expected = np.asarray(image.convert("L").resize((24, 16), Image.Resampling.BILINEAR))
    pixels = load_image_like_service(str(path), (16, 24), channels=1)
    np.testing.assert_array_equal(pixels[..., 0], expected)
