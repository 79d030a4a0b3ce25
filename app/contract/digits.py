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
    2. `crop_to_paper`: a light sheet photographed on a darker table (or under a
       scanner's dark lid) is cropped to, and the table painted over, so that the sheet
       is the paper and not the "ink" of step 3.
    3. `to_white_on_black`: detect the polarity from the border, which is mostly paper,
       and invert dark-on-light drawings.
    4. `remove_background`: subtract the paper's level (a plane, or on photos a quadratic
       surface, so a lighting gradient and darker corners go too), cut off the paper's own
       noise (JPEG artefacts, texture) at a level measured on the paper, and stretch the
       ink to 255 like MNIST's saturated strokes.
    5. `remove_ruled_lines`: erase the printed lines of ruled and squared paper (long,
       thin, straight, nearly horizontal or vertical, fainter than the pen or repeated
       like a ruling), keeping the strokes that cross or touch them.
    6. `crop_to_content`: the bounding box of the ink, ignoring its faint soft edge and
       isolated specks.
    7. `fit_in_box`: scale so the longest side is 20 pixels, aspect ratio kept.
    8. `center_by_mass`: place it in 28x28 with its centre of mass at the centre.

    On a genuine MNIST digit every step is a no-op or very nearly one, so MNIST test
    images sent to the service are classified as well as the raw arrays.

Whether a digit was found
    `normalize_digit` also says whether the picture holds a plausible digit at all, so
    that a blank page, a page of ruled lines or the edge of a sheet is not silently read as
    a "5". What is left after step 5 is a digit when all of these hold (each constant
    documents its reason; the thresholds were set on synthetic photos, `docs/digits.md`,
    with wide margins on the side of finding digits):

    - there is ink at all, standing clear of the paper's noise (`remove_background`);
    - contrast: the ink lacks at least `DIGIT_MIN_CONTRAST` of the paper's light (pen and
      pencil lack half or more; paper texture, smudges and leftover shading far less);
    - not a shadow: ink fainter than `FAINT_INK_CONTRAST` does not come in from the
      picture's border (`FAINT_INK_MAX_BORDER_CONTACT`), as a cast shadow, or the lit part
      of a shadowed page, does;
    - not a speck: its bounding box is at least `DIGIT_MIN_SIZE` of the picture and
      `DIGIT_MIN_PIXELS` pixels;
    - not a dash: its box is at least `DIGIT_MIN_ASPECT` as tall as wide (a piece of a
      ruled line is flat, no digit is);
    - strokes, not dots or grain: at least `DIGIT_MIN_STROKE_LENGTH` inked pixels per
      pixel of the box's side, and at most `DIGIT_MAX_ISOLATED` of them alone.

    The pixels are returned either way (all zeros when no ink is left).

Conventions
    Arrays are float32, indexed [row, column], values 0..255, ink bright. The centre of
    mass of the 28x28 output is at (14.0, 14.0) in pixel-index coordinates (pixel (r, c)
    has its centre at (r, c)), to within half a pixel because the digit is shifted by whole
    pixels. That is where MNIST's own centres of mass are (test set: mean (13.99, 14.01),
    every digit within [13.5, 14.5]). A picture with no ink in it becomes all zeros.

Only NumPy and Pillow are used, and the float work happens on a small image, so the
pipeline costs well under a millisecond for a 28x28 upload and a few for a camera photo
(`docs/digits.md` has the figures).
"""

from __future__ import annotations

from typing import NamedTuple, TypeVar

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageChops

from app.contract.images import DEEP_MODES, deep_to_8bit

FloatImage = NDArray[np.float32]
BoolImage = NDArray[np.bool_]

FIELD_SIZE = 28
"""Side of the model's input, in pixels."""

BOX_SIZE = 20
"""Longest side of the digit's bounding box inside the field, as in MNIST."""

WORKING_MAX_SIDE = 160
"""Pictures at least twice this size are reduced by a whole factor before any float work.

A digit a third of the picture's size still gets over twice the resolution of the 20-pixel
box, which is all the anti-aliased downsampling in `fit_in_box` needs.
"""

CURVED_PAPER_MIN_SIDE = 32
"""Pictures at least this size get a quadratic paper surface instead of a plane: photos,
whose corners a camera darkens. Smaller ones are drawings or MNIST-like digits."""

NOISE_THRESHOLD_SIGMAS = 4.0
"""Ink must stand this many standard deviations of paper noise above the paper to count."""

MAX_NOISE_SHARE = 0.5
"""Paper noise whose cut-off would exceed this share of the ink's contrast is not believed.

Such a spread comes from having too little paper to measure (a digit cropped tight, whose
soft edges then pass for paper), so the noise is measured between neighbouring pixels.
At one half, this is exactly when the ink would otherwise not clear twice the cut-off and
be dropped (`remove_background`): a tight crop of a bold "1" is kept.
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

PAPER_MIN_SIDE = 32
"""Pictures smaller than this (MNIST's own 28x28 among them) are not searched for a sheet."""

PAPER_MIN_CONTRAST = 40.0
"""A sheet must be this many grey levels lighter than its surround to be told apart."""

PAPER_MAX_SURROUND_SHARE = 0.6
"""A sheet's surround reflects at most this share of the sheet's light. A shadow on a page
takes away less than half of it, so the shadowed part is not taken for a table."""

SURROUND_MIN_BORDER = 0.5
"""A sheet's dark surround covers at least this share of the picture's border: it is seen
on two sides or more. A table seen along one side only is not looked for (see
`crop_to_paper`)."""

PAPER_MIN_AREA = 0.3
"""A sheet covers at least this share of the picture."""

PAPER_MIN_SOLIDITY = 0.85
"""At least this share of a sheet is light: the ink written on it is a minority."""

PAPER_MIN_EXTENT = 0.5
"""A sheet's bounding box spans at least this share of the picture's width and height."""

PAPER_MAX_ASPECT = 2.5
"""A sheet's bounding box is at most this many times longer than wide; a bold "1" is not."""

PAPER_MIN_RECTANGULARITY = 0.85
"""A sheet fills at least this share of its tightest bounding rectangle (turned to fit it,
by up to `PAPER_MAX_TURN` degrees): it is a rectangle, seen turned and perhaps cut by the
picture's edges (0.9 and more). Light strokes, however bold, are not: a bold white "0" or
"8" cropped tight fills at most about 0.8 of it, a "7" far less."""

PAPER_MAX_TURN = 20
"""Degrees by which a sheet may be turned in the picture and still be found."""

PAPER_RIM = 0.01
"""Share of the picture's longest side painted over along a sheet's edge (at least one
pixel): the blur between table and paper that would otherwise read as a faint frame."""

LINE_MIN_LENGTH = 40
"""Pictures narrower (shorter) than this many pixels are not searched for horizontal
(vertical) ruled lines."""

LINE_MIN_SPAN = 0.8
"""A ruled line is found along at least this share of the picture's width, from near one
edge to near the other (a digit's bar, however long, stops short of the page's edges
unless the picture is cropped tight around it)."""

LINE_MIN_SEEN = 0.25
"""A line that leaves the picture through its top or bottom (tilted, near the edge) is
still erased when at least this share of the picture's width of it is seen (and
`LINE_MIN_SPAN` of the part inside the picture)."""

LINE_MAX_THICKNESS = 0.05
"""A ruled line is at most this share of the picture's height thick (and never needs to be
thinner than 3 pixels): thicker bars are strokes or the edge of a table."""

LINE_MAX_TILT = 0.035
"""Largest slope of a ruled line, in rows per column (2 degrees): the paper in a photo is
never quite straight, but a digit's diagonal is far steeper."""

LINE_MAX_WOBBLE = 1.0
"""A printed line's centre stays within this many pixels of a straight line..."""

LINE_STRAIGHT_SHARE = 0.6
"""...in at least this share of the strips it is followed through."""

LINE_MAX_LEVEL_SHARE = 0.75
"""A line this much fainter than the other ink (or fainter still) is printed on the paper,
not drawn: printed rules are thin and light next to pen or pencil strokes."""

LINE_KEEP_LEVEL_SHARE = 0.65
"""On a line at most this share of the other ink's level, brighter pixels are kept: they
are a stroke lying along the line, which the crossing test would not see."""

LINE_CONTACT_SHARE = 0.5
"""Ink beside a line counts as a stroke touching or crossing it from this share of the
strokes' level: fainter ink is the line's own blur and JPEG ringing."""

LINE_CONTACT_ROWS = 2
"""A stroke touches a line when it has ink within this many rows of the line's edge: only
a stroke that runs into the line, not one passing nearby (the inside of a small loop)."""

LINE_BLUR = 1.0
"""Pixels erased on either side of a line beyond its measured thickness: its blurred and
JPEG-smeared edges."""

LINE_FAMILY_LEVEL_RATIO = 0.6
"""Lines whose levels are within this ratio of each other belong to the same ruling."""

LINE_ALONE_REST_SHARE = 0.05
"""When the ink outside the lines is less than this share of the lines' own, the picture is
a page of lines and nothing else."""

DIGIT_MIN_CONTRAST = 0.2
"""Ink lacks at least this share of the paper's light (or light ink has this much more than
a dark ground): fainter marks are paper texture, a smudge or leftover shading. Pencil
lacks about half, a pen most of it."""

FAINT_INK_CONTRAST = 0.45
"""Ink fainter than this that touches the picture's border (`FAINT_INK_MAX_BORDER_CONTACT`)
is a shadow falling into the picture, or the lit part of a shadowed page."""

FAINT_INK_MAX_BORDER_CONTACT = 0.05
"""Share of the border a faint mark may touch and still count as a digit."""

DIGIT_MIN_SIZE = 0.06
"""A digit's bounding box is at least this share of the picture's longest side..."""

DIGIT_MIN_PIXELS = 8
"""...and this many pixels of the working picture: smaller ink is a speck."""

DIGIT_MIN_STROKE_LENGTH = 0.8
"""A digit has at least this many inked pixels per pixel of its box's longest side: at
least one stroke across its box. Dots scattered over a box (what a grid leaves) have not."""

DIGIT_MIN_ASPECT = 0.3
"""A digit's box is at least this tall for its width (MNIST's widest: 0.4); a dash, or a
piece of ruled line, is flatter."""

DIGIT_MAX_ISOLATED = 0.15
"""At most this share of a digit's inked pixels stand alone: strokes are continuous,
grain and JPEG noise are not."""

_FIELD_AXIS = np.arange(FIELD_SIZE)
_Pixel = TypeVar("_Pixel", bound=np.generic)
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


def crop_to_paper(gray: FloatImage) -> tuple[FloatImage, BoolImage | None]:
    """Find a light sheet of paper photographed on a darker surface and crop to it.

    A sheet lying on a table (or under a scanner's dark lid) has a dark surround that
    touches the picture's border; left alone, polarity detection would take that surround
    for the paper and the sheet for ink. The surround is found by walking in from the
    border along every row and column until the first light pixel (midway between the
    border's typical level and the picture's brightest), which marks exactly the outside
    of a convex sheet, turned or not. It is believed to be a sheet only when it looks like
    one (`_looks_like_a_sheet`: large, mostly light, seen on a darker surround on two sides
    or more, and a rectangle); then the picture is cropped to the sheet's bounding box and
    the surround left inside the box (the corners of a turned sheet, and a thin rim along
    its edge) is painted the paper's level.

    Returns the cropped picture and a mask of those painted pixels, for `remove_background`
    to ignore; or the picture unchanged and None when no sheet is found, which is the case
    for any picture smaller than `PAPER_MIN_SIDE`. Not found, and left to the later steps:
    a table seen along one side only (it cannot be told from the bar of a digit cropped
    tight), a table less than `PAPER_MAX_SURROUND_SHARE` as dark as the paper, and a sheet
    turned by more than `PAPER_MAX_TURN` degrees.
    """
    height, width = gray.shape
    if min(height, width) < PAPER_MIN_SIDE:
        return gray, None
    surround_level = _median(_border_pixels(gray))
    step = max(1, round(float(np.sqrt(gray.size / _PLANE_SAMPLE_PIXELS))))
    sample = gray[::step, ::step].ravel()
    paper_level = _quantile(sample, 0.95)
    if paper_level - surround_level < max(
        PAPER_MIN_CONTRAST, (1.0 - PAPER_MAX_SURROUND_SHARE) * paper_level
    ):
        return gray, None
    midway = 0.5 * (surround_level + paper_level)
    light = gray > midway
    # Cheap refusals first: a light border, or too little light for a sheet (light strokes
    # on a dark background, the usual white-on-black digit, end here).
    if float(np.mean(_border_pixels(light))) > 1.0 - SURROUND_MIN_BORDER:
        return gray, None
    if float(np.mean(sample > midway)) < PAPER_MIN_AREA * PAPER_MIN_SOLIDITY:
        return gray, None
    spans = _light_spans(light)
    if not _looks_like_a_sheet(light, spans):
        return gray, None
    first, last, top, bottom = spans
    rows_with_paper = np.flatnonzero(last >= first)
    columns_with_paper = np.flatnonzero(bottom >= top)
    crop = (
        slice(int(rows_with_paper[0]), int(rows_with_paper[-1]) + 1),
        slice(int(columns_with_paper[0]), int(columns_with_paper[-1]) + 1),
    )
    # The rim: pixels that the lens and JPEG blur between table and paper.
    rim = max(1, round(PAPER_RIM * max(height, width)))
    outside = _outside(spans, (height, width), rim)[crop]
    cropped = gray[crop].copy()
    paper = cropped[light[crop] & ~outside]
    if paper.size:
        paper_level = _median(paper[:: max(1, paper.size // 4096)])
    cropped[outside] = np.float32(paper_level)
    return cropped, outside


def to_white_on_black(gray: FloatImage) -> FloatImage:
    """Return `gray` with the ink bright and the paper dark, inverting it if needed.

    Pixels above the midpoint between the darkest and brightest are "light". If most of
    the picture's border is light, the paper is light and the picture is inverted. A
    border split about evenly (a digit cropped tight enough to run along the edges)
    defers to the whole picture, which is mostly paper too. White-on-black input and
    blank pictures are returned unchanged (as a copy).
    """
    if _has_light_paper(gray):
        return (255.0 - gray).astype(np.float32)
    return gray.astype(np.float32, copy=True)


def _has_light_paper(gray: FloatImage) -> bool:
    """Whether the paper is lighter than the ink (see `to_white_on_black`)."""
    if gray.size == 0:
        return False
    midpoint = 0.5 * (float(gray.min()) + float(gray.max()))
    light_border = float(np.mean(_border_pixels(gray) > midpoint))
    if 0.4 <= light_border <= 0.6:
        return _median(gray.ravel()) > midpoint
    return light_border > 0.6


def remove_background(white_on_black: FloatImage, ignore: BoolImage | None = None) -> FloatImage:
    """Make the paper exactly 0 and the brightest ink 255, dropping faint noise.

    The paper's level is modelled as a plane, or a quadratic surface on pictures of at
    least `CURVED_PAPER_MIN_SIDE`, so a lighting gradient across the picture and a
    camera's darker corners are removed too, fitted robustly to the pixels that are not
    ink (ink is what stands out above the fit and is left out of the next one). Pixels in
    `ignore` (the surround `crop_to_paper` painted over) take no part and come back 0.
    The spread of the paper pixels around the surface measures the noise (sensor noise,
    paper texture, JPEG artefacts, lighting the surface does not follow); anything less
    than `NOISE_THRESHOLD_SIGMAS` of it above the paper becomes 0 and the rest is
    stretched linearly up to 255. When that spread is implausibly large next to the ink
    (`MAX_NOISE_SHARE`), there was too little paper to measure, as in a digit cropped
    tight, and the noise is measured between neighbouring pixels instead. On a clean MNIST
    digit (paper exactly 0, ink up to 255) this changes nothing. A picture whose ink does
    not stand out clearly from the paper (`MIN_INK_CONTRAST`, and twice the noise
    threshold) comes back all zeros.
    """
    return _remove_background(white_on_black, ignore)[0]


class _Contrast(NamedTuple):
    """How the ink stood out in `remove_background`, in grey levels of its input."""

    ink_level: float
    """The brightest ink above the paper."""
    noise_sigma: float
    """The paper's noise (standard deviation)."""
    paper_level: float
    """The paper's own level in the white-on-black picture, at its centre."""


def _remove_background(
    white_on_black: FloatImage, ignore: BoolImage | None
) -> tuple[FloatImage, _Contrast]:
    if white_on_black.size == 0:
        return np.zeros_like(white_on_black, dtype=np.float32), _Contrast(0.0, 0.0, 0.0)
    paper = _fit_paper(white_on_black, ignore=ignore)
    above_paper = paper.subtracted_from(white_on_black)
    if ignore is not None:
        above_paper[ignore] = 0.0
    ink_level = float(above_paper.max())
    if NOISE_THRESHOLD_SIGMAS * paper.noise_sigma > MAX_NOISE_SHARE * ink_level:
        pixel_noise = max(_pixel_noise(white_on_black), _QUANTISATION_NOISE)
        paper = paper._replace(noise_sigma=pixel_noise)
    contrast = _Contrast(ink_level, paper.noise_sigma, paper.level)
    threshold = NOISE_THRESHOLD_SIGMAS * paper.noise_sigma
    if ink_level < max(MIN_INK_CONTRAST, 2.0 * threshold):
        return np.zeros_like(white_on_black, dtype=np.float32), contrast
    stretched = (above_paper - threshold) * np.float32(255.0 / (ink_level - threshold))
    return np.clip(stretched, 0.0, 255.0, out=stretched).astype(np.float32, copy=False), contrast


def remove_ruled_lines(ink: FloatImage) -> FloatImage:
    """Erase the printed lines of ruled or squared paper, keeping the strokes that cross them.

    A ruled line is long, thin, straight and nearly horizontal (vertical, for the squares of
    graph paper or a margin). The picture is cut into vertical strips, within which a
    tilted line is still a run of inked rows, and tracks are followed from strip to strip
    at each of a few slopes up to `LINE_MAX_TILT`. A line is found along `LINE_MIN_SPAN`
    of the width (height), from near one edge to near the other (or, near the top or
    bottom, along `LINE_MIN_SEEN` of it before it leaves the picture), at most
    `LINE_MAX_THICKNESS` thick, with paper on both sides, and straight: its centre stays
    within `LINE_MAX_WOBBLE` of a straight line in most strips, as a printed line's does
    and a handwritten stroke's does not.

    Such a line could still be a digit's bar in a picture cropped tight around it (a "7",
    a "5"), so it is erased only when the picture says it is printed: it is clearly
    fainter than the other ink (`LINE_MAX_LEVEL_SHARE`), or it has a sibling of similar
    level along the same direction (a ruling), or no stroke touches it (a margin line
    beside the digit), or there is next to no other ink (`LINE_ALONE_REST_SHARE`: a page
    of lines). Vertical lines (graph paper, a notebook's margin) are only looked for on a
    page with horizontal ones, so a lone vertical stroke, a "1", is never taken for one,
    and most pictures pay for one search only. Where a stroke crosses or touches the line
    (ink just above or below it, outside any line), and where a faint line is overlaid by
    ink much brighter than itself (`LINE_KEEP_LEVEL_SHARE`), the pixels are kept. The
    remaining ink is stretched back to 255 if the lines were the brightest thing. No
    horizontal line found returns `ink` itself.
    """
    inked = ink > 0.0
    horizontal = _find_lines(inked)
    if not horizontal:
        # Vertical lines come with horizontal ones (graph paper, a notebook's margin); a
        # picture without any is not searched for them, which halves the cost for most.
        return ink
    vertical = _find_lines(inked.T)
    in_horizontal = np.zeros(ink.shape, dtype=bool)
    for line in horizontal:
        _paint_band(in_horizontal, line)
    in_vertical = np.zeros(ink.shape, dtype=bool)
    for line in vertical:
        _paint_band(in_vertical.T, line)
    in_lines = in_horizontal | in_vertical
    strokes = np.where(in_lines, np.float32(0.0), ink)
    stroke_values = strokes[strokes > 0.0]
    stroke_level = _quantile(stroke_values, 0.9) if stroke_values.size else 0.0
    alone = float(stroke_values.sum()) < LINE_ALONE_REST_SHARE * float(ink[in_lines].sum())
    result = ink.copy()
    erased_any = False
    for lines, target, stroke_view, other_lines in (
        (horizontal, result, strokes, in_vertical),
        (vertical, result.T, strokes.T, in_horizontal.T),
    ):
        levels = [_line_level(target, line) for line in lines]
        for line, level in zip(lines, levels, strict=True):
            around = _surroundings(stroke_view, line, LINE_CONTACT_SHARE * stroke_level)
            fainter = level <= LINE_MAX_LEVEL_SHARE * stroke_level
            siblings = sum(
                LINE_FAMILY_LEVEL_RATIO * level <= other <= level / LINE_FAMILY_LEVEL_RATIO
                for other in levels
            )
            detached = not alone and not around.touched
            if fainter or siblings >= 2 or detached or alone:
                # Ink much brighter than a faint line is a stroke lying along it, unless it
                # is where two lines cross (graph paper).
                if level <= LINE_KEEP_LEVEL_SHARE * stroke_level:
                    keep_above = 0.5 * (level + stroke_level)
                else:
                    keep_above = np.inf
                _erase_line(target, line, around, other_lines, keep_above)
                erased_any = True
    if erased_any:
        brightest = float(result.max())
        if 0.0 < brightest < 255.0:
            result *= np.float32(255.0 / brightest)
    return result


class _Line(NamedTuple):
    """A nearly horizontal line: its centre row at column c is centre + slope * (c - pivot)."""

    centre: float
    slope: float
    pivot: float
    half_width: float

    @property
    def reach(self) -> int:
        """How far along the line a stroke touching it keeps its pixels."""
        return int(np.ceil(self.half_width))

    def rows(self, width: int) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
        """First and last row of the line in every column."""
        centres = self.centre + self.slope * (np.arange(width) - self.pivot)
        top = np.floor(centres - self.half_width).astype(np.intp)
        bottom = np.ceil(centres + self.half_width).astype(np.intp)
        return top, bottom


_STRIP_WIDTH = 16  # columns per strip when following lines: a 2-degree tilt drifts 0.6 rows
_LINE_CLEAR_ROWS = 5  # rows from a line's edge to paper, in the quick test; less than squares


def _find_lines(inked: BoolImage) -> list[_Line]:
    """The ruled lines running across the `inked` pixels from side to side (see
    `remove_ruled_lines`)."""
    height, width = inked.shape
    if width < LINE_MIN_LENGTH or height < 3:
        return []
    strips = max(4, width // _STRIP_WIDTH)
    strip_width = width // strips
    start = (width - strips * strip_width) // 2
    inked = inked[:, start : start + strips * strip_width]
    # Inked pixels of each row in each strip, as a product with the strips' indicator
    # (far faster than NumPy's sum over a short last axis).
    in_strip = np.repeat(np.eye(strips, dtype=np.float32), strip_width, axis=0)
    # Pairs of rows, so that a thin line drifting from one row to the next still fills one.
    paired = (inked[:-1] | inked[1:]).astype(np.float32)
    lined = (paired @ in_strip) * 2 >= strip_width
    needed = int(np.ceil(LINE_MIN_SPAN * strips))
    seen_needed = max(2, int(np.ceil(LINE_MIN_SEEN * strips)))
    positions = np.arange(strips) - (strips - 1) / 2
    steps = int(np.ceil(LINE_MAX_TILT * strip_width * strips / 2))
    max_thickness = max(3.0, LINE_MAX_THICKNESS * height)
    # A quick refusal before following tracks, which most pictures get. A line has paper
    # just above or below it in every strip that no stroke crosses (a stroke's side does
    # not): in half the strips at least (a quarter at the top or bottom, where it may
    # leave the picture), all within the few rows its tilt spans.
    clear = _LINE_CLEAR_ROWS
    paper_above = np.zeros_like(lined)
    paper_above[clear:] = ~lined[:-clear]
    paper_below = np.zeros_like(lined)
    paper_below[:-clear] = ~lined[clear:]
    thin = lined & (paper_above | paper_below)
    window = min(height - 1, 2 * steps + 2)
    cumulative = np.cumsum(thin, axis=0)
    spanned = cumulative[window - 1 :].copy()
    spanned[1:] -= cumulative[:-window]
    strips_thin = np.count_nonzero(spanned, axis=1)
    # Tracks are followed from the rows whose window passes; at the top and bottom they
    # may run partly outside the picture (a tilted line near its edge).
    half = max(seen_needed, (strips + 1) // 2)
    starts = [np.flatnonzero(strips_thin >= half) + steps + shift for shift in (0, 1)]
    if strips_thin[0] >= seen_needed:
        starts.append(np.arange(-steps - 1, window))
    if strips_thin[-1] >= seen_needed:
        starts.append(np.arange(height - 1 - window, height + steps))
    rows = np.unique(np.concatenate(starts))
    if rows.size == 0:
        return []
    # Every track at once: drift (rows per strip) x starting row x strip.
    drifts = np.arange(-steps, steps + 1) * (2.0 / strips)
    offsets = np.round(drifts[:, None] * positions[None, :]).astype(np.intp)
    track = rows[None, :, None] + offsets[:, None, :]
    inside = (track >= 0) & (track < height - 1)
    hits = lined[np.clip(track, 0, height - 2), np.arange(strips)] & inside
    score = hits.sum(axis=2)
    # Along most of the part of the track inside the picture (a tilted line near the top or
    # bottom leaves it), from near one end of that part to near the other.
    first_inside = inside.argmax(axis=2)
    last_inside = strips - 1 - inside[:, :, ::-1].argmax(axis=2)
    first_hit = np.where(score > 0, hits.argmax(axis=2), strips)
    last_hit = strips - 1 - hits[:, :, ::-1].argmax(axis=2)
    spans = (
        (score >= seen_needed)
        & (score >= np.ceil(LINE_MIN_SPAN * inside.sum(axis=2)))
        & (first_hit <= first_inside + 1)
        & (last_hit >= last_inside - 1)
    )
    score[~spans] = 0
    best_score = score.max(axis=0)
    best_drift = drifts[score.argmax(axis=0)]
    candidates = rows[best_score > 0]
    if candidates.size == 0:
        return []
    pivot = start + strips * strip_width / 2 - 0.5
    row_counts = (inked.astype(np.float32) @ in_strip).astype(np.intp)
    fits: list[tuple[_StraightFit, float]] = []
    for group in np.split(candidates, np.flatnonzero(np.diff(candidates) > 1) + 1):
        thickness = max(1.0, float(group.size) - 1.0)  # pairs of rows add one
        if thickness > max_thickness:
            continue
        indices = np.searchsorted(rows, group)
        drift = float(best_drift[indices[np.argmax(best_score[indices])]])
        offsets = np.round(drift * positions).astype(np.intp)
        # A line has paper on both sides; the edge of a large inked area does not.
        if (
            max(
                _count_along(lined, int(group[0]) - 2, offsets),
                _count_along(lined, int(group[-1]) + 2, offsets),
            )
            >= needed
        ):
            continue
        fit = _straight_fit(row_counts, float(group.mean()) + 0.5, offsets, thickness)
        if fit is not None:
            fits.append((fit, thickness))
    # The lines of a ruling are parallel: three or more give its tilt better than each
    # alone, and the part of a line seen near the top or bottom (short, and cut by the
    # border) takes the tilt of the lines seen whole.
    full_drifts = [fit.drift for fit, _ in fits if fit.seen == strips]
    if len(fits) >= 3:
        full_drifts = [fit.drift for fit, _ in fits]
    ruling_drift = _median(np.array(full_drifts)) if full_drifts else None
    lines = []
    for fit, thickness in fits:
        drift, centre = fit.drift, fit.centre
        if ruling_drift is not None and (fit.seen < strips or len(fits) >= 3):
            drift, centre = ruling_drift, centre + (fit.drift - ruling_drift) * fit.middle
        lines.append(_Line(centre, drift / strip_width, pivot, thickness / 2 + LINE_BLUR))
    return lines


class _StraightFit(NamedTuple):
    drift: float
    """Rows per strip."""
    centre: float
    """Row at the middle strip."""
    middle: float
    """Mean position of the strips fitted, from the middle strip."""
    seen: int
    """Strips in which the line has ink."""


def _straight_fit(
    row_counts: NDArray[np.intp], centre: float, offsets: NDArray[np.intp], thickness: float
) -> _StraightFit | None:
    """The straight line through the ink along a track, or None if the ink does not run
    straight, as a printed line does and a handwritten stroke does not: in most strips
    (`LINE_STRAIGHT_SHARE`; a crossing stroke pulls the few it crosses) the ink's centre
    row is within `LINE_MAX_WOBBLE` of the fit. It must be seen in `LINE_MIN_SEEN` of the
    strips."""
    height, strips = row_counts.shape
    reach = int(np.ceil(thickness / 2)) + 1
    window = np.arange(-reach, reach + 1)
    rows = np.round(centre - 0.5).astype(np.intp) + offsets[None, :] + window[:, None]
    valid = (rows >= 0) & (rows < height)
    weights = np.where(valid, row_counts[np.clip(rows, 0, height - 1), np.arange(strips)], 0)
    totals = weights.sum(axis=0)
    seen = totals > 0
    if np.count_nonzero(seen) < max(2, LINE_MIN_SEEN * strips):
        return None
    centres = (weights * rows).sum(axis=0)[seen] / totals[seen]
    positions = np.flatnonzero(seen) - (strips - 1) / 2
    slope, intercept = _line_through(positions, centres)
    close = np.abs(centres - (slope * positions + intercept)) <= LINE_MAX_WOBBLE
    if np.count_nonzero(close) < LINE_STRAIGHT_SHARE * close.size:
        return None
    # Refit on the strips that agree, away from the pull of crossing strokes.
    slope, intercept = _line_through(positions[close], centres[close])
    middle = float(positions[close].mean())
    return _StraightFit(slope, intercept, middle, int(np.count_nonzero(seen)))


def _line_through(x: NDArray[np.floating], y: NDArray[np.floating]) -> tuple[float, float]:
    """Least-squares (slope, intercept) of y against x (`np.polyfit` costs ten times more)."""
    x_mean, y_mean = float(x.mean()), float(y.mean())
    spread = x - x_mean
    variance = float(spread @ spread)
    slope = float(spread @ (y - y_mean)) / variance if variance > 0 else 0.0
    return slope, y_mean - slope * x_mean


def _count_along(lined: BoolImage, row: int, offsets: NDArray[np.intp]) -> int:
    """How many strips are lined along the track through `row` with these offsets."""
    track = row + offsets
    valid = (track >= 0) & (track < lined.shape[0])
    return int(np.count_nonzero(lined[track[valid], np.flatnonzero(valid)]))


def _paint_band(mask: NDArray[np.bool_], line: _Line) -> None:
    height, width = mask.shape
    top, bottom = line.rows(width)
    rows = np.arange(height)[:, None]
    mask |= (rows >= top[None, :]) & (rows <= bottom[None, :])


def _line_level(ink: FloatImage, line: _Line) -> float:
    """The line's typical brightness: the median of its brightest pixel in each column
    where it is seen."""
    height, width = ink.shape
    top, bottom = line.rows(width)
    first, last = max(0, int(top.min())), min(height, int(bottom.max()) + 1)
    rows = np.arange(first, last)[:, None]
    band = (rows >= top[None, :]) & (rows <= bottom[None, :])
    peaks = np.where(band, ink[first:last], np.float32(0.0)).max(axis=0)
    seen = peaks[peaks > 0.0]  # a tilted line may leave the picture
    return _median(seen) if seen.size else 0.0


class _Surroundings(NamedTuple):
    """A line's rows (`band`) in the slab of rows `first:last` around it, and which columns
    have stroke ink just above and just below it."""

    first: int
    last: int
    band: BoolImage
    above: BoolImage
    below: BoolImage

    @property
    def touched(self) -> bool:
        return bool(self.above.any() or self.below.any())


def _surroundings(strokes: FloatImage, line: _Line, stroke_floor: float) -> _Surroundings:
    """Where stroke ink (brighter than `stroke_floor`) lies within `LINE_CONTACT_ROWS` of
    the line, above and below it."""
    height, width = strokes.shape
    top, bottom = line.rows(width)
    reach = LINE_CONTACT_ROWS
    first = max(0, int(top.min()) - reach)
    last = min(height, int(bottom.max()) + reach + 1)
    rows = np.arange(first, last)[:, None]
    band = (rows >= top[None, :]) & (rows <= bottom[None, :])
    stroke = strokes[first:last] > stroke_floor
    above = np.any(stroke & (rows >= top[None, :] - reach) & (rows < top[None, :]), axis=0)
    below = np.any(stroke & (rows > bottom[None, :]) & (rows <= bottom[None, :] + reach), axis=0)
    return _Surroundings(first, last, band, above, below)


def _erase_line(
    ink: FloatImage,
    line: _Line,
    around: _Surroundings,
    other_lines: BoolImage,
    keep_above: float,
) -> None:
    """Zero the line's pixels in `ink`, in place, except near where a stroke crosses or
    touches it, and where a run of ink brighter than `keep_above` lies along it (outside
    `other_lines`, whose crossings with it are brighter than either line)."""
    # A stroke crossing the line, touching it or lying along it has ink just above or just
    # below it (and a slanted one, on one side above and on the other below).
    touching = _widened(around.above | around.below, line.reach)
    slab = ink[around.first : around.last]
    bright = (slab > keep_above) & ~other_lines[around.first : around.last]
    # A stroke lying along the line is bright over a run of pixels, not one: single bright
    # pixels are the line's own noise and JPEG speckle.
    bright[:, 1:-1] &= bright[:, :-2] | bright[:, 2:]
    kept = touching[None, :] | bright
    slab[around.band & ~kept] = 0.0


def _widened(mask: NDArray[np.bool_], reach: int) -> NDArray[np.bool_]:
    """`mask` with every True spread `reach` places either way."""
    counts = np.concatenate(([0], np.cumsum(mask)))
    index = np.arange(mask.size)
    upper = np.minimum(mask.size, index + reach + 1)
    lower = np.maximum(0, index - reach)
    return counts[upper] > counts[lower]


def _quantile(values: NDArray[np.floating], share: float) -> float:
    index = min(values.size - 1, int(share * values.size))
    return float(np.partition(values, index)[index])


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
    """False when the picture holds no plausible digit (a blank page, only ruled lines, only
    a sheet's edge or a shadow, noise; see the module docstring): `pixels` are then what was
    left, all zeros when no ink was, and any answer about them is a guess."""


def normalize_digit(image: Image.Image) -> NormalizedDigit:
    """Return the MNIST-style model input for a picture of one digit.

    The picture may have any size, Pillow mode and polarity; the caller has already applied
    its EXIF orientation. The result's pixels are a float32 (28, 28) array with values
    0..255: a white digit on black, its longest side 20 pixels, its centre of mass at the
    centre. `found` says whether the ink left is a plausible digit (module docstring); a
    picture without ink gives all zeros and `found` False.
    """
    already_normalized = _as_mnist_form(image)
    if already_normalized is not None:
        return already_normalized
    gray, outside_paper = crop_to_paper(to_grayscale(image))
    light_paper = _has_light_paper(gray)
    white_on_black = (255.0 - gray).astype(np.float32) if light_paper else gray
    ink, contrast = _remove_background(white_on_black, outside_paper)
    ink = remove_ruled_lines(ink)
    box = content_bounding_box(ink)
    if box is None:
        return NormalizedDigit(np.zeros((FIELD_SIZE, FIELD_SIZE), dtype=np.float32), found=False)
    top, left, bottom, right = box
    pixels = center_by_mass(fit_in_box(ink[top:bottom, left:right]))
    return NormalizedDigit(pixels, found=_looks_like_a_digit(ink, box, contrast, light_paper))


def _looks_like_a_digit(
    ink: FloatImage, box: tuple[int, int, int, int], contrast: _Contrast, light_paper: bool
) -> bool:
    """Whether the ink left in the working picture is a plausible digit (see the module
    docstring for the criteria), cheapest test first."""
    # Contrast: the share of the lighter side's light that the darker one lacks. A pen or
    # pencil takes away most of the paper's light; texture, smudges and shading little.
    if light_paper:
        lighter = 255.0 - contrast.paper_level
    else:
        lighter = contrast.paper_level + contrast.ink_level
    relative_contrast = contrast.ink_level / max(1.0, lighter)
    if relative_contrast < DIGIT_MIN_CONTRAST:
        return False
    level = EXTENT_MIN_FRACTION * float(ink.max())
    # A faint mark that comes in from the picture's border is a shadow (or the lit part of
    # a shadowed page); a faint digit lies inside the picture.
    if (
        relative_contrast < FAINT_INK_CONTRAST
        and float(np.mean(_border_pixels(ink) > level)) > FAINT_INK_MAX_BORDER_CONTACT
    ):
        return False
    top, left, bottom, right = box
    height, width = bottom - top, right - left
    side = max(height, width)
    if side < max(DIGIT_MIN_PIXELS, DIGIT_MIN_SIZE * max(ink.shape)):  # a speck
        return False
    return _drawn_in_strokes(ink[top:bottom, left:right] > level)


def _drawn_in_strokes(inked: BoolImage) -> bool:
    """The last criteria, on the inked pixels of the ink's box: not a dash, not dots
    scattered over the box, not grain."""
    height, width = inked.shape
    if height < DIGIT_MIN_ASPECT * width:  # a dash, or a piece of a ruled line
        return False
    count = int(np.count_nonzero(inked))
    if count < DIGIT_MIN_STROKE_LENGTH * max(height, width):  # dots scattered over the box
        return False
    return _isolated_pixels(inked) <= DIGIT_MAX_ISOLATED * count  # grain, not strokes


def _isolated_pixels(mask: BoolImage) -> int:
    """How many True pixels have fewer than two True neighbours (of eight)."""
    ones = mask.view(np.uint8)
    columns = ones.copy()  # each pixel plus the ones above and below it
    columns[1:] += ones[:-1]
    columns[:-1] += ones[1:]
    around = columns.copy()  # ... and to the left and right of those: the 3x3 block
    around[:, 1:] += columns[:, :-1]
    around[:, :-1] += columns[:, 1:]
    return int(np.count_nonzero(mask & (around < 3)))


def _as_mnist_form(image: Image.Image) -> NormalizedDigit | None:
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

    Whether a digit was found is judged as the full pipeline judges it. Its contrast,
    shadow and speck criteria hold by the conditions above (paper 0, ink 255, none on
    the border, a box of 20), and its bright pixels are the `bright` mask here.
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
    found = _drawn_in_strokes(bright[top:bottom, left:right])
    return NormalizedDigit(pixels.astype(np.float32), found)


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


def _border_pixels(image: NDArray[_Pixel]) -> NDArray[_Pixel]:
    return np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]])


_Spans = tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.intp], NDArray[np.intp]]


def _light_spans(light: NDArray[np.bool_]) -> _Spans:
    """First and last light pixel of every row (first, last) and column (top, bottom).

    Two light pixels in a row are needed, so that a glint on the table does not stop the
    walk in from the border. A row or column with none has first > last.
    """
    height, width = light.shape
    across = light[:, :-1] & light[:, 1:]
    down = light[:-1] & light[1:]
    has_row, has_column = across.any(axis=1), down.any(axis=0)
    first = np.where(has_row, across.argmax(axis=1), width)
    last = np.where(has_row, width - 1 - across[:, ::-1].argmax(axis=1), -1)
    top = np.where(has_column, down.argmax(axis=0), height)
    bottom = np.where(has_column, height - 1 - down[::-1].argmax(axis=0), -1)
    return first, last, top, bottom


def _outside(spans: _Spans, shape: tuple[int, int], rim: int) -> NDArray[np.bool_]:
    """Pixels reached from the border before any light one, widened by `rim` pixels into
    the sheet wherever the sheet has an edge in the picture."""
    first, last, top, bottom = spans
    height, width = shape
    if rim:
        first = np.where(first > 0, first + rim, first)
        last = np.where(last < width - 1, last - rim, last)
        top = np.where(top > 0, top + rim, top)
        bottom = np.where(bottom < height - 1, bottom - rim, bottom)
    columns = np.arange(width)[None, :]
    rows = np.arange(height)[:, None]
    return (
        (columns < first[:, None])
        | (columns > last[:, None])
        | (rows < top[None, :])
        | (rows > bottom[None, :])
    )


def _looks_like_a_sheet(light: NDArray[np.bool_], spans: _Spans) -> bool:
    """Whether the light region inside the spans is a sheet of paper, not light strokes."""
    sheet = ~_outside(spans, light.shape, 0)
    area = int(np.count_nonzero(sheet))
    if area < PAPER_MIN_AREA * light.size:
        return False
    if np.count_nonzero(light & sheet) < PAPER_MIN_SOLIDITY * area:
        return False
    if float(np.mean(~_border_pixels(sheet))) < SURROUND_MIN_BORDER:
        return False
    row_widths, column_heights = sheet.sum(axis=1), sheet.sum(axis=0)
    rows, columns = np.flatnonzero(row_widths), np.flatnonzero(column_heights)
    box_height = int(rows[-1] - rows[0] + 1)
    box_width = int(columns[-1] - columns[0] + 1)
    height, width = light.shape
    if box_height < PAPER_MIN_EXTENT * height or box_width < PAPER_MIN_EXTENT * width:
        return False
    if max(box_height, box_width) > PAPER_MAX_ASPECT * min(box_height, box_width):
        return False
    return _rectangularity(spans, area) >= PAPER_MIN_RECTANGULARITY


def _rectangularity(spans: _Spans, area: int) -> float:
    """How much of its tightest bounding rectangle, turned by up to `PAPER_MAX_TURN`
    degrees, the region inside the spans fills: 1 for a rectangle, pi / 4 for an ellipse."""
    first, last, top, bottom = spans
    rows = np.flatnonzero(last >= first)
    columns = np.flatnonzero(bottom >= top)
    # The region's outline: its first and last pixel along every row and column.
    ys = np.concatenate([rows, rows, top[columns], bottom[columns]]).astype(np.float64)
    xs = np.concatenate([first[rows], last[rows], columns, columns]).astype(np.float64)
    angles = np.radians(np.arange(-PAPER_MAX_TURN, PAPER_MAX_TURN + 0.5, 1.0))[:, None]
    along = xs * np.cos(angles) + ys * np.sin(angles)
    across = ys * np.cos(angles) - xs * np.sin(angles)
    boxes = (np.ptp(along, axis=1) + 1.0) * (np.ptp(across, axis=1) + 1.0)
    return float(area / boxes.min())


class _PaperFit(NamedTuple):
    """The paper's level as a quadratic surface in y and x (running from -0.5 to 0.5
    across the picture), and the standard deviation of its noise.

    `shape` holds the coefficients of y, x, y**2, x**2 and y * x after the constant
    `level`; all zero for flat paper, and the squares' and product's for a plane."""

    level: float
    shape: tuple[float, ...]
    noise_sigma: float

    def subtracted_from(self, image: FloatImage) -> FloatImage:
        above = (image - np.float32(self.level)).astype(np.float32, copy=False)
        if any(self.shape):
            height, width = image.shape
            rows, columns = _unit_axis(height)[:, None], _unit_axis(width)[None, :]
            row_slope, column_slope, row_curve, column_curve, twist = self.shape
            above -= (row_slope * rows + row_curve * rows**2).astype(np.float32)
            above -= (column_slope * columns + column_curve * columns**2).astype(np.float32)
            if twist:
                above -= (twist * rows * columns).astype(np.float32)
        return above


_FLAT = (0.0, 0.0, 0.0, 0.0, 0.0)


def _fit_paper(
    image: FloatImage,
    noise_sigma: float | None = None,
    rounds: int = 5,
    ignore: BoolImage | None = None,
) -> _PaperFit:
    """Fit a surface to the paper pixels of a white-on-black picture, and measure its noise.

    The surface is a plane, which takes a lighting gradient away, and on pictures of at
    least `CURVED_PAPER_MIN_SIDE` a quadratic one, which takes the vignetting of a camera
    (darker corners) away too. Works on a sparse sample of pixels. The paper is dark, so it
    starts as the pixels in the darker half of the range, however much of the picture the
    ink covers. Each round keeps the pixels less than 2.5 noise standard deviations above
    the typical paper pixel, which leaves the ink out, and refits. The noise is
    `noise_sigma` if given, else measured in each round as the spread of the paper pixels
    around the fit (median absolute deviation), and in the end as their root mean square
    deviation; never less than the rounding to whole grey levels. Paper exactly flat over
    most of the picture (a synthetic image, or MNIST) is recognised at once and has no
    noise at all. Pixels in `ignore` are left out.
    """
    height, width = image.shape
    step = max(1, round(float(np.sqrt(image.size / _PLANE_SAMPLE_PIXELS))))
    values = image[::step, ::step].ravel().astype(np.float64)
    row_axis = _unit_axis(height)[::step]
    column_axis = _unit_axis(width)[::step]
    rows = np.repeat(row_axis, column_axis.size)
    columns = np.tile(column_axis, row_axis.size)
    if ignore is not None:
        included = ~ignore[::step, ::step].ravel()
        values, rows, columns = values[included], rows[included], columns[included]
        if values.size == 0:
            return _PaperFit(0.0, _FLAT, 0.0)
    keep = values <= 0.5 * (values.min() + values.max())
    level = _median(values[keep])
    if _median(np.abs(values[keep] - level)) == 0.0:
        return _PaperFit(level, _FLAT, 0.0)
    plane = np.column_stack([np.ones(values.size), rows, columns])
    coefficients = np.array([level, 0.0, 0.0])
    residual = values - level
    designs = [plane]
    # The curved surface starts from the plane's fit: fitted to the darker half of a
    # steep gradient alone, a quadratic would bend away from the other half.
    if min(height, width) >= CURVED_PAPER_MIN_SIDE:
        designs.append(np.column_stack([plane, rows**2, columns**2, rows * columns]))
    for stage, design in enumerate(designs):
        # The curved surface refines a fit that has converged already: two rounds do.
        for round_ in range(rounds if stage == 0 else min(rounds, 2)):
            centre = _median(residual[keep])
            if noise_sigma is None:
                spread = _MAD_TO_SIGMA * _median(np.abs(residual[keep] - centre))
            else:
                spread = noise_sigma
            new_keep = residual <= centre + 2.5 * max(spread, _QUANTISATION_NOISE)
            paper = design[new_keep]
            try:
                solved = np.linalg.solve(paper.T @ paper, paper.T @ values[new_keep])
            except np.linalg.LinAlgError:  # too few paper pixels to pin a surface down
                break
            coefficients = solved
            # A new surface has not converged before its first fit has been used.
            converged = (stage == 0 or round_ > 0) and np.array_equal(new_keep, keep)
            keep = new_keep
            residual = values - design @ coefficients
            if converged:
                break
    if noise_sigma is None:
        noise_sigma = float(np.sqrt(np.mean(residual[keep] ** 2)))
    shape = tuple(float(c) for c in coefficients[1:]) + _FLAT[: 6 - coefficients.size]
    return _PaperFit(float(coefficients[0]), shape, max(noise_sigma, _QUANTISATION_NOISE))


def _pixel_noise(image: FloatImage) -> float:
    """Standard deviation of pixel noise, from differences between neighbours.

    The difference of two pixels with independent noise has sqrt(2) times its standard
    deviation; the median absolute difference ignores the minority of pairs that straddle
    an edge of the ink. Horizontal and vertical neighbours are measured apart and the
    smaller taken: in a picture cropped tight round a "1", most horizontal pairs straddle
    the stroke's edges, but vertical ones run along it.
    """
    step = max(1, round(float(np.sqrt(image.size / _PLANE_SAMPLE_PIXELS))))
    spreads = []
    for differences in (np.diff(image[::step], axis=1), np.diff(image[:, ::step], axis=0)):
        if differences.size:
            spreads.append(_median(np.abs(differences).ravel()))
    if not spreads:
        return 0.0
    return _MAD_TO_SIGMA * min(spreads) / float(np.sqrt(2.0))


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
