"""Turn an image file into the pixels a model takes: the one preprocessing of both halves.

Training reads its image files through `prepare_image` and the service reads every
upload through `prepare_batch`, which calls it, so the same bytes become the same
pixels, bit for bit, in either (a test on real X-rays checks it). What a model needs is
named by its card: the input spec (size, colour mode) and the preprocessing kind.

- `mnist-digit`: MNIST-style normalisation of a picture of a digit (`digits`), which
  also says whether a digit was found at all.
- `resize`: the card's colour mode, then a bilinear resize to the input size. JPEGs
  are decoded at reduced size first (`Image.draft`) when they stay at least as large as
  the input: an X-ray of 2000 px decoded at 1/8 scale costs a fraction of a full decode.

Scaling to 0..1 is *not* done here: it lives inside each exported model, which takes
raw 0..255 pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from app.contract.digits import normalize_digit
from app.contract.images import ImageError, Upload, decode_image
from app.contract.model_card import InputSpec, PreprocessingKind

DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
"""Largest decoded image (width x height) read when the caller sets no limit."""

# A photographed digit is cropped before it is scaled to 20x20, so decode JPEGs at a
# size where the digit still has detail, not at the model's 28x28.
_DIGIT_DRAFT_SIZE = (256, 256)


@dataclass(frozen=True)
class PreparedImage:
    """One file as the model will see it."""

    pixels: NDArray[np.float32]
    """`[H, W, C]` raw 0..255 pixels."""
    digit_found: bool | None = None
    """For `mnist-digit` models, whether the picture held a digit; else None."""


@dataclass(frozen=True)
class PreparedBatch:
    """The files of one request that could be read, and why the others could not."""

    pixels: NDArray[np.float32]
    """`[k, H, W, C]`: the readable files, in request order."""
    positions: list[int]
    """Each row's position among the files sent."""
    digit_found: list[bool] | None
    """Per row, for `mnist-digit` models; else None."""
    failures: list[tuple[int, ImageError]]
    """(position, error) of each file that could not be read."""


def prepare_image(
    upload: Upload,
    spec: InputSpec,
    kind: PreprocessingKind,
    *,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> PreparedImage:
    """Decode one file and preprocess it for a model with input `spec`.

    Raises `ImageError` (`NotAnImage` or `UnreadableImage`) naming the file.
    """
    mode = "L" if spec.color_mode == "grayscale" else "RGB"
    if kind == "mnist-digit":
        image = decode_image(
            upload, max_pixels=max_pixels, draft_mode=mode, draft_size=_DIGIT_DRAFT_SIZE
        )
        digit = normalize_digit(image)
        pixels = digit.pixels
        if pixels.shape != (spec.height, spec.width):
            resized = Image.fromarray(pixels, mode="F").resize(
                (spec.width, spec.height), Image.Resampling.BILINEAR
            )
            pixels = np.asarray(resized, dtype=np.float32)
        return PreparedImage(np.repeat(pixels[:, :, None], spec.channels, axis=2), digit.found)
    image = decode_image(
        upload, max_pixels=max_pixels, draft_mode=mode, draft_size=(spec.width, spec.height)
    )
    if image.mode != mode:
        image = image.convert(mode)
    if image.size != (spec.width, spec.height):
        image = image.resize((spec.width, spec.height), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32)
    return PreparedImage(pixels.reshape(spec.height, spec.width, spec.channels))


def prepare_batch(
    uploads: Sequence[Upload],
    spec: InputSpec,
    kind: PreprocessingKind,
    *,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> PreparedBatch:
    """`prepare_image` for every file; one unreadable file does not stop the others."""
    pixels = np.empty((len(uploads), spec.height, spec.width, spec.channels), dtype=np.float32)
    positions: list[int] = []
    found: list[bool] = []
    failures: list[tuple[int, ImageError]] = []
    for position, upload in enumerate(uploads):
        try:
            prepared = prepare_image(upload, spec, kind, max_pixels=max_pixels)
        except ImageError as error:
            failures.append((position, error))
            continue
        pixels[len(positions)] = prepared.pixels
        positions.append(position)
        if prepared.digit_found is not None:
            found.append(prepared.digit_found)
    return PreparedBatch(
        pixels=pixels[: len(positions)],
        positions=positions,
        digit_found=found if kind == "mnist-digit" else None,
        failures=failures,
    )
