"""Hostile and unusual inputs, built in memory, for the input corpus tests."""

from __future__ import annotations

import io
import stat
import struct
import zipfile
import zlib

import numpy as np
from PIL import Image


def save(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header declares a huge image."""
    data = bytearray(save(Image.new("L", (1, 1)), "PNG"))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


def zip_bytes(entries: dict[str, bytes], *, symlinks: tuple[str, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if name in symlinks:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, content)
    return buffer.getvalue()


# Valid but unusual renderings of one MNIST digit (28x28 uint8, white on black).


def animated_gif(digit: np.ndarray) -> bytes:
    first = Image.fromarray(digit)
    second = Image.fromarray(np.zeros_like(digit))
    return save(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0)


def sixteen_bit_png(digit: np.ndarray) -> bytes:
    deep = digit.astype(np.uint16) * 257
    image = Image.fromarray(deep)  # uint16 -> mode I;16
    assert image.mode.startswith("I;16"), image.mode
    return save(image, "PNG")


def cmyk_jpeg(digit: np.ndarray) -> bytes:
    paper = Image.fromarray(255 - digit).convert("RGB").resize((112, 112), Image.BICUBIC)
    return save(paper.convert("CMYK"), "JPEG", quality=92)


def palette_png_with_transparency(digit: np.ndarray) -> bytes:
    rgba = np.zeros((28, 28, 4), dtype=np.uint8)
    rgba[..., 3] = digit  # black ink whose opacity is the stroke
    image = Image.fromarray(rgba, mode="RGBA").quantize(colors=64)
    return save(image, "PNG")


def rgba_png(digit: np.ndarray) -> bytes:
    rgba = np.dstack([digit, digit, digit, np.full_like(digit, 255)])
    return save(Image.fromarray(rgba, mode="RGBA"), "PNG")


def exif_rotated_jpeg(digit: np.ndarray) -> bytes:
    """Stored rotated 90 degrees, with EXIF orientation 6 telling viewers to turn it back."""
    upright = Image.fromarray(255 - digit).resize((112, 112), Image.BICUBIC)
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    return save(stored, "JPEG", quality=95, exif=exif.tobytes())


def very_large(digit: np.ndarray) -> bytes:
    """A 4000x3000 photo-like page with the digit in the middle (12 MP)."""
    page = Image.new("L", (4000, 3000), 235)
    page.paste(Image.fromarray(255 - digit).resize((600, 600), Image.BICUBIC), (1700, 1200))
    return save(page, "JPEG", quality=85)


def webp(digit: np.ndarray) -> bytes:
    return save(Image.fromarray(digit).resize((84, 84), Image.BICUBIC), "WEBP", lossless=True)


def tiff(digit: np.ndarray) -> bytes:
    return save(Image.fromarray(digit), "TIFF")


def bmp(digit: np.ndarray) -> bytes:
    return save(Image.fromarray(255 - digit), "BMP")
