"""Decode uploaded bytes into a Pillow image, refusing what is not a usable image.

Part of the contract between training and serving: both halves decode through
`decode_image`, so a file becomes the same pixels in either. Framework-free (Pillow and
NumPy only); failures are `ImageError`s, which the service answers as 415/422 and
training reports as data errors.

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
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

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


class ImageError(ValueError):
    """A file that cannot become pixels; `filename` names it and the message says why."""

    def __init__(self, message: str, *, filename: str) -> None:
        super().__init__(message)
        self.message = message
        self.filename = filename


class NotAnImage(ImageError):
    """Bytes in no supported image format (text, PDF, zip, ...): the service's 415."""


class UnreadableImage(ImageError):
    """An image that is empty, corrupt, truncated or too large: the service's 422."""


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
    Deep images (16-bit, 32-bit, float) are brought to 8 bits by `deep_to_8bit`.
    Raises `NotAnImage` for bytes that are no supported image and `UnreadableImage` for
    an image that is empty, corrupt, truncated or too large.
    """
    name = upload.filename
    if not upload.data:
        raise UnreadableImage(f"{name}: the file is empty", filename=name)
    image = _open(upload)
    width, height = image.size
    if width * height > max_pixels:
        raise UnreadableImage(
            f"{name}: {width}x{height} pixels is more than the limit of {max_pixels:,} pixels",
            filename=name,
        )
    file_format = image.format  # a transposed copy no longer knows it
    if draft_size is not None and file_format in {"JPEG", "MPO"}:
        image.draft(draft_mode, draft_size)
    try:
        image.load()
        image = ImageOps.exif_transpose(image) or image
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise UnreadableImage(
            f"{name}: the {image.format} data is truncated or corrupt ({error})", filename=name
        ) from error
    significant_bits = png_significant_bits(upload.data) if file_format == "PNG" else None
    try:
        return to_standard_mode(image, significant_bits)
    except ValueError as error:  # NaN in a float TIFF, a mode Pillow cannot convert
        raise UnreadableImage(f"{name}: {error}", filename=name) from error


TINY_IMAGE_MAX_BYTES = 16 * 1024
TINY_IMAGE_MAX_PIXELS = 128 * 128
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
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
    if signature != _PNG_SIGNATURE or chunk != b"IHDR":
        return False
    if width * height > TINY_IMAGE_MAX_PIXELS:
        return False
    # Only plain pixel chunks: compressed text (zTXt, iTXt), ICC profiles and the like can
    # inflate to megabytes from a few KiB, which is work for the pool, not the event loop.
    return all(kind in _PLAIN_PNG_CHUNKS for kind, _ in _png_chunks(data))


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(type, data) of each chunk of a PNG, from its chunk headers alone, in file order."""
    position = 8  # after the signature
    while position + 8 <= len(data):
        length, kind = _PNG_CHUNK.unpack_from(data, position)
        yield kind, data[position + 8 : position + 8 + length]
        position += 12 + length  # length, type, data, CRC


def to_standard_mode(image: Image.Image, significant_bits: int | None = None) -> Image.Image:
    """Bring any Pillow mode to L, LA, RGB or RGBA; deep images by `deep_to_8bit`.

    `significant_bits` is what the file declares its deep samples use (a PNG's sBIT
    chunk), if anything.
    """
    mode = image.mode
    if mode in {"L", "LA", "RGB", "RGBA"}:
        if significant_bits is not None and significant_bits > 8 and mode in {"RGB", "RGBA"}:
            return _colour_top_bytes_to_8bit(image, significant_bits)
        return image
    if mode in DEEP_MODES:
        return deep_to_8bit(image, significant_bits)
    if mode == "P":
        has_alpha = "transparency" in image.info
        return image.convert("RGBA" if has_alpha else "RGB")
    if mode in {"1"}:
        return image.convert("L")
    if mode in {"PA", "La"}:
        return image.convert("RGBA" if mode == "PA" else "LA")
    return image.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX, ...


DEEP_MODES = frozenset({"I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
"""Pillow's modes for samples deeper than 8 bits (16- and 32-bit integers, 32-bit floats)."""

STORAGE_BITS = (8, 10, 12, 14, 16)
"""Bit depths deep integer data is stored with; a sample's range is the smallest that
holds it. Larger integers have no nominal range and are scaled by their own min/max."""


def deep_to_8bit(image: Image.Image, significant_bits: int | None = None) -> Image.Image:
    """Scale a deep grayscale image to 8 bits by the range its data really uses.

    A 16-bit file often holds fewer significant bits: radiographs exported from DICOM
    are 12-bit data (0..4095) in 16-bit samples, and dividing those by 65535 would make
    a black picture. So integer samples are scaled by the smallest of `STORAGE_BITS` that
    holds the brightest sample: 0..4095 is 12-bit, 0..65535 16-bit, 0..255 8-bit (kept
    as is). A PNG's sBIT chunk (`significant_bits`) says what the data was before it was
    stored: samples that fit in it are scaled by it (a dark 12-bit picture stays dark),
    while samples scaled up to the full 16 bits, as the PNG specification has writers do,
    are read as 16-bit. The same picture saved at 8 bits, as 12 bits in 16, or at full
    16 bits thus gives the same 8-bit pixels (to rounding).

    The limit of a rule without a declared depth: a picture whose brightest sample lies
    in the lower quarter of its true range is taken for a smaller depth and brightened
    (a 16-bit picture peaking at 16,000 reads as 14-bit, four times brighter).

    Float samples within 0..1 are scaled by 255. Anything else (negative or very large
    integers, floats outside 0..1, such as Hounsfield units) has no nominal range, so the
    image's own minimum and maximum become 0 and 255. NaN or infinite samples are a
    `ValueError`: no 8-bit picture says what they mean.
    """
    samples = np.asarray(image, dtype=np.float64)
    if samples.size == 0:
        return Image.new("L", image.size)
    if not np.isfinite(samples).all():
        raise ValueError("the image holds NaN or infinite values")
    lowest, highest = float(samples.min()), float(samples.max())
    is_float = image.mode == "F"
    if is_float and lowest >= 0.0 and highest <= 1.0:
        scaled = samples * 255.0
    elif is_float or lowest < 0.0 or highest >= 2 ** STORAGE_BITS[-1]:
        spread = highest - lowest
        scaled = (samples - lowest) * (255.0 / spread) if spread > 0 else samples * 0.0
    else:
        if significant_bits is not None and highest < 2**significant_bits:
            bits = significant_bits
        else:
            bits = next(b for b in STORAGE_BITS if highest < 2**b)
        scaled = samples * (255.0 / (2**bits - 1))
    return Image.fromarray(np.clip(scaled, 0, 255).round().astype(np.uint8), mode="L")


def _colour_top_bytes_to_8bit(image: Image.Image, significant_bits: int) -> Image.Image:
    """A 16-bit colour PNG whose sBIT declares fewer than 16 bits, read at 8 bits.

    Pillow keeps only the top byte of 16-bit colour samples. Samples scaled up to the
    full 16 bits (as the PNG specification has writers do) have the right top byte, and
    it is taken as it is; samples left at their declared depth (12 bits, say) leave only
    `significant_bits - 8` bits in it, which are then stretched to 0..255.
    """
    kept_bits = min(significant_bits, 16) - 8
    bands = dict(zip(image.getbands(), image.split(), strict=True))
    brightest = max(band.getextrema()[1] for name, band in bands.items() if name != "A")
    if brightest >= 2**kept_bits:  # scaled up to 16 bits: the top byte is right
        return image
    scale = 255.0 / (2**kept_bits - 1)
    stretched = [
        band if name == "A" else band.point(lambda value: min(255, round(value * scale)))
        for name, band in bands.items()
    ]
    return Image.merge(image.mode, stretched)


# Samples per pixel in a PNG's sBIT chunk, by IHDR colour type, and which are colour
# (or grey) rather than alpha, whose depth says nothing about the picture's.
_SBIT_COLOUR_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 1, 6: 3}


def png_significant_bits(data: bytes) -> int | None:
    """The significant bits a 16-bit PNG declares in its sBIT chunk, else None.

    Pillow does not read sBIT. Only chunk headers are walked (sBIT comes before the
    image data); for several channels the largest grey or colour one is taken (not
    alpha's).
    """
    if len(data) < _PNG_HEADER.size + 2 or not data.startswith(_PNG_SIGNATURE):
        return None
    if data[24] != 16:  # IHDR bit depth: only 16-bit samples can hide fewer bits
        return None
    colour_channels = _SBIT_COLOUR_CHANNELS.get(data[25], 1)  # IHDR colour type
    for kind, chunk in _png_chunks(data):
        if kind == b"sBIT":
            declared = chunk[:colour_channels]
            return max(declared) if declared and 8 < max(declared) <= 16 else None
        if kind in {b"IDAT", b"IEND"}:
            return None
    return None


def _open(upload: Upload) -> Image.Image:
    name = upload.filename
    try:
        with warnings.catch_warnings():
            # Our own pixel limit applies; Pillow's bomb warning would only add noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(upload.data))
    except Image.DecompressionBombError as error:
        raise UnreadableImage(f"{name}: {error}", filename=name) from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        claimed = _image_signature(upload.data)
        if claimed is not None:
            raise UnreadableImage(
                f"{name}: starts like a {claimed} image but is truncated or corrupt", filename=name
            ) from error
        raise NotAnImage(
            f"{name}: not a {SUPPORTED_FORMATS_TEXT} image{_what_it_looks_like(upload)}",
            filename=name,
        ) from error
    if image.format not in SUPPORTED_FORMATS:
        raise NotAnImage(
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
