"""Decode uploaded bytes into a Pillow image, refusing what is not a usable image.

Checks happen in the order that keeps a hostile upload cheap: the header is read first
(format and declared size) and only then are pixels decoded, so a small file that
claims to be 100,000 x 100,000 pixels is refused before any large allocation. Large
JPEGs are decoded at reduced size (`Image.draft`) when the caller says how big the
image needs to be: an X-ray of 3000 px decoded at 1/8 scale costs a fraction of a full
decode and loses nothing at the model's input size.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app.errors import InvalidImage, UnsupportedMediaType

# MPO is the multi-picture JPEG many phone cameras write.
SUPPORTED_FORMATS = frozenset({"PNG", "JPEG", "MPO", "BMP", "GIF", "TIFF", "WEBP"})
SUPPORTED_FORMATS_TEXT = "PNG, JPEG, BMP, GIF, TIFF or WebP"

_IMAGE_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF8": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
}

_KNOWN_NON_IMAGES = {
    b"%PDF": "a PDF document",
    b"PK\x03\x04": "a zip archive",
    b"\x1f\x8b": "a gzip file",
    b"{": "JSON or text",
    b"<": "HTML/XML or text",
}


@dataclass(frozen=True)
class Upload:
    """One uploaded file, as read from the request."""

    filename: str
    data: bytes
    content_type: str | None = None


def upload_filename(filename: str | None, index: int) -> str:
    """The name an upload is answered under: its own, or `file-<index>` if it has none."""
    return filename or f"file-{index}"


def decode_image(
    upload: Upload,
    *,
    max_pixels: int,
    draft_mode: str | None = None,
    draft_size: tuple[int, int] | None = None,
) -> Image.Image:
    """Decode an upload into an EXIF-upright image in mode L, LA, RGB or RGBA.

    `draft_size` is the smallest (width, height) the caller needs; JPEGs may then be
    decoded at 1/2, 1/4 or 1/8 scale as long as they stay at least that large.
    Raises `UnsupportedMediaType` (415) for bytes that are no supported image and
    `InvalidImage` (422) for an image that is corrupt, truncated or too large.
    """
    name = upload.filename
    if not upload.data:
        raise InvalidImage(f"{name}: the file is empty", filename=name)
    image = _open(upload)
    width, height = image.size
    if width * height > max_pixels:
        raise InvalidImage(
            f"{name}: {width}x{height} pixels is more than the limit of {max_pixels:,} pixels",
            filename=name,
        )
    if draft_size is not None and image.format in {"JPEG", "MPO"}:
        image.draft(draft_mode, draft_size)
    try:
        image.load()
        image = ImageOps.exif_transpose(image) or image
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise InvalidImage(
            f"{name}: the {image.format} data is truncated or corrupt ({error})", filename=name
        ) from error
    return to_standard_mode(image)


TINY_IMAGE_MAX_BYTES = 16 * 1024
TINY_IMAGE_MAX_PIXELS = 128 * 128
_PNG_HEADER = struct.Struct(">8sI4sII")  # signature, IHDR length, b"IHDR", width, height
_PNG_CHUNK = struct.Struct(">I4s")  # length, type
_PLAIN_PNG_CHUNKS = frozenset(
    {b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND", b"gAMA", b"sRGB", b"pHYs", b"cHRM", b"sBIT"}
)


def is_tiny_image(upload: Upload) -> bool:
    """Whether `upload` is a PNG that is certainly cheap to decode: few bytes, few pixels.

    Reads only the PNG header and chunk headers (no Pillow call: this runs on the event
    loop for every single-file request). The pixel bound matters because a few KiB of PNG
    can declare megapixels of one colour; Pillow stops inflating pixel data at the
    declared size. Other formats are never tiny; they, and anything malformed, are decoded
    on the pool, where errors are explained.
    """
    data = upload.data
    if len(data) > TINY_IMAGE_MAX_BYTES or len(data) < _PNG_HEADER.size:
        return False
    signature, _, chunk, width, height = _PNG_HEADER.unpack_from(data)
    if signature != b"\x89PNG\r\n\x1a\n" or chunk != b"IHDR":
        return False
    if width * height > TINY_IMAGE_MAX_PIXELS:
        return False
    # Only plain pixel chunks: compressed text (zTXt, iTXt), ICC profiles and the like can
    # inflate to megabytes from a few KiB, which is work for the pool, not the event loop.
    position = 8
    while position + 8 <= len(data):
        length, kind = _PNG_CHUNK.unpack_from(data, position)
        if kind not in _PLAIN_PNG_CHUNKS:
            return False
        position += 12 + length  # length, type, data, CRC
    return True


def to_standard_mode(image: Image.Image) -> Image.Image:
    """Bring any Pillow mode to L, LA, RGB or RGBA, scaling deep images to 8 bits."""
    mode = image.mode
    if mode in {"L", "LA", "RGB", "RGBA"}:
        return image
    if mode in {"I", "F"} or mode.startswith("I;16"):
        return _deep_to_8bit(image)
    if mode == "P":
        has_alpha = "transparency" in image.info
        return image.convert("RGBA" if has_alpha else "RGB")
    if mode in {"1"}:
        return image.convert("L")
    if mode in {"PA", "La"}:
        return image.convert("RGBA" if mode == "PA" else "LA")
    return image.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX, ...


def _open(upload: Upload) -> Image.Image:
    name = upload.filename
    try:
        with warnings.catch_warnings():
            # Our own pixel limit applies; Pillow's bomb warning would only add noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(upload.data))
    except Image.DecompressionBombError as error:
        raise InvalidImage(f"{name}: {error}", filename=name) from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        claimed = _image_signature(upload.data)
        if claimed is not None:
            raise InvalidImage(
                f"{name}: starts like a {claimed} image but is truncated or corrupt", filename=name
            ) from error
        raise UnsupportedMediaType(
            f"{name}: not a {SUPPORTED_FORMATS_TEXT} image{_what_it_looks_like(upload)}",
            filename=name,
        ) from error
    if image.format not in SUPPORTED_FORMATS:
        raise UnsupportedMediaType(
            f"{name}: {image.format} images are not supported; send {SUPPORTED_FORMATS_TEXT}",
            filename=name,
        )
    return image


def _image_signature(data: bytes) -> str | None:
    for signature, image_format in _IMAGE_SIGNATURES.items():
        if data.startswith(signature):
            return image_format
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return None


def _what_it_looks_like(upload: Upload) -> str:
    for signature, description in _KNOWN_NON_IMAGES.items():
        if upload.data.lstrip()[: len(signature)] == signature:
            return f" (it looks like {description})"
    if upload.content_type and not upload.content_type.startswith(
        ("image/", "application/octet-stream")
    ):
        return f" (it was sent as {upload.content_type})"
    return ""


def _deep_to_8bit(image: Image.Image) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16"):
        peak = 65535.0
    else:
        peak = 255.0 if pixels.max(initial=0) <= 255 else float(pixels.max())
    scaled = np.clip(pixels * (255.0 / peak), 0, 255).round().astype(np.uint8)
    return Image.fromarray(scaled, mode="L")
