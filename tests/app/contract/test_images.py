"""Decoding uploads: tiny images (decoded on the event loop) and deep images' bit depth."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from app.contract.images import (
    TINY_IMAGE_MAX_BYTES,
    UnreadableImage,
    Upload,
    decode_image,
    is_tiny_image,
    png_significant_bits,
    to_standard_mode,
)
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


# Deep images: scaled by the range their data really uses -------------------------------


def png_with_chunk(data: bytes, kind: bytes, payload: bytes) -> bytes:
    """`data` (a PNG) with one more chunk right after its header."""
    chunk = struct.pack(">I", len(payload)) + kind + payload
    chunk += struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    header_end = 8 + 25  # signature, then IHDR: length, type, 13 bytes, CRC
    return data[:header_end] + chunk + data[header_end:]


def colour_png_16bit(samples: np.ndarray) -> bytes:
    """A 16-bit RGB PNG (Pillow cannot write one), unfiltered."""
    height, width, _ = samples.shape
    rows = b"".join(b"\x00" + samples[r].astype(">u2").tobytes() for r in range(height))

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
        return struct.pack(">I", len(payload)) + kind + payload + crc

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


GRADIENT = np.tile(np.arange(256, dtype=np.uint16), (4, 1))  # every 8-bit level


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(decode_image(upload(data), max_pixels=10**8), dtype=np.int32)


@pytest.mark.parametrize(
    ("bits", "fmt"),
    [(8, "PNG"), (10, "PNG"), (12, "PNG"), (14, "PNG"), (16, "PNG"), (12, "TIFF"), (16, "TIFF")],
)
def test_deep_grayscale_is_scaled_by_the_bits_its_data_uses(bits: int, fmt: str) -> None:
    """The issue's X-ray: 12-bit data in a 16-bit PNG was divided by 65535, i.e. black."""
    peak = 2**bits - 1
    deep = np.round(GRADIENT.astype(np.float64) * peak / 255).astype(np.uint16)
    image = decoded(encode_deep(deep, fmt))
    np.testing.assert_array_equal(image, GRADIENT)  # exactly the 8-bit picture back


def encode_deep(samples: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(samples.astype(np.uint16)).save(buffer, fmt)
    return buffer.getvalue()


def test_a_declared_sbit_wins_over_the_brightest_sample() -> None:
    """A dark 12-bit picture (brightest 1000) would pass for 10-bit without its sBIT."""
    dark = np.full((4, 4), 1000, dtype=np.uint16)
    plain = encode_deep(dark, "PNG")
    declared = png_with_chunk(plain, b"sBIT", bytes([12]))
    assert decoded(plain)[0, 0] == round(1000 * 255 / 1023)
    assert decoded(declared)[0, 0] == round(1000 * 255 / 4095)


def test_a_16bit_colour_png_declaring_12_bits_is_not_black() -> None:
    twelve_bit = np.stack([GRADIENT.astype(np.int64) * 4095 // 255] * 3, axis=-1)
    plain = colour_png_16bit(twelve_bit)
    declared = png_with_chunk(plain, b"sBIT", bytes([12, 12, 12]))
    # Pillow keeps the top byte of 16-bit colour: 12-bit data leaves 4 bits of it.
    assert decoded(plain).max() == 15
    stretched = decoded(declared)
    assert stretched.max() == 255 and stretched.shape == (4, 256, 3)
    assert np.abs(stretched[..., 0] - GRADIENT).max() <= 17  # 16 levels survive


def test_floats_in_unit_range_and_signed_integers_get_their_own_ranges() -> None:
    unit = Image.fromarray((GRADIENT / 255).astype(np.float32), mode="F")
    np.testing.assert_array_equal(np.asarray(to_standard_mode(unit)), GRADIENT)
    hounsfield = Image.fromarray(GRADIENT.astype(np.int32) * 8 - 1024, mode="I")
    np.testing.assert_array_equal(np.asarray(to_standard_mode(hounsfield)), GRADIENT)


def test_png_significant_bits_reads_only_16bit_pngs() -> None:
    eight_bit = png()
    assert png_significant_bits(png_with_chunk(eight_bit, b"sBIT", bytes([7]))) is None
    sixteen = encode_deep(np.zeros((2, 2)), "PNG")
    assert png_significant_bits(sixteen) is None
    assert png_significant_bits(png_with_chunk(sixteen, b"sBIT", bytes([12]))) == 12
    assert png_significant_bits(b"not a png") is None


def test_a_12bit_png_written_as_the_specification_says_is_not_white() -> None:
    """PNG writers scale 12-bit samples up to 16 bits and record the 12 in sBIT (pypng's
    Writer(bitdepth=12), libpng): such samples are full-range 16-bit, not 0..4095."""
    scaled_up = np.round(GRADIENT.astype(np.float64) * 65535 / 255).astype(np.uint16)
    declared = png_with_chunk(encode_deep(scaled_up, "PNG"), b"sBIT", bytes([12]))
    np.testing.assert_array_equal(decoded(declared), GRADIENT)


def test_a_16bit_colour_png_scaled_up_to_16_bits_keeps_its_top_byte() -> None:
    full_range = np.stack([GRADIENT.astype(np.int64) * 257] * 3, axis=-1)
    declared = png_with_chunk(colour_png_16bit(full_range), b"sBIT", bytes([12, 12, 12]))
    np.testing.assert_array_equal(decoded(declared)[..., 0], GRADIENT)


def test_alpha_depth_in_sbit_says_nothing_about_the_colour() -> None:
    rgba_header = png_with_chunk(colour_png_16bit(np.zeros((2, 2, 3))), b"sBIT", bytes([12] * 3))
    assert png_significant_bits(rgba_header) == 12
    rgba = bytearray(rgba_header)
    rgba[25] = 6  # colour type RGBA: sBIT holds R, G, B and alpha
    sbit = rgba.index(b"sBIT")
    rgba[sbit - 4 : sbit + 4 + 3] = struct.pack(">I", 4) + b"sBIT" + bytes([12, 12, 12])
    rgba[sbit + 7 : sbit + 7] = bytes([16])  # alpha at full 16 bits
    assert png_significant_bits(bytes(rgba)) == 12


def test_each_step_of_the_bits_rule_is_where_the_docstring_says() -> None:
    """The brightest sample picks the depth: the rule's known limit is a jump at each
    step (a picture peaking in the lower quarter of its true range is brightened)."""
    expected = {255: 255, 256: 64, 1023: 255, 1024: 64, 4095: 255, 4096: 64, 65535: 255}
    for peak, brightest in expected.items():
        image = Image.fromarray(np.array([[0, peak]], dtype=np.uint16))
        assert np.asarray(to_standard_mode(image)).max() == brightest, peak


def test_integers_beyond_16_bits_use_their_own_range() -> None:
    wide = Image.fromarray(np.array([[0, 50_000, 100_000]], dtype=np.int32), mode="I")
    np.testing.assert_array_equal(np.asarray(to_standard_mode(wide)), [[0, 128, 255]])


def test_a_float_image_with_nan_is_refused_not_read_as_black() -> None:
    pixels = np.ones((4, 4), dtype=np.float32)
    pixels[0, 0] = np.nan
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="F").save(buffer, "TIFF")
    with pytest.raises(UnreadableImage, match="NaN or infinite"):
        decode_image(Upload(filename="scan.tif", data=buffer.getvalue()), max_pixels=10**6)
