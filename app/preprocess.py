"""Turn an uploaded file into the pixels a model's card asks for.

This runs on a worker thread, one call per request, so decoding never blocks the event
loop. Scaling to 0..1 is *not* done here: it lives inside each exported model, so the
service sends raw 0..255 pixels exactly as training did.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from app.digits import normalize_digit
from app.imaging import Upload, decode_image
from app.model_card import ModelCard

# A photographed digit is cropped before it is scaled to 20x20, so decode JPEGs at a
# size where the digit still has detail, not at the model's 28x28.
_DIGIT_DRAFT_SIZE = (256, 256)


def prepare_uploads(
    uploads: Sequence[Upload], card: ModelCard, *, max_pixels: int
) -> NDArray[np.float32]:
    """Decode and preprocess every upload into one `[N, H, W, C]` float32 array."""
    spec = card.input
    batch = np.empty((len(uploads), spec.height, spec.width, spec.channels), dtype=np.float32)
    for index, upload in enumerate(uploads):
        batch[index] = prepare_upload(upload, card, max_pixels=max_pixels)
    return batch


def prepare_upload(upload: Upload, card: ModelCard, *, max_pixels: int) -> NDArray[np.float32]:
    """Decode one upload and preprocess it into `[H, W, C]` float32 raw pixels."""
    spec = card.input
    draft_mode = "L" if spec.color_mode == "grayscale" else "RGB"
    if card.preprocessing.kind == "mnist-digit":
        image = decode_image(
            upload, max_pixels=max_pixels, draft_mode=draft_mode, draft_size=_DIGIT_DRAFT_SIZE
        )
        return prepare_digit(image, card)
    image = decode_image(
        upload, max_pixels=max_pixels, draft_mode=draft_mode, draft_size=(spec.width, spec.height)
    )
    return resize_to_input(image, card)


def prepare_digit(image: Image.Image, card: ModelCard) -> NDArray[np.float32]:
    """MNIST-style normalisation (see `app.digits`), then the card's input size."""
    spec = card.input
    digit = normalize_digit(image)
    if digit.shape != (spec.height, spec.width):
        resized = Image.fromarray(digit, mode="F").resize(
            (spec.width, spec.height), Image.Resampling.BILINEAR
        )
        digit = np.asarray(resized, dtype=np.float32)
    return np.repeat(digit[:, :, None], spec.channels, axis=2)


def resize_to_input(image: Image.Image, card: ModelCard) -> NDArray[np.float32]:
    """Convert to the card's colour mode and resize to its input size (bilinear).

    Training resizes with bilinear interpolation and antialiasing too, so the model
    sees the same kind of pixels it was trained on.
    """
    spec = card.input
    mode = "L" if spec.color_mode == "grayscale" else "RGB"
    if image.mode != mode:
        image = image.convert(mode)
    if image.size != (spec.width, spec.height):
        image = image.resize((spec.width, spec.height), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32)
    return pixels.reshape(spec.height, spec.width, spec.channels)
