"""Load the two data sets into batched `tf.data` pipelines.

- MNIST comes from an `.npz` file in the `tf.keras.datasets.mnist` layout, or from the
  Keras download when no path is given.
- Chest X-rays come from a folder in the Kaggle release's layout:
  `<root>/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg`.

X-rays are decoded and resized with Pillow exactly as the service does with uploads
(`convert("L")`, `resize((W, H), Image.Resampling.BILINEAR)`), so the model is trained on the very
pixels it will be served. Scaling to 0..1 is not done here: it lives inside the models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf
from numpy.typing import NDArray
from PIL import Image

MNIST_CLASS_NAMES = [str(digit) for digit in range(10)]
MNIST_KEYS = ("x_train", "y_train", "x_test", "y_test")
XRAY_CLASS_NAMES = ["NORMAL", "PNEUMONIA"]  # output order; index 1 is the positive class
XRAY_SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


class DataError(ValueError):
    """The data on disk is not laid out as expected; the message says what was found."""


@dataclass
class LabelledArrays:
    """Images `[N, H, W, C]` (raw 0..255 float32) with integer labels `[N]`."""

    images: NDArray[np.float32]
    labels: NDArray[np.int64]


@dataclass
class TrainingData:
    """Everything a training run needs from one data set, ready for `model.fit`."""

    name: str
    location: str
    class_names: list[str]
    train: tf.data.Dataset
    validation: tf.data.Dataset
    validation_description: str
    counts: dict[str, dict[str, int]]
    class_weights: dict[int, float] | None = None
    notes: dict[str, object] = field(default_factory=dict)


# --- MNIST -------------------------------------------------------------------------------


def load_mnist_arrays(path: Path | None) -> dict[str, NDArray[np.uint8]]:
    """Read MNIST from an npz (or download it when `path` is None) and check its layout."""
    if path is None:
        import keras

        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
        arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    else:
        if not path.is_file():
            raise DataError(f"MNIST file {path} does not exist; expected an .npz file")
        try:
            with np.load(path) as npz:
                arrays = {key: npz[key] for key in npz.files}
        except (OSError, ValueError) as error:
            raise DataError(f"{path} is not a readable .npz file: {error}") from error
    _check_mnist_layout(arrays, str(path or "keras.datasets.mnist"))
    return arrays


def _check_mnist_layout(arrays: dict[str, NDArray[np.uint8]], where: str) -> None:
    missing = [key for key in MNIST_KEYS if key not in arrays]
    if missing:
        raise DataError(
            f"{where} must hold arrays {', '.join(MNIST_KEYS)}; "
            f"missing {', '.join(missing)}, found {', '.join(sorted(arrays)) or 'nothing'}"
        )
    pairs = [("x_train", "y_train"), ("x_test", "y_test")]
    if "x_val" in arrays or "y_val" in arrays:
        pairs.append(("x_val", "y_val"))
    for x_key, y_key in pairs:
        images, labels = arrays.get(x_key), arrays.get(y_key)
        if images is None or labels is None:
            raise DataError(f"{where} holds only one of {x_key}/{y_key}; give both or neither")
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise DataError(f"{where}: {x_key} must have shape (N, 28, 28), found {images.shape}")
        if labels.shape != (images.shape[0],):
            raise DataError(
                f"{where}: {y_key} must have shape ({images.shape[0]},), found {labels.shape}"
            )
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise DataError(f"{where}: {y_key} must hold digits 0..9")


def mnist_split(
    arrays: dict[str, NDArray[np.uint8]], prefix: str, indices: NDArray[np.int64] | None = None
) -> LabelledArrays:
    """One split (`train`, `val` or `test`) as float32 images with a channel axis."""
    images = arrays[f"x_{prefix}"]
    labels = arrays[f"y_{prefix}"]
    if indices is not None:
        images, labels = images[indices], labels[indices]
    return LabelledArrays(
        images=images.astype(np.float32)[..., np.newaxis], labels=labels.astype(np.int64)
    )


def load_mnist_training(
    path: Path | None, *, validation_split: float, batch_size: int, seed: int
) -> TrainingData:
    """MNIST training and validation pipelines.

    Validation is `x_val`/`y_val` when the npz holds them, otherwise a seeded random
    `validation_split` share held out of the training arrays (the chapter used 0.3).
    """
    arrays = load_mnist_arrays(path)
    if "x_val" in arrays:
        train = mnist_split(arrays, "train")
        validation = mnist_split(arrays, "val")
        description = "given validation set (x_val, y_val)"
    else:
        if not 0.0 < validation_split < 1.0:
            raise DataError(f"validation split must be between 0 and 1, got {validation_split}")
        order = np.random.default_rng(seed).permutation(len(arrays["y_train"]))
        held_out = round(len(order) * validation_split)
        train = mnist_split(arrays, "train", order[held_out:])
        validation = mnist_split(arrays, "train", order[:held_out])
        description = f"random {validation_split:.0%} of x_train held out (seed {seed})"
    test = mnist_split(arrays, "test")
    return TrainingData(
        name="mnist",
        location=str(path) if path else "keras.datasets.mnist.load_data()",
        class_names=MNIST_CLASS_NAMES,
        train=arrays_to_dataset(train, batch_size, shuffle_seed=seed),
        validation=arrays_to_dataset(validation, batch_size),
        validation_description=description,
        counts={
            "train": count_labels(train.labels, MNIST_CLASS_NAMES),
            "val": count_labels(validation.labels, MNIST_CLASS_NAMES),
            "test": count_labels(test.labels, MNIST_CLASS_NAMES),
        },
    )


def arrays_to_dataset(
    data: LabelledArrays, batch_size: int, shuffle_seed: int | None = None
) -> tf.data.Dataset:
    dataset = tf.data.Dataset.from_tensor_slices((data.images, data.labels))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(data.labels), seed=shuffle_seed)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


# --- Chest X-rays ------------------------------------------------------------------------


def list_xray_split(root: Path, split: str) -> tuple[list[str], NDArray[np.int64]]:
    """Image paths and labels of one split, in a stable (sorted) order."""
    check_xray_folder(root, [split])
    paths: list[str] = []
    labels: list[int] = []
    for label, class_name in enumerate(XRAY_CLASS_NAMES):
        files = sorted(
            p for p in (root / split / class_name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
        )
        paths.extend(str(p) for p in files)
        labels.extend([label] * len(files))
    return paths, np.asarray(labels, dtype=np.int64)


def check_xray_folder(root: Path, splits: Sequence[str]) -> None:
    """Raise `DataError` naming what is missing unless every split has both class folders
    with at least one image each."""
    expected = f"expected {root}/<split>/<class>/*.jpeg for splits {', '.join(splits)} "
    expected += f"and classes {', '.join(XRAY_CLASS_NAMES)}"
    if not root.is_dir():
        raise DataError(f"chest X-ray folder {root} does not exist; {expected}")
    for split in splits:
        split_dir = root / split
        if not split_dir.is_dir():
            raise DataError(f"{expected}; found no {split}/ (found: {_listing(root)})")
        for class_name in XRAY_CLASS_NAMES:
            class_dir = split_dir / class_name
            if not class_dir.is_dir():
                raise DataError(
                    f"{expected}; found no {split}/{class_name}/ (found: {_listing(split_dir)})"
                )
            if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in class_dir.iterdir()):
                raise DataError(
                    f"{expected}; {split}/{class_name}/ holds no {'/'.join(IMAGE_SUFFIXES)} images"
                )


def _listing(folder: Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    return ", ".join(names) or "nothing"


def load_image_like_service(path: str, size: tuple[int, int], channels: int) -> NDArray[np.uint8]:
    """Decode and resize one image exactly as the service treats an upload."""
    height, width = size
    with Image.open(path) as image:
        converted = image.convert("L" if channels == 1 else "RGB")
        resized = converted.resize((width, height), Image.Resampling.BILINEAR)
    pixels = np.asarray(resized, dtype=np.uint8)
    return pixels.reshape(height, width, channels)


def xray_dataset(
    paths: Sequence[str],
    labels: NDArray[np.int64],
    *,
    image_size: tuple[int, int],
    channels: int,
    batch_size: int,
    shuffle_seed: int | None = None,
    augment: tf.keras.layers.Layer | None = None,
) -> tf.data.Dataset:
    """Decode, resize, cache, (shuffle, augment,) batch and prefetch one split."""
    height, width = image_size

    def decode(path: tf.Tensor) -> tf.Tensor:
        pixels = tf.numpy_function(
            lambda p: load_image_like_service(p.decode(), image_size, channels),
            [path],
            tf.uint8,
        )
        pixels.set_shape((height, width, channels))
        return pixels

    dataset = tf.data.Dataset.from_tensor_slices((list(paths), labels))
    dataset = dataset.map(lambda p, y: (decode(p), y), num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.cache()  # uint8 in memory: a quarter of the float32 size
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(labels), seed=shuffle_seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size).map(lambda x, y: (tf.cast(x, tf.float32), y))
    if augment is not None:
        dataset = dataset.map(
            lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE
        )
    return dataset.prefetch(tf.data.AUTOTUNE)


def xray_augmentation(seed: int) -> tf.keras.layers.Layer:
    """Small random shifts, zoom, rotation and contrast: plausible variations of a scan."""
    import keras

    return keras.Sequential(
        [
            keras.layers.RandomTranslation(0.05, 0.05, fill_mode="constant", seed=seed),
            keras.layers.RandomZoom(0.1, fill_mode="constant", seed=seed + 1),
            keras.layers.RandomRotation(0.03, fill_mode="constant", seed=seed + 2),
            keras.layers.RandomContrast(0.1, value_range=(0, 255), seed=seed + 3),
        ],
        name="augmentation",
    )


def balanced_class_weights(
    labels: NDArray[np.int64], num_classes: int, power: float = 1.0
) -> dict[int, float]:
    """Weights `(N / (classes * N_c)) ** power`.

    `power` 1 makes each class add the same total to the loss; 0.5 (the square root)
    corrects the imbalance half-way on a log scale; 0 gives every class weight 1.
    """
    if power < 0:
        raise ValueError(f"class weight power must be >= 0, got {power}")
    counts = np.bincount(labels, minlength=num_classes)
    return {
        index: float((len(labels) / (num_classes * count)) ** power)
        for index, count in enumerate(counts)
        if count
    }


def load_xray_training(
    root: Path,
    *,
    image_size: tuple[int, int],
    channels: int,
    batch_size: int,
    seed: int,
    augment: bool,
    class_weighting: bool,
    class_weight_power: float = 1.0,
) -> TrainingData:
    """Chest X-ray pipelines: train (shuffled, optionally augmented) and val."""
    check_xray_folder(root, XRAY_SPLITS)
    train_paths, train_labels = list_xray_split(root, "train")
    val_paths, val_labels = list_xray_split(root, "val")
    _, test_labels = list_xray_split(root, "test")
    common = {"image_size": image_size, "channels": channels, "batch_size": batch_size}
    train = xray_dataset(
        train_paths,
        train_labels,
        shuffle_seed=seed,
        augment=xray_augmentation(seed) if augment else None,
        **common,  # type: ignore[arg-type]
    )
    validation = xray_dataset(val_paths, val_labels, **common)  # type: ignore[arg-type]
    return TrainingData(
        name="chest-xray-pneumonia (Kermany et al., Mendeley Data v2, 2018, CC BY 4.0)",
        location=str(root),
        class_names=XRAY_CLASS_NAMES,
        train=train,
        validation=validation,
        validation_description="the data folder's val/ split",
        counts={
            "train": count_labels(train_labels, XRAY_CLASS_NAMES),
            "val": count_labels(val_labels, XRAY_CLASS_NAMES),
            "test": count_labels(test_labels, XRAY_CLASS_NAMES),
        },
        class_weights=balanced_class_weights(
            train_labels, len(XRAY_CLASS_NAMES), class_weight_power
        )
        if class_weighting
        else None,
        notes={"augmentation": augment},
    )


def load_xray_split_arrays(
    root: Path, split: str, *, image_size: tuple[int, int], channels: int
) -> LabelledArrays:
    """A whole split in memory (for evaluation), pixels as the service would make them."""
    paths, labels = list_xray_split(root, split)
    images = np.stack([load_image_like_service(p, image_size, channels) for p in paths])
    return LabelledArrays(images=images.astype(np.float32), labels=labels)


def count_labels(labels: NDArray[np.int64], class_names: Sequence[str]) -> dict[str, int]:
    counts = np.bincount(labels, minlength=len(class_names))
    return {name: int(count) for name, count in zip(class_names, counts, strict=True)}
