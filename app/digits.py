"""Turn an uploaded picture of a handwritten digit into the 28x28 input the MNIST model expects.

Why this module exists
    The MNIST MLP was trained on raw MNIST pixels, and MNIST images are very particular: a
    white digit on a pure black background, its bounding box scaled so the longest side is
    20 pixels (aspect ratio kept, anti-aliased), then placed in a 28x28 field so that its
    centre of mass sits at the centre. A multilayer perceptron has no translation or scale
    invariance at all, so an upload that differs in any of these respects (dark ink on light
    paper, off-centre, three times too big, grey paper, JPEG noise) is misclassified even
    when a person reads it at a glance. Rather than hope users crop perfectly, we redo the
    construction of MNIST on whatever we are given:

    1. `to_grayscale`: any Pillow mode to float luminance 0..255; transparency is
       composited over a background that contrasts with the drawing; large pictures are
       reduced first, because nothing finer than a few pixels per output pixel survives.
    2. `to_white_on_black`: detect the polarity from the border and the bulk of the
       pixels (both are mostly paper) and invert dark-on-light drawings.
    3. `remove_background`: subtract the (possibly unevenly lit) paper level, stretch the
       ink to 255 like MNIST's saturated stroke cores, and cut off noise at a level
       measured from the paper itself, so JPEG artefacts and paper texture become black.
    4. `crop_to_content`: the bounding box of the ink, ignoring isolated specks.
    5. `fit_in_box`: scale so the longest side is 20 pixels, aspect ratio kept.
    6. `center_by_mass`: place it in 28x28 with its centre of mass at the centre.

    Every step is a no-op (or very nearly) on a genuine MNIST digit, so the service sees
    MNIST test images exactly as the model was evaluated on them.

Conventions
    Arrays are float32, indexed [row, column], values 0..255, ink bright. The centre of
    mass of the 28x28 output is at (14.0, 14.0) in pixel-index coordinates (pixel (r, c)
    has its centre at (r, c)), to within half a pixel because shifts are whole pixels; this
    is where MNIST's own centres of mass lie (test set: mean (13.99, 14.01), every digit
    within [13.5, 14.5]). A picture with no ink in it becomes all zeros.

Only NumPy and Pillow are used, and the float work happens on a small image, so the whole
pipeline costs well under a millisecond for a 28x28 upload and a few for a camera photo.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image

FloatImage = NDArray[np.float32]

FIELD_SIZE = 28
"""Side of the model's input, in pixels."""

BOX_SIZE = 20
"""Longest side of the digit's bounding box inside the field, as in MNIST."""

WORKING_MAX_SIDE = 160
"""Pictures larger than about this are reduced by a whole factor before any float work.

A digit that fills a third of the picture still keeps over twice the resolution of the
20-pixel box, which is all the anti-aliased downsampling in `fit_in_box` needs.
"""

NOISE_THRESHOLD_SIGMAS = 4.0
"""Ink must stand this many paper-noise standard deviations above the paper to count."""

MIN_INK_CONTRAST = 12.0
"""Below this difference between ink and paper (grey levels) the picture counts as blank."""

CROP_MIN_FRACTION = 0.2
CORE_PERCENTILE = 95

SPECK_MAX_FRACTION = 0.02
"""A blob cut off from the rest by empty rows or columns, holding less than this share of
the ink, is treated as dust and left out of the bounding box."""

_HIGH_BIT_DEPTH_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I", "F"}
_SIXTEEN_BIT_MAX = 65535.0
_STATISTICS_PIXELS = 4096


def to_grayscale(image: Image.Image, max_side: int | None = WORKING_MAX_SIDE) -> FloatImage:
    """Return the picture's luminance as a float32 array with values 0..255.

    Any Pillow mode is accepted. 16-bit and 32-bit images are scaled from their nominal
    range (0..65535) when their values exceed 0..255. Transparent areas are composited over
    a background chosen to suit the drawing: when the opaque part is a sparse drawing (less
    than half the area), the background contrasts with it (black strokes on a transparent
    PNG land on white); when the opaque part is most of the picture (a photo with
    transparent margins), the background matches its typical tone, i.e. the paper.

    Pictures whose longest side is at least twice `max_side` are first reduced by a whole
    factor (box averaging, so it also averages away pixel noise); `None` keeps full size.
    """
    alpha: FloatImage | None = None
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        gray_image = image.convert("F")
    elif image.has_transparency_data:
        rgba = image.convert("RGBA")
        gray_image = rgba.convert("L")
        alpha_image = rgba.getchannel("A")
        alpha_image = _reduce_large(alpha_image, max_side)
        alpha = np.asarray(alpha_image, dtype=np.float32) / 255.0
    else:
        gray_image = _convert_to_luminance(image)
    gray_image = _reduce_large(gray_image, max_side)
    gray = np.asarray(gray_image, dtype=np.float32)
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        gray = _scale_high_bit_depth(gray)
    if alpha is not None:
        gray = _composite_over_background(gray, alpha)
    return gray


def to_white_on_black(gray: FloatImage) -> FloatImage:
    """Return `gray` with ink bright and paper dark, inverting it if it is dark-on-light.

    The paper is what fills the border and most of the picture, so the border median and
    the overall median are both good guesses at the paper's level; their average is
    compared with the midpoint between the darkest and brightest pixels. White-on-black
    input is returned unchanged.
    """
    if gray.size == 0:
        return gray.astype(np.float32, copy=True)
    sample = _statistics_sample(gray)
    darkest, brightest = float(sample.min()), float(sample.max())
    paper_level = 0.5 * (_median(_border_pixels(gray)) + _median(sample))
    if paper_level > 0.5 * (darkest + brightest):
        return (255.0 - gray).astype(np.float32)
    return gray.astype(np.float32, copy=True)


def remove_background(white_on_black: FloatImage) -> FloatImage:
    """Make the paper exactly 0 and the ink's cores 255, dropping faint noise.

    The paper's level is modelled as a plane (so a lighting gradient across the picture is
    removed too) fitted robustly to the pixels that are not ink: ink is what stands out
    above the fit, and is left out of the next fit. The spread of the paper pixels around
    the plane measures the noise (sensor noise, paper texture, JPEG artefacts); anything
    less than `NOISE_THRESHOLD_SIGMAS` of it above the paper becomes 0 and the rest is
    stretched linearly so the brightest ink reaches 255. On a clean MNIST digit (paper
    exactly 0, ink up to 255) this changes nothing. A picture whose ink does not stand out
    clearly from the paper (`MIN_INK_CONTRAST`) comes back all zeros.
    """
    if white_on_black.size == 0:
        return np.zeros_like(white_on_black, dtype=np.float32)
    paper, noise_sigma = _fit_paper_plane(white_on_black)
    above_paper = white_on_black - paper
    threshold = NOISE_THRESHOLD_SIGMAS * noise_sigma
    ink_level = float(above_paper.max())
    if ink_level < max(MIN_INK_CONTRAST, 2.0 * threshold):
        return np.zeros_like(white_on_black, dtype=np.float32)
    stretched = (above_paper - threshold) * (255.0 / (ink_level - threshold))
    return np.clip(stretched, 0.0, 255.0).astype(np.float32)


def content_bounding_box(
    ink: FloatImage, min_fraction: float | None = None
) -> tuple[int, int, int, int] | None:
    """Return (top, left, bottom, right) of the ink, bottom/right exclusive, or None.

    Ink is any pixel above 0. A group of rows (or columns) separated from the rest by empty
    rows (columns) and holding less than `SPECK_MAX_FRACTION` of the ink is ignored.
    """
    if ink.size == 0:
        return None
    if min_fraction is None:
        min_fraction = CROP_MIN_FRACTION
    mass = np.where(ink > min_fraction * float(ink.max()), ink, 0.0)
    total = float(mass.sum())
    if total <= 0.0:
        return None
    rows = mass.sum(axis=1)
    columns = mass.sum(axis=0)
    top, bottom = _main_span(rows, total)
    left, right = _main_span(columns, total)
    # A speck's columns may have hidden a gap among the rows, and vice versa: look again
    # inside the box found so far.
    inner = mass[top:bottom, left:right]
    inner_total = float(inner.sum())
    top2, bottom2 = _main_span(inner.sum(axis=1), inner_total)
    left2, right2 = _main_span(inner.sum(axis=0), inner_total)
    return top + top2, left + left2, top + bottom2, left + right2


def crop_to_content(ink: FloatImage, min_fraction: float | None = None) -> FloatImage:
    """Return the part of `ink` inside its bounding box (see `content_bounding_box`).

    Pixels of ignored specks that fall inside the box are kept; with no ink at all the
    result is an empty (0, 0) array.
    """
    box = content_bounding_box(ink, min_fraction)
    if box is None:
        return np.zeros((0, 0), dtype=np.float32)
    top, left, bottom, right = box
    return ink[top:bottom, left:right].astype(np.float32, copy=True)


def fit_in_box(ink: FloatImage, box_size: int = BOX_SIZE) -> FloatImage:
    """Scale `ink` so its longest side is `box_size` pixels, keeping the aspect ratio.

    The short side is rounded to whole pixels (at least 1). Resampling is Lanczos, which
    Pillow applies with a support widened by the scale factor when shrinking, so it is
    properly anti-aliased; its slight overshoot is clipped back to 0..255. An array that
    already has the right size is returned as a copy, untouched.
    """
    height, width = ink.shape
    if height == 0 or width == 0:
        return np.zeros((0, 0), dtype=np.float32)
    scale = box_size / max(height, width)
    new_height = max(1, round(height * scale))
    new_width = max(1, round(width * scale))
    if (new_height, new_width) == (height, width):
        return ink.astype(np.float32, copy=True)
    resized = Image.fromarray(np.ascontiguousarray(ink, dtype=np.float32)).resize(
        (new_width, new_height), Image.Resampling.LANCZOS
    )
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 255.0)


def center_by_mass(ink: FloatImage, field_size: int = FIELD_SIZE) -> FloatImage:
    """Paste `ink` into a `field_size` square so its centre of mass is at the centre.

    The centre is (field_size / 2, field_size / 2) in pixel-index coordinates, i.e. (14, 14)
    for MNIST's 28x28 field, reached to within half a pixel by a whole-pixel shift (no
    resampling blur). If reaching it would push ink out of the field, the shift is limited
    so that all the ink stays inside. No ink gives an all-zero field.
    """
    field = np.zeros((field_size, field_size), dtype=np.float32)
    height, width = ink.shape
    total = float(ink.sum()) if ink.size else 0.0
    if total <= 0.0:
        return field
    if height > field_size or width > field_size:
        raise ValueError(f"ink of shape {ink.shape} does not fit in {field_size}x{field_size}")
    row_mass_centre = float(np.arange(height) @ ink.sum(axis=1)) / total
    column_mass_centre = float(np.arange(width) @ ink.sum(axis=0)) / total
    centre = field_size / 2
    top = _clamped_offset(centre - row_mass_centre, height, field_size)
    left = _clamped_offset(centre - column_mass_centre, width, field_size)
    field[top : top + height, left : left + width] = ink
    return field


def normalize_digit(image: Image.Image) -> NDArray[np.float32]:
    """Return the MNIST-style model input for a picture of one digit.

    The picture may be any size, mode and polarity (already EXIF-transposed by the
    caller). The result is a float32 (28, 28) array with values 0..255: a white digit on
    black whose longest side is 20 pixels and whose centre of mass is at the centre. A
    picture without ink gives all zeros.
    """
    gray = to_grayscale(image)
    ink = remove_background(to_white_on_black(gray))
    cropped = crop_to_content(ink)
    if cropped.size == 0:
        return np.zeros((FIELD_SIZE, FIELD_SIZE), dtype=np.float32)
    fitted = fit_in_box(cropped)
    if CORE_PERCENTILE is not None:
        nonzero = fitted[fitted > 0]
        core = float(np.percentile(nonzero, CORE_PERCENTILE)) if nonzero.size else 0.0
        if core > 0:
            fitted = np.clip(fitted * (255.0 / core), 0, 255).astype(np.float32)
    return center_by_mass(fitted)


def _convert_to_luminance(image: Image.Image) -> Image.Image:
    try:
        return image.convert("L")
    except ValueError:  # modes such as HSV have no direct conversion to L
        return image.convert("RGB").convert("L")


def _reduce_large(image: Image.Image, max_side: int | None) -> Image.Image:
    if max_side is None:
        return image
    factor = max(image.size) // max_side
    return image.reduce(factor) if factor >= 2 else image


def _scale_high_bit_depth(gray: FloatImage) -> FloatImage:
    brightest = float(gray.max()) if gray.size else 0.0
    if brightest > 255.0:
        gray = gray * (255.0 / max(brightest, _SIXTEEN_BIT_MAX))
    return np.clip(gray, 0.0, 255.0).astype(np.float32)


def _composite_over_background(gray: FloatImage, alpha: FloatImage) -> FloatImage:
    coverage = float(alpha.mean())
    if coverage <= 0.0:
        return np.zeros_like(gray)
    drawing_tone = float((gray * alpha).sum()) / float(alpha.sum())
    if coverage < 0.5:
        background = 255.0 if drawing_tone < 128.0 else 0.0
    else:
        background = float(np.median(gray[alpha >= 0.5]))
    return (gray * alpha + background * (1.0 - alpha)).astype(np.float32)


def _statistics_sample(image: FloatImage, max_pixels: int = 4096) -> FloatImage:
    """Every k-th row and column, so medians stay cheap on large pictures."""
    step = max(1, int(np.sqrt(image.size / max_pixels)))
    return image[::step, ::step].ravel()


def _border_pixels(image: FloatImage) -> FloatImage:
    return np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]])


def _main_span(profile: NDArray[np.float64], total: float) -> tuple[int, int]:
    """The [start, end) of the ink along one axis, without small groups cut off by gaps."""
    occupied = profile > 0.0
    indices = np.flatnonzero(occupied)
    if indices.size == 0:
        return 0, 0
    # Runs of consecutive occupied indices.
    breaks = np.flatnonzero(np.diff(indices) > 1)
    run_starts = np.concatenate(([indices[0]], indices[breaks + 1]))
    run_ends = np.concatenate((indices[breaks] + 1, [indices[-1] + 1]))
    cumulative = np.concatenate(([0.0], np.cumsum(profile)))
    run_mass = cumulative[run_ends] - cumulative[run_starts]
    kept = np.flatnonzero(run_mass >= SPECK_MAX_FRACTION * total)
    if kept.size == 0:
        kept = np.array([int(np.argmax(run_mass))])
    return int(run_starts[kept[0]]), int(run_ends[kept[-1]])


def _clamped_offset(ideal: float, length: int, field_size: int) -> int:
    return int(min(max(round(ideal), 0), field_size - length))


def _fit_paper_plane(image: FloatImage, rounds: int = 3) -> tuple[FloatImage, float]:
    """Least-squares plane through the paper pixels, and the paper's noise level.

    Works on a sparse sample of pixels. Each round measures the noise as the median
    absolute deviation from the current fit and refits to the pixels less than 2.5 noise
    standard deviations above it, which drops the bright ink and leaves the paper. The
    noise level returned is the root mean square of those paper pixels around the plane.
    """
    height, width = image.shape
    step = max(1, int(np.sqrt(image.size / _STATISTICS_PIXELS)))
    sample = image[::step, ::step].astype(np.float64)
    row_axis = np.arange(0, height, step) / height - 0.5
    column_axis = np.arange(0, width, step) / width - 0.5
    design = np.column_stack(
        [
            np.ones(sample.size),
            np.repeat(row_axis, column_axis.size),
            np.tile(column_axis, row_axis.size),
        ]
    )
    values = sample.ravel()
    fit = np.full(values.size, _median(values))
    coefficients = np.array([fit[0], 0.0, 0.0])
    keep = np.ones(values.size, dtype=bool)
    for round_number in range(rounds):
        residual = values - fit
        centre = _median(residual[keep])
        spread = 1.4826 * _median(np.abs(residual[keep] - centre))
        new_keep = residual <= centre + 2.5 * spread
        if round_number > 0 and np.array_equal(new_keep, keep):
            break
        keep = new_keep
        paper_design = design[keep]
        try:
            coefficients = np.linalg.solve(
                paper_design.T @ paper_design, paper_design.T @ values[keep]
            )
        except np.linalg.LinAlgError:  # too few paper pixels to pin a plane down
            break
        fit = design @ coefficients
    paper_residual = (values - fit)[keep]
    noise_sigma = float(np.sqrt(np.mean(paper_residual**2))) if paper_residual.size else 0.0
    plane = (
        coefficients[0]
        + coefficients[1] * (np.arange(height) / height - 0.5)[:, None]
        + coefficients[2] * (np.arange(width) / width - 0.5)[None, :]
    )
    return plane.astype(np.float32), noise_sigma


def _median(values: NDArray[np.floating]) -> float:
    """The (upper) median, without `np.median`'s overhead, which dominates on small arrays."""
    middle = values.size // 2
    return float(np.partition(values, middle)[middle])
