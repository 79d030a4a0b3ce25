"""Data loading: layouts are checked with errors that say what was expected and found."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from app.contract.images import Upload
from app.contract.preprocessing import prepare_batch
from tests.training.conftest import write_tiny_mnist
from training.data import (
    DataError,
    balanced_class_weights,
    image_input_spec,
    list_xray_split,
    load_mnist_arrays,
    load_mnist_training,
    load_xray_training,
    mnist_split,
    read_images,
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


def test_mnist_folder_is_called_a_folder_and_its_npz_suggested(tmp_path: Path) -> None:
    write_tiny_mnist(tmp_path / "mnist.npz")
    (tmp_path / "notes.txt").write_text("not data")
    expected = f"{tmp_path} is a folder; expected an .npz file; did you mean --data {tmp_path}/"
    with pytest.raises(DataError, match=re.escape(expected + "mnist.npz?")):
        load_mnist_arrays(tmp_path)


def test_mnist_folder_without_one_npz_lists_what_it_holds(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"is a folder; expected an \.npz file$"):
        load_mnist_arrays(tmp_path)
    write_tiny_mnist(tmp_path / "a.npz")
    write_tiny_mnist(tmp_path / "b.npz")
    with pytest.raises(DataError, match=r"it holds a\.npz, b\.npz: pass one of them"):
        load_mnist_arrays(tmp_path)


def test_chest_xray_folder_given_as_mnist_is_recognised(tiny_xray: Path) -> None:
    with pytest.raises(DataError, match="looks like a chest X-ray folder"):
        load_mnist_arrays(tiny_xray)


def test_failed_mnist_download_asks_for_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline() -> None:
        raise Exception("URL fetch failure: [Errno -2] Name or service not known")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    with pytest.raises(DataError) as error:
        load_mnist_arrays(None)
    assert str(error.value) == (
        "could not download MNIST (URL fetch failure: [Errno -2] Name or service not known); "
        "pass --data path/to/mnist.npz"
    )


def test_xray_data_that_is_a_file_is_not_called_missing(tiny_mnist: Path) -> None:
    with pytest.raises(DataError, match=r"mnist\.npz is a file, not a folder; expected"):
        list_xray_split(tiny_mnist, "test")


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


def test_images_are_read_exactly_as_the_service_reads_uploads(tmp_path: Path) -> None:
    """Training's arrays are the contract's pixels: colour JPEGs decoded at reduced size,
    16-bit PNGs, all through `prepare_image`, as the data plane calls it."""
    rng = np.random.default_rng(3)
    files = {
        "scan.jpeg": encoded(rng.integers(0, 256, (300, 420, 3), dtype=np.uint8), "JPEG"),
        "deep.png": encoded(rng.integers(0, 4096, (90, 60), dtype=np.uint16), "PNG"),
    }
    paths = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        paths.append(str(tmp_path / name))
    spec = image_input_spec((16, 24), channels=1)
    pixels = read_images(tmp_path, paths, spec)
    served = prepare_batch(
        [Upload(filename=name, data=data) for name, data in files.items()], spec, "resize"
    ).pixels
    assert pixels.dtype == np.uint8 and pixels.shape == (2, 16, 24, 1)
    np.testing.assert_array_equal(pixels, served)


def test_mnist_digits_are_the_pixels_the_service_makes_of_their_pngs() -> None:
    """A digit off-centre by mass is moved by the service's normalisation: training sees
    it moved too, exactly as `prepare_batch` makes it from the PNG a client would send."""
    digits = np.zeros((2, 28, 28), dtype=np.uint8)
    digits[0, 4:24, 3:10] = 255  # a stroke far left of centre
    digits[1, 6:22, 12:16] = 200
    arrays = {"x_test": digits, "y_test": np.array([1, 7], dtype=np.uint8)}
    split = mnist_split(arrays, "test")
    spec = image_input_spec((28, 28), channels=1)
    uploads = [Upload(filename=f"{i}.png", data=encoded(d, "PNG")) for i, d in enumerate(digits)]
    served = prepare_batch(uploads, spec, "mnist-digit").pixels
    assert split.images.shape == (2, 28, 28, 1) and split.images.dtype == np.float32
    np.testing.assert_array_equal(split.images, served)
    assert not np.array_equal(split.images[0, :, :, 0], digits[0])  # it was re-centred
    assert split.labels.tolist() == [1, 7]


def test_an_unreadable_image_in_a_data_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "ok.png").write_bytes(encoded(np.zeros((8, 8), dtype=np.uint8), "PNG"))
    (tmp_path / "notes.jpeg").write_bytes(b"not an image")
    paths = [str(tmp_path / "ok.png"), str(tmp_path / "notes.jpeg")]
    with pytest.raises(DataError, match=re.escape("notes.jpeg: not a PNG, JPEG")):
        read_images(tmp_path, paths, image_input_spec((8, 8), channels=1))


def encoded(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()
