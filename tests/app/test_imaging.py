"""What counts as a tiny image, decoded on the event loop instead of the decode pool."""

from __future__ import annotations

import numpy as np

from app.imaging import TINY_IMAGE_MAX_BYTES, Upload, is_tiny_image
from tests.app.images import encode, gray_jpeg, png


def upload(data: bytes) -> Upload:
    return Upload(filename="f", data=data)


def test_a_28x28_digit_is_tiny() -> None:
    assert is_tiny_image(upload(png()))


def test_a_small_file_declaring_many_pixels_is_not_tiny() -> None:
    blank = encode(np.zeros((2000, 2000), dtype=np.uint8))  # 4 MP of black: a few KiB
    assert len(blank) <= TINY_IMAGE_MAX_BYTES
    assert not is_tiny_image(upload(blank))


def test_a_file_over_the_byte_bound_is_not_tiny() -> None:
    noisy = gray_jpeg(width=400, height=400)
    assert len(noisy) > TINY_IMAGE_MAX_BYTES
    assert not is_tiny_image(upload(noisy))


def test_bytes_that_are_no_image_are_not_tiny() -> None:
    assert not is_tiny_image(upload(b"%PDF-1.4 not an image"))
    assert not is_tiny_image(upload(png()[:20]))
    assert not is_tiny_image(upload(b""))


def test_only_pngs_are_tiny() -> None:
    digit = np.zeros((28, 28), dtype=np.uint8)
    assert not is_tiny_image(upload(gray_jpeg(width=28, height=28)))
    assert not is_tiny_image(upload(encode(digit, "GIF")))
    assert not is_tiny_image(upload(encode(digit, "BMP")))


def test_a_small_png_with_compressed_text_is_not_tiny() -> None:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "x" * 1_000_000, zip=True)  # ~1 MB inflated from ~1 KiB
    with_text = encode(np.zeros((28, 28), dtype=np.uint8), pnginfo=info)
    assert len(with_text) <= TINY_IMAGE_MAX_BYTES
    assert not is_tiny_image(upload(with_text))
