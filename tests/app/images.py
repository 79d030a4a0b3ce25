"""Small encoded images for tests."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def encode(pixels: np.ndarray, fmt: str = "PNG", mode: str | None = None, **save: object) -> bytes:
    image = Image.fromarray(np.asarray(pixels, dtype=np.uint8))
    if mode is not None:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


def digit_like(seed: int = 0, size: int = 28) -> np.ndarray:
    """A white blob on black, shaped roughly like a stroke."""
    rng = np.random.default_rng(seed)
    pixels = np.zeros((size, size), dtype=np.uint8)
    top, left = rng.integers(4, size // 3, size=2)
    pixels[top : top + size // 2, left : left + size // 6] = 255
    return pixels


def png(seed: int = 0, size: int = 28) -> bytes:
    return encode(digit_like(seed, size))


def gray_jpeg(width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return encode(rng.integers(0, 255, size=(height, width)), "JPEG", quality=90)
