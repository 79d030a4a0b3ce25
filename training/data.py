"""Load the two data sets into batched `tf.data` pipelines.

- MNIST comes from an `.npz` file in the `tf.keras.datasets.mnist` layout, or from the
  Keras download when no path is given.
- Chest X-rays come from a folder in the Kaggle release's layout:
  `<root>/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg`.

X-ray files become pixels through `app.contract.preprocessing.prepare_image`, the very
function the service reads uploads with, so the model is trained on exactly the pixels it
will be served (the same bytes give bit-identical arrays). Scaling to 0..1 is not done
here: it lives inside the models.

Each data set is recorded in the model card by name, counts and a content fingerprint
(sha256), never by where it lay on the machine that trained the model.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import tensorflow as tf
from numpy.typing import NDArray
from PIL import Image

from app.contract.digits import FIELD_SIZE
from app.contract.images import ImageError, Upload
from app.contract.model_card import InputSpec, PreprocessingKind
from app.contract.preprocessing import PreparedImage, prepare_image

MNIST_CLASS_NAMES = [str(digit) for digit in range(10)]
MNIST_KEYS = ("x_train", "y_train", "x_test", "y_test")
MNIST_SIDE = FIELD_SIZE  # the digit normalisation's output: what MNIST models read
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
    fingerprint: str  # "sha256:<hex>" of what was read (see `file_fingerprint`)
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

        try:
            (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
        except Exception as error:  # Keras raises a bare Exception when a fetch fails
            raise DataError(
                f"could not download MNIST ({error}); pass --data path/to/mnist.npz"
            ) from error
        arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    else:
        if path.is_dir():
            hint = _mnist_folder_hint(path)
            raise DataError(f"MNIST data {path} is a folder; expected an .npz file{hint}")
        if not path.is_file():
            raise DataError(f"MNIST file {path} does not exist; expected an .npz file")
        try:
            with np.load(path) as npz:
                arrays = {key: npz[key] for key in npz.files}
        except (OSError, ValueError) as error:
            raise DataError(f"{path} is not a readable .npz file: {error}") from error
    _check_mnist_layout(arrays, str(path or "keras.datasets.mnist"))
    return arrays


def _mnist_folder_hint(folder: Path) -> str:
    """What a folder given as MNIST data holds: its one .npz, several, or X-ray splits.

    A hint only: a folder is never read in place of the file, so no guess goes unnoticed.
    """
    npz_files = sorted(p.name for p in folder.glob("*.npz") if p.is_file())
    if len(npz_files) == 1:
        return f"; did you mean --data {folder / npz_files[0]}?"
    if npz_files:
        return f"; it holds {', '.join(npz_files)}: pass one of them"
    if any((folder / split).is_dir() for split in XRAY_SPLITS):
        return "; it looks like a chest X-ray folder, the data of pneumonia-cnn models"
    return ""


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
    """One split (`train`, `val` or `test`) as the service would see each digit sent as a
    PNG (`served_digits`), float32 `[N, 28, 28, 1]`."""
    images = arrays[f"x_{prefix}"]
    labels = arrays[f"y_{prefix}"]
    if indices is not None:
        images, labels = images[indices], labels[indices]
    return LabelledArrays(images=served_digits(images), labels=labels.astype(np.int64))


def served_digits(images: NDArray[np.uint8]) -> NDArray[np.float32]:
    """MNIST's 28x28 arrays as the service makes model input from a PNG of each.

    Through the contract's `prepare_image` (`mnist-digit` preprocessing) on PNG bytes, so
    a model is trained, validated and tested on the very pixels it is served: the digit
    normalisation re-centres about 4 in 10 MNIST test digits by a pixel or so, enough to
    move the test accuracy by 0.0005 if training skipped it.
    """

    def as_png(image: NDArray[np.uint8]) -> Upload:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
        return Upload(filename="digit.png", data=buffer.getvalue())

    spec = image_input_spec((MNIST_SIDE, MNIST_SIDE), 1)
    pixels, _ = prepare_all(images, as_png, spec, "mnist-digit", refuse=DataError)
    return pixels


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
        fingerprint=file_fingerprint(path) if path else arrays_fingerprint(arrays),
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
    paths, labels = labelled_files(root / split, XRAY_CLASS_NAMES)
    return [str(p) for p in paths], np.asarray(labels, dtype=np.int64)


def labelled_files(folder: Path, class_names: Sequence[str]) -> tuple[list[Path], list[int]]:
    """The image files of `folder/<class>/` for each class, sorted, with the class index
    of each: the one-folder-per-class layout (checked by the caller, in its own words)."""
    paths: list[Path] = []
    labels: list[int] = []
    for label, class_name in enumerate(class_names):
        files = sorted(
            p
            for p in (folder / class_name).iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        paths.extend(files)
        labels.extend([label] * len(files))
    return paths, labels


def check_xray_folder(root: Path, splits: Sequence[str]) -> None:
    """Raise `DataError` naming what is missing unless every split has both class folders
    with at least one image each."""
    expected = f"expected {root}/<split>/<class>/*.jpeg for splits {', '.join(splits)} "
    expected += f"and classes {', '.join(XRAY_CLASS_NAMES)}"
    if root.is_file():
        raise DataError(f"chest X-ray data {root} is a file, not a folder; {expected}")
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


def image_input_spec(image_size: tuple[int, int], channels: int) -> InputSpec:
    """A model input of `image_size` (height, width): 1 channel grayscale, or 3 RGB."""
    height, width = image_size
    return InputSpec(
        height=height,
        width=width,
        channels=channels,
        color_mode="grayscale" if channels == 1 else "rgb",
    )


def read_images(root: Path, paths: Sequence[str], spec: InputSpec) -> NDArray[np.uint8]:
    """Every image file as `[N, H, W, C]` pixels, read exactly as the service reads uploads.

    Through the contract's `prepare_image` (`resize` preprocessing), whose pixels are
    whole 0..255 values, so uint8 holds them exactly in a quarter of float32's memory.
    A file that is no readable image is a `DataError` naming it.
    """

    def read(path: str) -> Upload:
        return Upload(filename=str(Path(path).relative_to(root)), data=Path(path).read_bytes())

    def refuse(message: str) -> DataError:
        return DataError(f"{root}: {message}; remove or replace the file")

    images, _ = prepare_all(paths, read, spec, "resize", refuse=refuse, dtype=np.uint8)
    return images


Item = TypeVar("Item")  # what `prepare_all` makes an upload of: a path, an array...


def prepare_all(
    items: Sequence[Item] | NDArray[Any],
    upload_of: Callable[[Item], Upload],
    spec: InputSpec,
    kind: PreprocessingKind,
    *,
    refuse: Callable[[str], Exception],
    dtype: type[np.floating[Any]] | type[np.unsignedinteger[Any]] = np.float32,
) -> tuple[NDArray[Any], list[bool] | None]:
    """`prepare_image` for each item's upload, on one thread per core (Pillow's decoding
    and most of NumPy release the GIL; `upload_of` runs there too, so reading files and
    encoding PNGs overlap). The `[N, H, W, C]` pixels as `dtype`, and each picture's
    digit check for `mnist-digit`. An unreadable image raises `refuse(its message)`."""

    def prepare(item: Item) -> PreparedImage:
        try:
            return prepare_image(upload_of(item), spec, kind)
        except ImageError as error:
            raise refuse(error.message) from error

    pixels = np.empty((len(items), spec.height, spec.width, spec.channels), dtype=dtype)
    found: list[bool] = []
    with ThreadPoolExecutor() as pool:
        for index, prepared in enumerate(pool.map(prepare, items)):
            pixels[index] = prepared.pixels
            found.append(bool(prepared.digit_found))
    return pixels, (found if kind == "mnist-digit" else None)


def xray_dataset(
    images: NDArray[np.uint8],
    labels: NDArray[np.int64],
    *,
    batch_size: int,
    shuffle_seed: int | None = None,
    augment: tf.keras.layers.Layer | None = None,
) -> tf.data.Dataset:
    """(Shuffle,) batch, (augment,) and prefetch one split's pixels."""
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(labels), seed=shuffle_seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size).map(lambda x, y: (tf.cast(x, tf.float32), y))
    if augment is not None:
        dataset = dataset.map(
            lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE
        )
    return dataset.prefetch(tf.data.AUTOTUNE)


def file_fingerprint(path: Path) -> str:
    """`sha256:<hex>` of one file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def folder_fingerprint(root: Path, paths: Iterable[str]) -> str:
    """`sha256:<hex>` over the sorted files: each one's path relative to `root` and the
    sha256 of its bytes. Renaming, adding, removing or changing a file changes it; where
    the folder lies does not."""
    digest = hashlib.sha256()
    for relative in sorted(str(Path(p).relative_to(root).as_posix()) for p in paths):
        content = hashlib.sha256((root / relative).read_bytes()).hexdigest()
        digest.update(f"{relative}\0{content}\n".encode())
    return f"sha256:{digest.hexdigest()}"


def arrays_fingerprint(arrays: dict[str, NDArray[np.uint8]]) -> str:
    """`sha256:<hex>` over named arrays (MNIST as Keras downloads it), in name order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(name.encode() + b"\0" + np.ascontiguousarray(arrays[name]).tobytes())
    return f"sha256:{digest.hexdigest()}"


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
    """Chest X-ray pipelines: train (shuffled, optionally augmented) and val.

    The fingerprint covers every split (test included), so a card names the exact folder
    its figures came from.
    """
    check_xray_folder(root, XRAY_SPLITS)
    spec = image_input_spec(image_size, channels)
    train_paths, train_labels = list_xray_split(root, "train")
    val_paths, val_labels = list_xray_split(root, "val")
    test_paths, test_labels = list_xray_split(root, "test")
    train = xray_dataset(
        read_images(root, train_paths, spec),
        train_labels,
        batch_size=batch_size,
        shuffle_seed=seed,
        augment=xray_augmentation(seed) if augment else None,
    )
    validation = xray_dataset(read_images(root, val_paths, spec), val_labels, batch_size=batch_size)
    return TrainingData(
        name="chest-xray-pneumonia (Kermany et al., Mendeley Data v2, 2018, CC BY 4.0)",
        fingerprint=folder_fingerprint(root, [*train_paths, *val_paths, *test_paths]),
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
    """A whole split in memory (for evaluation), pixels as the service makes them."""
    paths, labels = list_xray_split(root, split)
    images = read_images(root, paths, image_input_spec(image_size, channels))
    return LabelledArrays(images=images.astype(np.float32), labels=labels)


def count_labels(labels: NDArray[np.int64], class_names: Sequence[str]) -> dict[str, int]:
    counts = np.bincount(labels, minlength=len(class_names))
    return {name: int(count) for name, count in zip(class_names, counts, strict=True)}
