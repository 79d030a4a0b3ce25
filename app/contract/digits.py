"""Turn an uploaded picture of a handwritten digit into the 28x28 input the MNIST model expects.

Why this module exists
    The MNIST MLP was trained on raw MNIST pixels, and MNIST images are very particular: a
    white digit on a pure black background, its bounding box scaled so the longest side is
    20 pixels (aspect ratio kept, anti-aliased), then placed in a 28x28 field so that its
    centre of mass sits at the centre. A multilayer perceptron has no tolerance for shifts
    or changes of scale, so an upload that differs in any of these respects (dark ink on
    light paper, off-centre, three times too big, tinted paper, JPEG noise) is
    misclassified even when a person reads it at a glance. Rather than hope users crop
    perfectly, we redo the construction of MNIST on whatever we are given:

    1. `to_grayscale`: any Pillow mode to float luminance 0..255. Transparency is
       composited over a background that suits the drawing, and large pictures are reduced
       first, because detail finer than a fraction of an output pixel cannot survive.
    2. `to_white_on_black`: detect the polarity from the border, which is mostly paper,
       and invert dark-on-light drawings.
    3. `remove_background`: subtract the paper's level (a plane, so a lighting gradient
       goes too), cut off the paper's own noise (JPEG artefacts, texture) at a level
       measured on the paper, and stretch the ink to 255 like MNIST's saturated strokes.
    4. `crop_to_content`: the bounding box of the ink, ignoring its faint soft edge and
       isolated specks.
    5. `fit_in_box`: scale so the longest side is 20 pixels, aspect ratio kept.
    6. `center_by_mass`: place it in 28x28 with its centre of mass at the centre.

    On a genuine MNIST digit every step is a no-op or very nearly one, so MNIST test
    images sent to the service are classified as well as the raw arrays.

Conventions
    Arrays are float32, indexed [row, column], values 0..255, ink bright. The centre of
    mass of the 28x28 output is at (14.0, 14.0) in pixel-index coordinates (pixel (r, c)
    has its centre at (r, c)), to within half a pixel because the digit is shifted by whole
    pixels. That is where MNIST's own centres of mass are (test set: mean (13.99, 14.01),
    every digit within [13.5, 14.5]). A picture with no ink in it becomes all zeros.

Only NumPy and Pillow are used, and the float work happens on a small image, so the
pipeline costs well under a millisecond for a 28x28 upload and a few for a camera photo.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageChops

from app.contract.images import DEEP_MODES, deep_to_8bit

FloatImage = NDArray[np.float32]

FIELD_SIZE = 28
"""Side of the model's input, in pixels."""

BOX_SIZE = 20
"""Longest side of the digit's bounding box inside the field, as in MNIST."""

WORKING_MAX_SIDE = 160
"""Pictures at least twice this size are reduced by a whole factor before any float work.

A digit a third of the picture's size still gets over twice the resolution of the 20-pixel
box, which is all the anti-aliased downsampling in `fit_in_box` needs.
"""

NOISE_THRESHOLD_SIGMAS = 4.0
"""Ink must stand this many standard deviations of paper noise above the paper to count."""

MAX_NOISE_SHARE = 0.75
"""Paper noise whose cut-off would exceed this share of the ink's contrast is not believed.

Such a spread comes from having too little paper to measure (a digit cropped tight, whose
soft edges then pass for paper), so the noise is measured between neighbouring pixels.
"""

MIN_INK_CONTRAST = 12.0
"""Ink less than this many grey levels above the paper is not ink: the picture is blank."""

EXTENT_MIN_FRACTION = 0.2
"""Pixels dimmer than this fraction of the brightest do not widen the bounding box.

They are the soft edge that blur, JPEG and upscaling spread around strokes; counting them
would make the digit too small once fitted in the box. MNIST's own digits are barely
affected (their edge pixels are mostly brighter than this).
"""

SPECK_MAX_FRACTION = 0.02
"""A group of rows or columns cut off from the rest by empty ones, holding less than this
share of the ink, is a speck of dust and does not widen the bounding box."""

_FIELD_AXIS = np.arange(FIELD_SIZE)
_PLANE_SAMPLE_PIXELS = 1024
_MAD_TO_SIGMA = 1.4826  # standard deviation / median absolute deviation, for Gaussian noise
_QUANTISATION_NOISE = 12**-0.5  # standard deviation of rounding to whole grey levels


def to_grayscale(image: Image.Image, max_side: int | None = WORKING_MAX_SIDE) -> FloatImage:
    """Return the picture's luminance as a float32 array with values 0..255.

    Any Pillow mode is accepted; deep ones (16-bit, 32-bit, float) are first brought to
    8 bits as every upload is (`images.deep_to_8bit`). Transparent areas are composited
    over a background that suits the drawing: when the opaque part is sparse (under half
    the area, e.g. pen strokes exported from a drawing app) the background contrasts with
    it, so black strokes land on white and white strokes on black; when the opaque part
    is most of the picture (a photo with transparent margins) the background takes its
    typical tone, the paper's.

    A picture whose longest side is at least twice `max_side` is first reduced by a whole
    factor (box averaging, which also averages pixel noise away); `None` keeps full size.
    """
    if image.mode in DEEP_MODES:  # the same 8-bit reading as every other upload
        image = deep_to_8bit(image)
    if not image.has_transparency_data:
        return np.asarray(_reduce_large(_luminance(image), max_side), dtype=np.float32)
    if image.mode == "La":  # premultiplied; Pillow converts it to nothing but LA
        image = image.convert("LA")
    rgba = image.convert("RGBA")
    alpha_image = rgba.getchannel("A")
    # Premultiplied luminance: reducing it and the alpha alike keeps the colours of
    # invisible pixels out of the averages.
    premultiplied = ImageChops.multiply(rgba.convert("L"), alpha_image)
    alpha = np.asarray(_reduce_large(alpha_image, max_side), dtype=np.float32) / 255.0
    luminance = np.asarray(_reduce_large(premultiplied, max_side), dtype=np.float32)
    return _composite_over_background(luminance, alpha)


def to_white_on_black(gray: FloatImage) -> FloatImage:
    """Return `gray` with the ink bright and the paper dark, inverting it if needed.

    Pixels above the midpoint between the darkest and brightest are "light". If most of
    the picture's border is light, the paper is light and the picture is inverted. A
    border split about evenly (a digit cropped tight enough to run along the edges)
    defers to the whole picture, which is mostly paper too. White-on-black input and
    blank pictures are returned unchanged (as a copy).
    """
    if gray.size == 0:
        return gray.astype(np.float32, copy=True)
    midpoint = 0.5 * (float(gray.min()) + float(gray.max()))
    light_border = float(np.mean(_border_pixels(gray) > midpoint))
    if 0.4 <= light_border <= 0.6:
        light_paper = _median(gray.ravel()) > midpoint
    else:
        light_paper = light_border > 0.6
    if light_paper:
        return (255.0 - gray).astype(np.float32)
    return gray.astype(np.float32, copy=True)


def remove_background(white_on_black: FloatImage) -> FloatImage:
    """Make the paper exactly 0 and the brightest ink 255, dropping faint noise.

    The paper's level is modelled as a plane, so a lighting gradient across the picture is
    removed too, fitted robustly to the pixels that are not ink (ink is what stands out
    above the fit and is left out of the next one). The spread of the paper pixels around
    the plane measures the noise (sensor noise, paper texture, JPEG artefacts, lighting
    that is not quite a plane); anything less than `NOISE_THRESHOLD_SIGMAS` of it above the
    paper becomes 0 and the rest is stretched linearly up to 255. When that spread is
    implausibly large next to the ink (`MAX_NOISE_SHARE`), there was too little paper to
    measure, as in a digit cropped tight, and the noise is measured between neighbouring
    pixels instead. On a clean MNIST digit (paper exactly 0, ink up to 255) this changes
    nothing. A picture whose ink does not stand out clearly from the paper
    (`MIN_INK_CONTRAST`) comes back all zeros.
    """
    if white_on_black.size == 0:
        return np.zeros_like(white_on_black, dtype=np.float32)
    paper = _fit_paper(white_on_black)
    above_paper = paper.subtracted_from(white_on_black)
    ink_level = float(above_paper.max())
    if NOISE_THRESHOLD_SIGMAS * paper.noise_sigma > MAX_NOISE_SHARE * ink_level:
        pixel_noise = max(_pixel_noise(white_on_black), _QUANTISATION_NOISE)
        paper = _fit_paper(white_on_black, pixel_noise)
        above_paper = paper.subtracted_from(white_on_black)
        ink_level = float(above_paper.max())
    threshold = NOISE_THRESHOLD_SIGMAS * paper.noise_sigma
    if ink_level < max(MIN_INK_CONTRAST, 2.0 * threshold):
        return np.zeros_like(white_on_black, dtype=np.float32)
    stretched = (above_paper - threshold) * np.float32(255.0 / (ink_level - threshold))
    return np.clip(stretched, 0.0, 255.0, out=stretched).astype(np.float32, copy=False)


def content_bounding_box(
    ink: FloatImage, min_fraction: float = EXTENT_MIN_FRACTION
) -> tuple[int, int, int, int] | None:
    """Return (top, left, bottom, right) of the ink, bottom and right exclusive, or None.

    Only pixels brighter than `min_fraction` of the brightest count. Of those, a group of
    rows (or columns) separated from the rest by empty rows (columns) and holding less
    than `SPECK_MAX_FRACTION` of the ink is ignored as a speck. No ink at all gives None.
    """
    if ink.size == 0:
        return None
    brightest = float(ink.max())
    if brightest <= 0.0:
        return None
    mass = np.where(ink > min_fraction * brightest, ink, np.float32(0.0))
    top, bottom = _main_span(mass.sum(axis=1))
    left, right = _main_span(mass.sum(axis=0))
    inner = mass[top:bottom, left:right]
    if np.count_nonzero(inner) == np.count_nonzero(mass):  # no speck was left out
        return top, left, bottom, right
    # Leaving out a speck's columns can reveal a gap between rows, and vice versa.
    inner_top, inner_bottom = _main_span(inner.sum(axis=1))
    inner_left, inner_right = _main_span(inner.sum(axis=0))
    return top + inner_top, left + inner_left, top + inner_bottom, left + inner_right


def crop_to_content(ink: FloatImage, min_fraction: float = EXTENT_MIN_FRACTION) -> FloatImage:
    """Return the part of `ink` inside its bounding box (see `content_bounding_box`).

    Everything inside the box is kept as it is, faint pixels included. No ink gives an
    empty (0, 0) array.
    """
    box = content_bounding_box(ink, min_fraction)
    if box is None:
        return np.zeros((0, 0), dtype=np.float32)
    top, left, bottom, right = box
    return ink[top:bottom, left:right].astype(np.float32, copy=True)


def fit_in_box(ink: FloatImage, box_size: int = BOX_SIZE) -> FloatImage:
    """Scale `ink` so its longest side is `box_size` pixels, keeping the aspect ratio.

    The short side is rounded to whole pixels (at least 1), so a thin "1" stays thin.
    Resampling is Lanczos, whose support Pillow widens by the scale factor when shrinking,
    so it is properly anti-aliased; its slight overshoot is clipped back to 0..255. An
    array that already has the right size is returned as an untouched copy.
    """
    height, width = ink.shape
    if height == 0 or width == 0:
        return np.zeros((0, 0), dtype=np.float32)
    scale = box_size / max(height, width)
    new_height = max(1, round(height * scale))
    new_width = max(1, round(width * scale))
    if (new_height, new_width) == (height, width):
        return ink.astype(np.float32, copy=True)
    source = Image.fromarray(np.ascontiguousarray(ink, dtype=np.float32))
    resized = source.resize((new_width, new_height), Image.Resampling.LANCZOS)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 255.0)


def center_by_mass(ink: FloatImage, field_size: int = FIELD_SIZE) -> FloatImage:
    """Paste `ink` into a black `field_size` square with its centre of mass at the centre.

    The centre is (field_size / 2, field_size / 2) in pixel-index coordinates, (14, 14) for
    MNIST's 28x28 field, reached to within half a pixel by a whole-pixel shift (so nothing
    is blurred). Should reaching it push ink out of the field, the shift stops at the edge
    and keeps all the ink. No ink gives an all-zero field; ink larger than the field is a
    `ValueError`.
    """
    field = np.zeros((field_size, field_size), dtype=np.float32)
    height, width = ink.shape
    if height > field_size or width > field_size:
        raise ValueError(f"ink of shape {ink.shape} does not fit in {field_size}x{field_size}")
    total = float(ink.sum()) if ink.size else 0.0
    if total <= 0.0:
        return field
    row_centre = float(np.arange(height) @ ink.sum(axis=1)) / total
    column_centre = float(np.arange(width) @ ink.sum(axis=0)) / total
    top = _clamped_offset(field_size / 2 - row_centre, height, field_size)
    left = _clamped_offset(field_size / 2 - column_centre, width, field_size)
    field[top : top + height, left : left + width] = ink
    return field


class NormalizedDigit(NamedTuple):
    """The model input for a picture of a digit, and whether a digit was found in it."""

    pixels: NDArray[np.float32]
    """float32 (28, 28), 0..255: white digit on black, longest side 20, centred by mass."""
    found: bool
    """False when the picture holds no plausible digit (a blank page): `pixels` are then
    what was left, all zeros for a blank page, and any answer about them is a guess."""


def normalize_digit(image: Image.Image) -> NormalizedDigit:
    """Return the MNIST-style model input for a picture of one digit.

    The picture may have any size, Pillow mode and polarity; the caller has already applied
    its EXIF orientation. The result's pixels are a float32 (28, 28) array with values
    0..255: a white digit on black, its longest side 20 pixels, its centre of mass at the
    centre. A picture without ink gives all zeros and `found` False.
    """
    already_normalized = _as_mnist_form(image)
    if already_normalized is not None:
        return NormalizedDigit(already_normalized, found=True)
    ink = remove_background(to_white_on_black(to_grayscale(image)))
    cropped = crop_to_content(ink)
    if cropped.size == 0:
        return NormalizedDigit(np.zeros((FIELD_SIZE, FIELD_SIZE), dtype=np.float32), found=False)
    return NormalizedDigit(center_by_mass(fit_in_box(cropped)), found=True)


def _as_mnist_form(image: Image.Image) -> NDArray[np.float32] | None:
    """The picture itself when it already is what `normalize_digit` would make of it.

    Most uploads to a digit model are MNIST-style 28x28 digits, and the full pipeline costs
    ~0.4 ms of GIL-holding NumPy calls, while these checks cost a fraction of that. They are
    the conditions under which every step is exactly a no-op: an 8-bit 28x28 picture with
    a pure black border (no inversion), no transparency (nothing to composite), mostly
    black background (paper level exactly 0), full contrast (nothing to stretch),
    no ink at all outside the bounding box of its bright pixels (nothing cropped away), that
    box with no empty rows or columns (no specks) and a longest side of 20 (nothing to
    scale), and the centre of mass within half a pixel of (14, 14) (no shift). The test
    suite checks that this returns exactly what the full pipeline returns.
    """
    if image.mode != "L" or image.size != (FIELD_SIZE, FIELD_SIZE) or image.has_transparency_data:
        return None
    # Pillow's histogram and bounding box (C, one pass each) stand in for a dozen small
    # NumPy calls; each NumPy call costs microseconds of overhead on a 28x28 picture.
    histogram = image.histogram()
    if histogram[255] == 0:  # not full contrast
        return None
    # The paper level is the upper median of the darker half (<= 127): it is 0, with no
    # noise, exactly when zeros are more than half of those pixels.
    if 2 * histogram[0] <= sum(histogram[:128]):
        return None
    ink_box = image.getbbox()  # of every non-zero pixel; not None, as one pixel is 255
    if ink_box is None:
        return None
    left, top, right, bottom = ink_box
    if left == 0 or top == 0 or right == FIELD_SIZE or bottom == FIELD_SIZE:  # ink on border
        return None
    if max(bottom - top, right - left) != BOX_SIZE:
        return None
    # Bright pixels lie inside the ink's box, so they fill every row and column of it
    # exactly when the box has no empty rows or columns and no ink lies outside their
    # own box.
    pixels = np.asarray(image)
    bright = pixels > EXTENT_MIN_FRACTION * 255
    if np.count_nonzero(bright.any(axis=1)) != bottom - top:
        return None
    if np.count_nonzero(bright.any(axis=0)) != right - left:
        return None
    row_mass = pixels.sum(axis=1, dtype=np.int64)
    column_mass = pixels.sum(axis=0, dtype=np.int64)
    total = float(row_mass.sum())
    centre = FIELD_SIZE / 2
    if abs(float(_FIELD_AXIS @ row_mass) / total - centre) >= 0.5:
        return None
    if abs(float(_FIELD_AXIS @ column_mass) / total - centre) >= 0.5:
        return None
    return pixels.astype(np.float32)


def _luminance(image: Image.Image) -> Image.Image:
    """Mode "L", also from modes Pillow cannot convert directly."""
    try:
        return image.convert("L")
    except ValueError:
        pass
    try:
        return image.convert("RGB").convert("L")
    except ValueError:  # e.g. LAB, whose first band is lightness
        return image.getchannel(0)


def _reduce_large(image: Image.Image, max_side: int | None) -> Image.Image:
    if max_side is None:
        return image
    factor = max(image.size) // max_side
    return image.reduce(factor) if factor >= 2 else image


def _composite_over_background(premultiplied: FloatImage, alpha: FloatImage) -> FloatImage:
    total_alpha = float(alpha.sum())
    if total_alpha <= 0.0:  # fully transparent: nothing drawn
        return np.zeros_like(premultiplied)
    if total_alpha < 0.5 * alpha.size:
        drawing_tone = float(premultiplied.sum()) / total_alpha
        background = 255.0 if drawing_tone < 128.0 else 0.0
    else:
        opaque = alpha >= 0.5
        background = _median(premultiplied[opaque] / alpha[opaque])
    return (premultiplied + np.float32(background) * (1.0 - alpha)).astype(np.float32)


def _border_pixels(image: FloatImage) -> FloatImage:
    return np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]])


class _PaperFit(NamedTuple):
    """The paper as level + row_slope * y + column_slope * x, with y and x running from
    -0.5 to 0.5 across the picture, and the standard deviation of its noise."""

    level: float
    row_slope: float
    column_slope: float
    noise_sigma: float

    def subtracted_from(self, image: FloatImage) -> FloatImage:
        above = (image - np.float32(self.level)).astype(np.float32, copy=False)
        if self.row_slope or self.column_slope:
            height, width = image.shape
            above -= (self.row_slope * _unit_axis(height))[:, None].astype(np.float32)
            above -= (self.column_slope * _unit_axis(width))[None, :].astype(np.float32)
        return above


def _fit_paper(image: FloatImage, noise_sigma: float | None = None, rounds: int = 5) -> _PaperFit:
    """Fit a plane to the paper pixels of a white-on-black picture, and measure its noise.

    Works on a sparse sample of pixels. The paper is dark, so it starts as the pixels in the
    darker half of the range, however much of the picture the ink covers. Each round keeps
    the pixels less than 2.5 noise standard deviations above the typical paper pixel, which
    leaves the ink out, and refits. The noise is `noise_sigma` if given, else measured in
    each round as the spread of the paper pixels around the fit (median absolute
    deviation), and in the end as their root mean square deviation; never less than the
    rounding to whole grey levels. Paper exactly flat over most of the picture (a synthetic
    image, or MNIST) is recognised at once and has no noise at all.
    """
    height, width = image.shape
    step = max(1, round(float(np.sqrt(image.size / _PLANE_SAMPLE_PIXELS))))
    values = image[::step, ::step].ravel().astype(np.float64)
    keep = values <= 0.5 * (values.min() + values.max())
    level = _median(values[keep])
    if _median(np.abs(values[keep] - level)) == 0.0:
        return _PaperFit(level, 0.0, 0.0, 0.0)
    row_axis = _unit_axis(height)[::step]
    column_axis = _unit_axis(width)[::step]
    design = np.column_stack(
        [
            np.ones(values.size),
            np.repeat(row_axis, column_axis.size),
            np.tile(column_axis, row_axis.size),
        ]
    )
    coefficients = np.array([level, 0.0, 0.0])
    residual = values - level
    for _ in range(rounds):
        centre = _median(residual[keep])
        if noise_sigma is None:
            spread = _MAD_TO_SIGMA * _median(np.abs(residual[keep] - centre))
        else:
            spread = noise_sigma
        new_keep = residual <= centre + 2.5 * max(spread, _QUANTISATION_NOISE)
        paper = design[new_keep]
        try:
            coefficients = np.linalg.solve(paper.T @ paper, paper.T @ values[new_keep])
        except np.linalg.LinAlgError:  # too few paper pixels to pin a plane down
            break
        converged = np.array_equal(new_keep, keep)
        keep = new_keep
        residual = values - design @ coefficients
        if converged:
            break
    if noise_sigma is None:
        noise_sigma = float(np.sqrt(np.mean(residual[keep] ** 2)))
    level, row_slope, column_slope = (float(c) for c in coefficients)
    return _PaperFit(level, row_slope, column_slope, max(noise_sigma, _QUANTISATION_NOISE))


def _pixel_noise(image: FloatImage) -> float:
    """Standard deviation of pixel noise, from differences between horizontal neighbours.

    The difference of two pixels with independent noise has sqrt(2) times its standard
    deviation; the median absolute difference ignores the minority of pairs that straddle
    an edge of the ink.
    """
    row_step = max(1, round(float(np.sqrt(image.size / _PLANE_SAMPLE_PIXELS))))
    differences = np.abs(np.diff(image[::row_step], axis=1)).ravel()
    if differences.size == 0:
        return 0.0
    return _MAD_TO_SIGMA * _median(differences) / float(np.sqrt(2.0))


def _unit_axis(length: int) -> NDArray[np.float64]:
    return np.arange(length) / length - 0.5


def _median(values: NDArray[np.floating]) -> float:
    """The (upper) median, without `np.median`'s overhead, which dominates on small arrays."""
    middle = values.size // 2
    return float(np.partition(values, middle)[middle])


def _main_span(profile: NDArray[np.floating]) -> tuple[int, int]:
    """[start, end) of the ink along one axis, leaving out small groups cut off by gaps."""
    indices = np.flatnonzero(profile > 0.0)
    if indices.size == 0:
        return 0, 0
    first, last = int(indices[0]), int(indices[-1])
    if last - first + 1 == indices.size:  # one unbroken run: nothing to leave out
        return first, last + 1
    gaps = np.flatnonzero(np.diff(indices) > 1)
    run_starts = np.concatenate(([indices[0]], indices[gaps + 1]))
    run_ends = np.concatenate((indices[gaps] + 1, [indices[-1] + 1]))
    cumulative = np.concatenate(([0.0], np.cumsum(profile, dtype=np.float64)))
    run_mass = cumulative[run_ends] - cumulative[run_starts]
    kept = np.flatnonzero(run_mass >= SPECK_MAX_FRACTION * cumulative[-1])
    if kept.size == 0:
        kept = np.array([int(np.argmax(run_mass))])
    return int(run_starts[kept[0]]), int(run_ends[kept[-1]])


def _clamped_offset(ideal: float, length: int, field_size: int) -> int:
    return int(min(max(round(ideal), 0), field_size - length))
