"""Shared fixtures: tiny synthetic data sets, and the real data for shipped-model tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
XRAY_CLASSES = ("NORMAL", "PNEUMONIA")


def write_tiny_mnist(path: Path, train: int = 90, test: int = 30, seed: int = 0) -> Path:
    """An npz in the keras.datasets.mnist layout: one random stroke of ink per picture (so
    the service's digit normalisation finds something), labels cycling through 0-9."""
    rng = np.random.default_rng(seed)

    def strokes(count: int) -> np.ndarray:
        images = np.zeros((count, 28, 28), dtype=np.uint8)
        for image in images:
            top, left = rng.integers(2, 14, size=2)
            height, width = rng.integers(4, 12, size=2)
            image[top : top + height, left : left + width] = rng.integers(120, 256)
        return images

    np.savez(
        path,
        x_train=strokes(train),
        y_train=(np.arange(train) % 10).astype(np.uint8),
        x_test=strokes(test),
        y_test=(np.arange(test) % 10).astype(np.uint8),
    )
    return path


def write_tiny_xray(root: Path, per_class: int = 4, seed: int = 0) -> Path:
    """A Kaggle-layout folder of small grayscale JPEGs; PNEUMONIA images are brighter."""
    rng = np.random.default_rng(seed)
    for split in ("train", "val", "test"):
        for label, class_name in enumerate(XRAY_CLASSES):
            folder = root / split / class_name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(per_class + label):  # imbalanced, like the real data
                pixels = rng.integers(0, 128, (30, 40), dtype=np.uint8) + 100 * label
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"img{index}.jpeg")
    return root


@pytest.fixture
def tiny_mnist(tmp_path: Path) -> Path:
    return write_tiny_mnist(tmp_path / "mnist.npz")


@pytest.fixture
def tiny_xray(tmp_path: Path) -> Path:
    return write_tiny_xray(tmp_path / "chest_xray")


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """`VISION_DATA_DIR` (default `<repo>/../shared/data`); skipped when absent, unless CI."""
    path = Path(os.environ.get("VISION_DATA_DIR", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        reason = f"real data not found at {path}; set VISION_DATA_DIR to the data folder"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path
