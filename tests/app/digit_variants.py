"""Pictures of MNIST digits as people would upload them, for testing digit preprocessing.

Each function takes one MNIST digit (a 28x28 uint8 array, white on black) and a seed, and
returns a `DigitPicture`: the bytes of an encoded image file (PNG or JPEG), its media
type, and a description of what was done. The same digit and seed always give the same
bytes, so a failing case can be reproduced from its description alone.

The kinds of variant, one change at a time and then all together:

- ``inverted``: dark ink on white paper, still 28x28.
- ``off_centre``: the digit at its MNIST size somewhere off-centre on a larger canvas.
- ``resized``: the digit scaled to a 100-400 px canvas, strokes made thinner or thicker.
- ``coloured``: coloured ink (black, blue, red or green pen, or pencil) on tinted paper.
- ``jpeg``: dark on light, saved as JPEG at quality 70-90.
- ``noisy``: dark on light with mild Gaussian sensor noise.
- ``uneven_light``: dark on light under a lighting gradient.
- ``transparent``: dark strokes on a transparent background (RGBA PNG).
- ``combined``: a photo-like picture with every change at once, random strengths; about
  one in six is light ink on a dark board instead of dark ink on paper.

Digits on real paper, photographed (`PAPER_VARIANTS`, drawn by `render_page`):

- ``ruled``: on ruled notebook paper (blue or grey lines, spaced so the digit crosses one
  to three of them, slightly tilted, sometimes a red margin line), saved as JPEG.
- ``squared``: on graph paper, the digit spanning two to four squares, saved as JPEG.
- ``paper_on_table``: a sheet with the digit photographed on a dark table or desk: the
  sheet covers 50-90 % of the frame, turned up to 10 degrees, with its shadow on the
  table, vignetting and a lighting gradient, saved as JPEG.
- ``tight_crop``: a photo of the digit on plain or ruled paper cropped to within 5 % of
  its ink, so that its strokes touch the border and a bar may run from edge to edge.

And pages with no digit at all (`NO_DIGIT_PAGES`, which take only a seed):

- ``blank_page``: paper texture, lighting gradient, vignetting, noise, JPEG, and in half of
  them a soft shadow over part of the page.
- ``lines_only``: ruled or squared paper, sometimes with a margin line.
- ``edge_only``: an empty sheet photographed on a table.

`variant_mix` cycles through the kinds of `VARIANTS` over a sequence of digits, which is
the mix the preprocessing accuracy check and the serving tests use; `kinds=` picks
others, such as `DIGIT_VARIANTS` (every kind with a digit).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray
from PIL import Image, ImageFilter

# Ink and paper colours (RGB) in the order the generator draws from them.
PEN_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (25, 25, 30),
    "blue": (30, 50, 150),
    "red": (170, 30, 40),
    "green": (20, 100, 50),
    "pencil": (85, 85, 90),
}
PAPER_COLOURS: dict[str, tuple[int, int, int]] = {
    "white": (250, 250, 248),
    "cream": (240, 230, 200),
    "grey": (205, 205, 205),
    "blue-tint": (210, 225, 245),
    "yellow": (250, 240, 150),
    "pink": (245, 215, 220),
}
BOARD_COLOURS: dict[str, tuple[int, int, int]] = {
    "blackboard": (35, 40, 40),
    "greenboard": (30, 70, 50),
}
CHALK_COLOURS: dict[str, tuple[int, int, int]] = {
    "white chalk": (235, 235, 230),
    "yellow chalk": (240, 230, 140),
}
RULE_COLOURS: dict[str, tuple[int, int, int]] = {
    "light blue": (150, 185, 225),
    "blue": (105, 145, 205),
    "grey": (170, 170, 175),
    "dark grey": (130, 130, 140),
}
MARGIN_COLOUR = (215, 80, 90)
"""The red of a notebook's margin line."""
TABLE_COLOURS: dict[str, tuple[int, int, int]] = {
    "dark wood": (100, 68, 45),
    "walnut": (62, 44, 32),
    "grey desk": (62, 64, 70),
    "black desk": (28, 28, 31),
    "green mat": (35, 78, 58),
}


@dataclass(frozen=True)
class DigitPicture:
    """An encoded picture of a digit, ready to upload."""

    data: bytes
    media_type: str
    description: str


@dataclass(frozen=True)
class Scene:
    """Everything that decides how a digit is drawn; `render` turns it into a picture."""

    digit_height: int = 20
    """Height in pixels of the digit's 20-pixel MNIST box after scaling."""
    canvas_size: tuple[int, int] | None = None
    """(width, height); None means the scaled 28x28 field with nothing added."""
    position: tuple[float, float] = (0.5, 0.5)
    """Where the scaled field sits in the canvas, 0..1 for each of x and y."""
    stroke_change: int = 0
    """Pixels of stroke grown (>0) or eroded (<0) on each side, at the scaled size."""
    ink: tuple[int, int, int] = (255, 255, 255)
    paper: tuple[int, int, int] = (0, 0, 0)
    light_falloff: float = 0.0
    """Share of the brightness lost at the dark end of a linear lighting gradient."""
    light_angle: float = 0.0
    noise_sigma: float = 0.0
    jpeg_quality: int | None = None
    transparent: bool = False


def render(digit: NDArray[np.uint8], scene: Scene, seed: int = 0) -> bytes:
    """Draw `digit` as described by `scene` and return the encoded file's bytes."""
    coverage = _scaled_coverage(digit, scene.digit_height, scene.stroke_change)
    coverage = _place_on_canvas(coverage, scene.canvas_size, scene.position)
    alpha = coverage[..., None]
    ink = np.array(scene.ink, dtype=np.float32)
    if scene.transparent:
        rgba = np.concatenate([np.broadcast_to(ink, (*coverage.shape, 3)), alpha * 255.0], axis=-1)
        return _encode(np.round(rgba).astype(np.uint8), None)
    paper = np.array(scene.paper, dtype=np.float32)
    rgb = paper * (1.0 - alpha) + ink * alpha
    if scene.light_falloff:
        rgb = rgb * _lighting(coverage.shape, scene.light_falloff, scene.light_angle)[..., None]
    if scene.noise_sigma:
        noise = np.random.default_rng(seed).standard_normal(rgb.shape, dtype=np.float32)
        rgb = rgb + np.float32(scene.noise_sigma) * noise
    pixels = np.clip(np.round(rgb), 0, 255).astype(np.uint8)
    return _encode(pixels, scene.jpeg_quality)


def inverted(digit: NDArray[np.uint8], seed: int) -> DigitPicture:
    """Black ink on white paper, MNIST size."""
    scene = Scene(ink=PEN_COLOURS["black"], paper=PAPER_COLOURS["white"])
    return _picture(digit, scene, seed, "inverted: black on white 28x28")


def off_centre(digit: NDArray[np.uint8], seed: int) -> DigitPicture:
    """White on black at MNIST size, somewhere on a canvas 1.5-3 times larger."""
    rng = np.random.default_rng(seed)
    side = int(rng.integers(42, 85))
    canvas = (side + int(rng.integers(-8, 9)), side)
    position = (float(rng.uniform(0, 1)), float(rng.uniform(0, 1)))
    scene = Scene(canvas_size=canvas, position=position)
    description = f"off_centre: 28x28 field at {_fmt(position)} of a {canvas[0]}x{canvas[1]} canvas"
    return _picture(digit, scene, seed, description)


def resized(digit: NDArray[np.uint8], seed: int) -> DigitPicture:
    """Dark on light, scaled to a 100-400 px canvas, strokes thinner or thicker."""
    rng = np.random.default_rng(seed)
    digit_height = int(rng.integers(72, 290))
    stroke_change = _random_stroke_change(rng, digit_height)
    scene = Scene(
        digit_height=digit_height,
        stroke_change=stroke_change,
        ink=PEN_COLOURS["black"],
        paper=PAPER_COLOURS["white"],
    )
    side = round(digit_height * 28 / 20)
    description = f"resized: {side}px canvas, stroke change {stroke_change:+d}px per side"
    return _picture(digit, scene, seed, description)


def coloured(digit: NDArray[np.uint8], seed: int) -> DigitPicture:
    """Coloured pen on tinted paper at a moderate size."""
    rng = np.random.default_rng(seed)
    pen, paper = _pick(rng, PEN_COLOURS), _pick(rng, PAPER_COLOURS)
    digit_height = int(rng.integers(40, 120))
    scene = Scene(digit_height=digit_height, ink=PEN_COLOURS[pen], paper=PAPER_COLOURS[paper])
    return _picture(digit, scene, seed, f"coloured: {pen} ink on {paper} paper, {digit_height}px")


def jpeg(digit: NDArray[np.uint8], seed: int) -> DigitPicture:
    """Dark on light, saved as a JPEG of quality 70-90."""
    rng = np.random.default_rng(seed)
    quality = int(rng.integers(70, 91))
    digit_height = int(rng.integers(30, 120))
    scene = Scene(
        digit_height=digit_height,
        ink=PEN_COLOURS["blue"],
        paper=PAPER_COLOURS["white"],
        jpeg_quality=quality,
    )
    return _picture(digit, scene, seed, f"jpeg: quality {quality}, {digit_height}px, blue ink")


def noisy(digit: NDArray[np.uint8], seed: int) -> DigitPicture:
    """Dark on light with Gaussian noise of standard deviation 4-12 grey levels."""
    rng = np.random.default_rng(seed)
    sigma = float(rng.uniform(4, 12))
    digit_height = int(rng.integers(40, 160))
    scene = Scene(
        digit_height=digit_height,
        ink=PEN_COLOURS["black"],
        paper=PAPER_COLOURS["grey"],
        noise_sigma=sigma,
    )
    return _picture(digit, scene, seed, f"noisy: sigma {sigma:.1f}, {digit_height}px")


def uneven_light(digit: NDArray[np.uint8], seed: int) -> DigitPicture:
    """Dark on light, losing 15-35 % of the light from one side to the other."""
    rng = np.random.default_rng(seed)
    falloff = float(rng.uniform(0.15, 0.35))
    angle = float(rng.uniform(0, 2 * np.pi))
    digit_height = int(rng.integers(40, 160))
    scene = Scene(
        digit_height=digit_height,
        ink=PEN_COLOURS["pencil"],
        paper=PAPER_COLOURS["white"],
        light_falloff=falloff,
        light_angle=angle,
    )
    description = f"uneven_light: falloff {falloff:.2f} at {np.degrees(angle):.0f} deg"
    return _picture(digit, scene, seed, description)


def transparent(digit: NDArray[np.uint8], seed: int) -> DigitPicture:
    """Dark strokes on a transparent background, as drawing apps export them."""
    rng = np.random.default_rng(seed)
    digit_height = int(rng.integers(20, 200))
    pen = _pick(rng, PEN_COLOURS)
    scene = Scene(digit_height=digit_height, ink=PEN_COLOURS[pen], transparent=True)
    return _picture(digit, scene, seed, f"transparent: {pen} strokes, {digit_height}px, RGBA")


def combined(digit: NDArray[np.uint8], seed: int) -> DigitPicture:
    """A photo: every change at once with random strengths."""
    rng = np.random.default_rng(seed)
    digit_height = int(rng.integers(60, 240))
    field = round(digit_height * 28 / 20)
    canvas = (
        min(400, int(field * rng.uniform(1.0, 1.8))),
        min(400, int(field * rng.uniform(1.0, 1.8))),
    )
    canvas = (max(canvas[0], field), max(canvas[1], field))
    position = (float(rng.uniform(0, 1)), float(rng.uniform(0, 1)))
    stroke_change = _random_stroke_change(rng, digit_height)
    if rng.uniform() < 1 / 6:
        pen, paper = _pick(rng, CHALK_COLOURS), _pick(rng, BOARD_COLOURS)
        ink, background = CHALK_COLOURS[pen], BOARD_COLOURS[paper]
    else:
        pen, paper = _pick(rng, PEN_COLOURS), _pick(rng, PAPER_COLOURS)
        ink, background = PEN_COLOURS[pen], PAPER_COLOURS[paper]
    falloff = float(rng.uniform(0.0, 0.3))
    angle = float(rng.uniform(0, 2 * np.pi))
    sigma = float(rng.uniform(0, 8))
    quality = int(rng.integers(70, 91))
    scene = Scene(
        digit_height=digit_height,
        canvas_size=canvas,
        position=position,
        stroke_change=stroke_change,
        ink=ink,
        paper=background,
        light_falloff=falloff,
        light_angle=angle,
        noise_sigma=sigma,
        jpeg_quality=quality,
    )
    description = (
        f"combined: {pen} on {paper}, {digit_height}px digit at {_fmt(position)} of "
        f"{canvas[0]}x{canvas[1]}, stroke {stroke_change:+d}px, light falloff {falloff:.2f}, "
        f"noise {sigma:.1f}, jpeg q{quality}"
    )
    return _picture(digit, scene, seed, description)


VariantMaker = Callable[[NDArray[np.uint8], int], DigitPicture]

VARIANTS: dict[str, VariantMaker] = {
    "inverted": inverted,
    "off_centre": off_centre,
    "resized": resized,
    "coloured": coloured,
    "jpeg": jpeg,
    "noisy": noisy,
    "uneven_light": uneven_light,
    "transparent": transparent,
    "combined": combined,
}
"""Every kind of variant by name, in the order `variant_mix` cycles through them."""


def variant_mix(
    digits: Iterable[NDArray[np.uint8]],
    seed: int = 0,
    kinds: Mapping[str, VariantMaker] = VARIANTS,
) -> Iterator[tuple[str, DigitPicture]]:
    """Yield (kind, picture) for each digit, cycling through `kinds` in order.

    Digit number i gets kind i % len(kinds) and seed `seed * 1_000_003 + i`, so a sequence
    of digits always gives the same pictures, and any len(kinds) consecutive digits (9 for
    `VARIANTS`) cover every kind once.
    """
    names = list(kinds)
    for index, digit in enumerate(digits):
        kind = names[index % len(names)]
        yield kind, kinds[kind](digit, seed * 1_000_003 + index)


# --- digits on real paper, and pages with no digit ---------------------------------------


@dataclass(frozen=True)
class Page:
    """A sheet of paper, maybe ruled, maybe with a digit, as photographed; see `render_page`."""

    sheet_size: tuple[int, int]
    """(width, height) of the sheet in pixels."""
    paper: tuple[int, int, int] = PAPER_COLOURS["white"]
    texture: float = 0.0
    """Standard deviation, in grey levels, of the paper's blotches and grain."""
    rule_spacing: float | None = None
    """Pixels from one ruled line to the next; None for plain paper."""
    rule_phase: float = 0.0
    """Where one of the lines passes, in pixels across the lines from the sheet's corner."""
    rule_thickness: float = 1.0
    rule_colour: tuple[int, int, int] = RULE_COLOURS["light blue"]
    rule_angle: float = 0.0
    """Degrees by which the lines are turned (a sheet is never quite straight in a photo)."""
    squared: bool = False
    """Vertical lines as well, at the same spacing: graph paper."""
    margin: float | None = None
    """Pixels from the sheet's left to a red margin line; None for none."""
    digit_height: int = 0
    """Height in pixels of the digit's 20-pixel MNIST box on the sheet."""
    digit_position: tuple[float, float] = (0.5, 0.5)
    """Where the digit's scaled 28x28 field sits on the sheet, 0..1 for each of x and y."""
    stroke_change: int = 0
    ink: tuple[int, int, int] = PEN_COLOURS["black"]
    frame_size: tuple[int, int] | None = None
    """(width, height) of a photo of the sheet lying on a table; None: the sheet fills it."""
    table: tuple[int, int, int] = TABLE_COLOURS["dark wood"]
    sheet_centre: tuple[float, float] = (0.5, 0.5)
    """Where the sheet's centre is in the frame, 0..1 for each of x and y."""
    sheet_angle: float = 0.0
    """Degrees by which the sheet is turned on the table."""
    light_falloff: float = 0.0
    light_angle: float = 0.0
    vignette: float = 0.0
    """Share of the light lost in the picture's corners, growing with the square of the
    distance from its centre."""
    shadow: float = 0.0
    """Share of the light lost in a soft-edged shadow falling over part of the picture."""
    shadow_angle: float = 0.0
    shadow_reach: float = 0.3
    """Share of the picture's extent that the shadow covers, from the side it comes from."""
    shadow_softness: float = 0.1
    """Width of the shadow's soft edge, as a share of the picture's extent."""
    noise_sigma: float = 0.0
    jpeg_quality: int | None = None
    crop: tuple[int, int, int, int] | None = None
    """(left, top, right, bottom) of the photo that is kept; None keeps all of it."""


def render_page(digit: NDArray[np.uint8] | None, page: Page, seed: int = 0) -> bytes:
    """Draw `page` (with `digit` written on it, if any) and return the encoded file's bytes."""
    rng = np.random.default_rng(seed)
    width, height = page.sheet_size
    rgb = np.empty((height, width, 3), dtype=np.float32)
    rgb[...] = np.array(page.paper, dtype=np.float32)
    if page.texture:
        rgb += np.float32(page.texture) * _paper_texture(rng, (height, width))[..., None]
    if page.rule_spacing is not None:
        rgb = _printed(rgb, _rule_coverage(page), page.rule_colour)
    if page.margin is not None:
        across = _across_lines((height, width), page.rule_angle, vertical=True) - page.margin
        rgb = _printed(rgb, _line_coverage(across, 1.5 * page.rule_thickness), MARGIN_COLOUR)
    if digit is not None:
        coverage = _scaled_coverage(digit, page.digit_height, page.stroke_change)
        alpha = _place_on_canvas(coverage, page.sheet_size, page.digit_position)[..., None]
        rgb = rgb * (1.0 - alpha) + np.array(page.ink, dtype=np.float32) * alpha
    if page.frame_size is not None:
        rgb = _photographed_on_table(rgb, page, rng)
    shape = rgb.shape[:2]
    light = np.ones(shape, dtype=np.float32)
    if page.light_falloff:
        light *= _lighting(shape, page.light_falloff, page.light_angle)
    if page.vignette:
        light *= _vignetting(shape, page.vignette)
    if page.shadow:
        light *= _soft_shadow(shape, page)
    rgb = rgb * light[..., None]
    if page.noise_sigma:
        rgb += np.float32(page.noise_sigma) * rng.standard_normal(rgb.shape, dtype=np.float32)
    if page.crop is not None:
        left, top, right, bottom = page.crop
        rgb = rgb[top:bottom, left:right]
    pixels = np.clip(np.round(rgb), 0, 255).astype(np.uint8)
    return _encode(pixels, page.jpeg_quality)


def ruled(digit: NDArray[np.uint8], seed: int) -> DigitPicture:
    """On ruled notebook paper, crossing one to three lines; a JPEG photo."""
    rng = np.random.default_rng(seed)
    digit_height = int(rng.integers(40, 141))
    spacing = digit_height / float(rng.uniform(0.9, 2.6))
    thickness = max(1.0, spacing * float(rng.uniform(0.02, 0.05)))
    page = _digit_on_lined_paper(rng, digit_height, spacing, thickness, RULE_COLOURS)
    box_left = _digit_box(page)[1]
    if rng.uniform() < 0.4 and box_left > 0.12 * page.sheet_size[0]:
        page = replace(page, margin=float(rng.uniform(0.3, 0.8)) * box_left)
    return _page_picture(digit, page, seed, f"ruled: {_describe(page)}")


def squared(digit: NDArray[np.uint8], seed: int) -> DigitPicture:
    """On graph paper, spanning two to four squares; a JPEG photo."""
    rng = np.random.default_rng(seed)
    digit_height = int(rng.integers(40, 141))
    spacing = digit_height / float(rng.uniform(1.5, 4.0))
    thickness = max(1.0, spacing * float(rng.uniform(0.03, 0.07)))
    colours = {name: RULE_COLOURS[name] for name in ("light blue", "grey")}
    page = _digit_on_lined_paper(rng, digit_height, spacing, thickness, colours)
    page = replace(page, squared=True)
    return _page_picture(digit, page, seed, f"squared: {_describe(page)}")


def paper_on_table(digit: NDArray[np.uint8], seed: int) -> DigitPicture:
    """A sheet with the digit on it, photographed lying on a dark table."""
    rng = np.random.default_rng(seed)
    page = _sheet_on_table(rng)
    digit_height = int(min(page.sheet_size) * float(rng.uniform(0.2, 0.45)))
    page = replace(
        page,
        digit_height=digit_height,
        digit_position=(float(rng.uniform(0.1, 0.9)), float(rng.uniform(0.1, 0.9))),
        stroke_change=_random_stroke_change(rng, digit_height),
        ink=PEN_COLOURS[_pick(rng, PEN_COLOURS)],
    )
    return _page_picture(digit, page, seed, f"paper_on_table: {_describe(page)}")


def tight_crop(digit: NDArray[np.uint8], seed: int) -> DigitPicture:
    """A photo of the digit on plain or ruled paper, cropped to within 5 % of its ink.

    A digit's bar can then run from edge to edge like a ruled line, and its strokes touch
    the border like a shadow or a table's edge would.
    """
    rng = np.random.default_rng(seed)
    digit_height = int(rng.integers(40, 141))
    if rng.uniform() < 0.5:
        spacing = digit_height / float(rng.uniform(0.9, 2.6))
        thickness = max(1.0, spacing * float(rng.uniform(0.02, 0.05)))
        page = _digit_on_lined_paper(rng, digit_height, spacing, thickness, RULE_COLOURS)
    else:
        field = round(digit_height * 28 / 20)
        page = Page(
            sheet_size=(_page_side(rng, field, 1.2, 2.0), _page_side(rng, field, 1.2, 2.0)),
            paper=PAPER_COLOURS[_pick(rng, PAPER_COLOURS)],
            digit_height=digit_height,
            digit_position=(float(rng.uniform(0, 1)), float(rng.uniform(0, 1))),
            stroke_change=_random_stroke_change(rng, digit_height),
            ink=PEN_COLOURS[_pick(rng, PEN_COLOURS)],
        )
        page = _photographed(page, rng)
    coverage = _scaled_coverage(digit, page.digit_height, page.stroke_change)
    inked = _place_on_canvas(coverage, page.sheet_size, page.digit_position) > 0.2
    rows, columns = np.flatnonzero(inked.any(axis=1)), np.flatnonzero(inked.any(axis=0))
    margin = round(float(rng.uniform(0.0, 0.05)) * digit_height)
    width, height = page.sheet_size
    crop = (
        max(0, int(columns[0]) - margin),
        max(0, int(rows[0]) - margin),
        min(width, int(columns[-1]) + 1 + margin),
        min(height, int(rows[-1]) + 1 + margin),
    )
    page = replace(page, crop=crop)
    return _page_picture(digit, page, seed, f"tight_crop: {_describe(page)}, margin {margin}px")


PAPER_VARIANTS: dict[str, VariantMaker] = {
    "ruled": ruled,
    "squared": squared,
    "paper_on_table": paper_on_table,
    "tight_crop": tight_crop,
}
"""Digits on notebook paper, on graph paper, on a sheet lying on a table, and cropped tight
around their ink, photographed."""

DIGIT_VARIANTS: dict[str, VariantMaker] = {**VARIANTS, **PAPER_VARIANTS}
"""Every kind of picture with a digit in it."""


def blank_page(seed: int) -> DigitPicture:
    """Plain paper with texture, uneven light, noise, JPEG and often a soft shadow."""
    rng = np.random.default_rng(seed)
    size = (int(rng.integers(200, 481)), int(rng.integers(200, 481)))
    page = _photographed(Page(size, PAPER_COLOURS[_pick(rng, PAPER_COLOURS)]), rng)
    page = replace(page, vignette=float(rng.uniform(0.0, 0.2)))
    if rng.uniform() < 0.5:
        page = replace(
            page,
            shadow=float(rng.uniform(0.1, 0.35)),
            shadow_angle=float(rng.uniform(0, 2 * np.pi)),
            shadow_reach=float(rng.uniform(0.15, 0.6)),
            shadow_softness=float(rng.uniform(0.03, 0.3)),
        )
    return _page_picture(None, page, seed, f"blank_page: {_describe(page)}")


def lines_only(seed: int) -> DigitPicture:
    """Ruled paper (squared one time in three, sometimes with a margin) and no digit."""
    rng = np.random.default_rng(seed)
    size = (int(rng.integers(200, 481)), int(rng.integers(200, 481)))
    is_squared = bool(rng.uniform() < 1 / 3)
    spacing = size[1] / float(rng.uniform(3.0, 10.0))
    page = Page(
        sheet_size=size,
        paper=PAPER_COLOURS[_pick(rng, PAPER_COLOURS)],
        rule_spacing=spacing,
        rule_phase=float(rng.uniform(0, spacing)),
        rule_thickness=max(1.0, spacing * float(rng.uniform(0.02, 0.045))),
        rule_colour=RULE_COLOURS[_pick(rng, RULE_COLOURS)],
        rule_angle=float(rng.uniform(-1.5, 1.5)),
        squared=is_squared,
    )
    page = _photographed(page, rng)
    if not is_squared and rng.uniform() < 0.3:
        page = replace(page, margin=float(rng.uniform(0.05, 0.25)) * size[0])
    return _page_picture(None, page, seed, f"lines_only: {_describe(page)}")


def edge_only(seed: int) -> DigitPicture:
    """An empty sheet photographed lying on a dark table."""
    rng = np.random.default_rng(seed)
    page = _sheet_on_table(rng)
    return _page_picture(None, page, seed, f"edge_only: {_describe(page)}")


PageMaker = Callable[[int], DigitPicture]

NO_DIGIT_PAGES: dict[str, PageMaker] = {
    "blank_page": blank_page,
    "lines_only": lines_only,
    "edge_only": edge_only,
}
"""Pictures a user may send that hold no digit at all, by name."""


def page_mix(count: int, seed: int = 0) -> Iterator[tuple[str, DigitPicture]]:
    """Yield (kind, picture) for `count` pages with no digit, cycling through the kinds.

    Page number i gets kind i % 3 and seed `seed * 1_000_003 + i`, as in `variant_mix`.
    """
    names = list(NO_DIGIT_PAGES)
    for index in range(count):
        kind = names[index % len(names)]
        yield kind, NO_DIGIT_PAGES[kind](seed * 1_000_003 + index)


def _digit_on_lined_paper(
    rng: np.random.Generator,
    digit_height: int,
    spacing: float,
    thickness: float,
    rule_colours: dict[str, tuple[int, int, int]],
) -> Page:
    """A photographed page of lined paper with a digit on it that crosses a line."""
    field = round(digit_height * 28 / 20)
    size = (_page_side(rng, field, 1.4, 2.6), _page_side(rng, field, 1.2, 2.0))
    page = Page(
        sheet_size=size,
        paper=PAPER_COLOURS[_pick(rng, PAPER_COLOURS)],
        rule_spacing=spacing,
        rule_thickness=thickness,
        rule_colour=rule_colours[_pick(rng, rule_colours)],
        rule_angle=float(rng.uniform(-1.5, 1.5)),
        digit_height=digit_height,
        digit_position=(float(rng.uniform(0, 1)), float(rng.uniform(0, 1))),
        stroke_change=_random_stroke_change(rng, digit_height),
        ink=PEN_COLOURS[_pick(rng, PEN_COLOURS)],
    )
    # One line passes through the middle 60 % of the digit's box, at its centre column.
    box_top, box_left = _digit_box(page)
    row = box_top + float(rng.uniform(0.2, 0.8)) * digit_height
    column = box_left + digit_height / 2
    radians = np.radians(page.rule_angle)
    phase = (row * np.cos(radians) - column * np.sin(radians)) % spacing
    return _photographed(replace(page, rule_phase=float(phase)), rng)


def _sheet_on_table(rng: np.random.Generator) -> Page:
    """An empty sheet covering 50-90 % of a photo of a table, turned up to 10 degrees."""
    frame_width = int(rng.integers(320, 481))
    frame_height = min(480, round(frame_width * float(rng.uniform(0.75, 1.34))))
    cover = float(rng.uniform(0.5, 0.9))
    aspect = frame_width / frame_height * float(rng.uniform(0.8, 1.25))  # sheet width / height
    sheet_width = round(float(np.sqrt(cover * frame_width * frame_height * aspect)))
    page = Page(
        sheet_size=(sheet_width, round(sheet_width / aspect)),
        paper=PAPER_COLOURS[_pick(rng, PAPER_COLOURS)],
        frame_size=(frame_width, frame_height),
        table=TABLE_COLOURS[_pick(rng, TABLE_COLOURS)],
        sheet_centre=(0.5 + float(rng.uniform(-0.08, 0.08)), 0.5 + float(rng.uniform(-0.08, 0.08))),
        sheet_angle=float(rng.uniform(-10.0, 10.0)),
    )
    return replace(_photographed(page, rng), vignette=float(rng.uniform(0.0, 0.25)))


def _photographed(page: Page, rng: np.random.Generator) -> Page:
    """`page` with a phone photo's paper texture, uneven light, noise and JPEG."""
    return replace(
        page,
        texture=float(rng.uniform(1.0, 4.0)),
        light_falloff=float(rng.uniform(0.0, 0.25)),
        light_angle=float(rng.uniform(0, 2 * np.pi)),
        noise_sigma=float(rng.uniform(0.0, 6.0)),
        jpeg_quality=int(rng.integers(65, 91)),
    )


def _page_side(rng: np.random.Generator, field: int, low: float, high: float) -> int:
    """A side of a page holding a `field`-pixel digit: `low` to `high` times it, <= 480."""
    return min(480, max(field + 2, int(field * float(rng.uniform(low, high)))))


def _digit_box(page: Page) -> tuple[float, float]:
    """(top, left) of the digit's 20-pixel box on the sheet (its field has a 4/28 margin)."""
    field = max(1, round(page.digit_height * 28 / 20))
    width, height = page.sheet_size
    top = round((height - field) * page.digit_position[1])
    left = round((width - field) * page.digit_position[0])
    return top + field * 4 / 28, left + field * 4 / 28


def _page_picture(
    digit: NDArray[np.uint8] | None, page: Page, seed: int, description: str
) -> DigitPicture:
    data = render_page(digit, page, seed)
    media_type = "image/jpeg" if page.jpeg_quality is not None else "image/png"
    return DigitPicture(data=data, media_type=media_type, description=description)


def _paper_texture(rng: np.random.Generator, shape: tuple[int, int]) -> NDArray[np.float32]:
    """Unit-variance texture: soft blotches about 16 pixels across, plus fine grain."""
    height, width = shape
    coarse = rng.standard_normal((height // 16 + 2, width // 16 + 2)).astype(np.float32)
    blotches = np.asarray(
        Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC),
        dtype=np.float32,
    )
    texture = blotches / max(float(blotches.std()), 1e-6)
    texture += np.float32(0.5) * rng.standard_normal(shape, dtype=np.float32)
    return texture / max(float(texture.std()), 1e-6)


def _across_lines(shape: tuple[int, int], angle: float, vertical: bool) -> NDArray[np.float32]:
    """Each pixel's position across a family of lines turned by `angle` degrees."""
    rows = np.arange(shape[0], dtype=np.float32)[:, None]
    columns = np.arange(shape[1], dtype=np.float32)[None, :]
    cosine, sine = np.float32(np.cos(np.radians(angle))), np.float32(np.sin(np.radians(angle)))
    if vertical:
        return columns * cosine + rows * sine
    return rows * cosine - columns * sine


def _line_coverage(distance: NDArray[np.float32], thickness: float) -> NDArray[np.float32]:
    """Share of each pixel covered by a line `thickness` wide at signed `distance` from it."""
    return np.clip(np.float32(thickness / 2 + 0.5) - np.abs(distance), 0.0, 1.0)


def _rule_coverage(page: Page) -> NDArray[np.float32]:
    assert page.rule_spacing is not None
    spacing = np.float32(page.rule_spacing)
    shape = (page.sheet_size[1], page.sheet_size[0])
    coverage = np.zeros(shape, dtype=np.float32)
    for vertical in (False, True) if page.squared else (False,):
        across = _across_lines(shape, page.rule_angle, vertical) - np.float32(page.rule_phase)
        to_nearest = (across - spacing * np.round(across / spacing)).astype(np.float32)
        coverage = np.maximum(coverage, _line_coverage(to_nearest, page.rule_thickness))
    return coverage


def _printed(
    rgb: NDArray[np.float32], coverage: NDArray[np.float32], colour: tuple[int, int, int]
) -> NDArray[np.float32]:
    """Printed ink filters the paper's light: it multiplies, so it never lightens."""
    tint = np.array(colour, dtype=np.float32) / 255.0
    alpha = coverage[..., None]
    return rgb * (1.0 - alpha + alpha * tint)


def _photographed_on_table(
    sheet: NDArray[np.float32], page: Page, rng: np.random.Generator
) -> NDArray[np.float32]:
    """The sheet turned by `sheet_angle`, lying on a grained table, casting a soft shadow."""
    assert page.frame_size is not None
    frame_width, frame_height = page.frame_size
    grain = rng.standard_normal((frame_height, frame_width // 24 + 2)).astype(np.float32)
    streaks = np.asarray(
        Image.fromarray(grain).resize((frame_width, frame_height), Image.Resampling.BICUBIC),
        dtype=np.float32,
    )
    photo = np.empty((frame_height, frame_width, 3), dtype=np.float32)
    photo[...] = np.array(page.table, dtype=np.float32)
    photo += np.float32(5.0) * streaks[..., None]
    sheet_image = Image.fromarray(np.clip(np.round(sheet), 0, 255).astype(np.uint8))
    turned = sheet_image.rotate(page.sheet_angle, Image.Resampling.BICUBIC, expand=True)
    mask = Image.new("L", sheet_image.size, 255)
    turned_mask = mask.rotate(page.sheet_angle, Image.Resampling.BICUBIC, expand=True)
    left = round(page.sheet_centre[0] * frame_width - turned.width / 2)
    top = round(page.sheet_centre[1] * frame_height - turned.height / 2)
    layer = Image.new("RGB", (frame_width, frame_height))
    layer.paste(turned, (left, top))
    alpha_image = Image.new("L", (frame_width, frame_height), 0)
    alpha_image.paste(turned_mask, (left, top))
    radius = 0.015 * max(frame_width, frame_height)
    shadow_image = Image.new("L", (frame_width, frame_height), 0)
    shadow_image.paste(alpha_image, (round(radius), round(radius)))
    shadow_image = shadow_image.filter(ImageFilter.GaussianBlur(radius))
    shadow = np.asarray(shadow_image, dtype=np.float32)[..., None] / 255.0
    alpha = np.asarray(alpha_image, dtype=np.float32)[..., None] / 255.0
    photo *= 1.0 - np.float32(0.5) * shadow
    return photo * (1.0 - alpha) + np.asarray(layer, dtype=np.float32) * alpha


def _vignetting(shape: tuple[int, ...], strength: float) -> NDArray[np.float32]:
    rows = np.linspace(-1.0, 1.0, shape[0], dtype=np.float32)[:, None]
    columns = np.linspace(-1.0, 1.0, shape[1], dtype=np.float32)[None, :]
    return 1.0 - np.float32(strength / 2) * (rows**2 + columns**2)


def _soft_shadow(shape: tuple[int, ...], page: Page) -> NDArray[np.float32]:
    """1 in the light, 1 - shadow in the shadow, with a smooth edge between."""
    ramp = 1.0 - _lighting(shape, 1.0, page.shadow_angle)  # 0 on one side, 1 on the other
    edge = (ramp - np.float32(1.0 - page.shadow_reach)) / np.float32(page.shadow_softness) + 0.5
    edge = np.clip(edge, 0.0, 1.0)
    smooth = edge * edge * (3.0 - 2.0 * edge)
    return (1.0 - np.float32(page.shadow) * smooth).astype(np.float32)


def _describe(page: Page) -> str:
    """What was drawn, in words, for test failure messages."""
    parts = [f"{_name(page.paper, PAPER_COLOURS)} paper {page.sheet_size[0]}x{page.sheet_size[1]}"]
    if page.rule_spacing is not None:
        kind = "squares" if page.squared else "lines"
        parts.append(
            f"{_name(page.rule_colour, RULE_COLOURS)} {kind} every {page.rule_spacing:.0f}px "
            f"({page.rule_thickness:.1f}px thick, tilted {page.rule_angle:+.1f} deg)"
        )
    if page.margin is not None:
        parts.append(f"margin line at x={page.margin:.0f}")
    if page.digit_height:
        parts.append(
            f"{_name(page.ink, PEN_COLOURS)} {page.digit_height}px digit at "
            f"{_fmt(page.digit_position)}, stroke {page.stroke_change:+d}px"
        )
    if page.frame_size is not None:
        parts.append(
            f"on a {_name(page.table, TABLE_COLOURS)} table in a "
            f"{page.frame_size[0]}x{page.frame_size[1]} photo, turned {page.sheet_angle:+.1f} "
            f"deg, centred at {_fmt(page.sheet_centre)}"
        )
    if page.shadow:
        parts.append(f"shadow {page.shadow:.2f} over {page.shadow_reach:.2f}")
    parts.append(
        f"texture {page.texture:.1f}, light falloff {page.light_falloff:.2f}, vignette "
        f"{page.vignette:.2f}, noise {page.noise_sigma:.1f}, jpeg q{page.jpeg_quality}"
    )
    return ", ".join(parts)


def _name(colour: tuple[int, int, int], palette: dict[str, tuple[int, int, int]]) -> str:
    return next((name for name, value in palette.items() if value == colour), str(colour))


def _picture(digit: NDArray[np.uint8], scene: Scene, seed: int, description: str) -> DigitPicture:
    data = render(digit, scene, seed)
    media_type = "image/jpeg" if scene.jpeg_quality is not None else "image/png"
    return DigitPicture(data=data, media_type=media_type, description=description)


def _scaled_coverage(digit: NDArray[np.uint8], digit_height: int, stroke_change: int) -> NDArray:
    """Ink coverage 0..1 of the whole 28x28 field scaled so its 20-px box is digit_height."""
    side = max(1, round(digit_height * 28 / 20))
    image = Image.fromarray(np.asarray(digit, dtype=np.uint8))
    if side != 28:
        image = image.resize((side, side), Image.Resampling.BICUBIC)
    coverage = np.asarray(image, dtype=np.float32) / 255.0
    if stroke_change:
        coverage = _square_rank_filter(coverage, abs(stroke_change), grow=stroke_change > 0)
    return coverage


def _square_rank_filter(pixels: NDArray, radius: int, grow: bool) -> NDArray:
    """Grey-level dilation (grow) or erosion over a (2 radius + 1) square, separably."""
    reduce = np.max if grow else np.min
    size = 2 * radius + 1
    for axis in (0, 1):
        padded = np.pad(pixels, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)])
        pixels = reduce(sliding_window_view(padded, size, axis=axis), axis=-1)
    return pixels


def _place_on_canvas(
    coverage: NDArray, canvas_size: tuple[int, int] | None, position: tuple[float, float]
) -> NDArray:
    if canvas_size is None:
        return coverage
    width, height = canvas_size
    canvas = np.zeros((height, width), dtype=np.float32)
    field_height, field_width = coverage.shape
    if field_height > height or field_width > width:
        raise ValueError(
            f"a {field_width}x{field_height} field does not fit a {width}x{height} canvas"
        )
    top = round((height - field_height) * position[1])
    left = round((width - field_width) * position[0])
    canvas[top : top + field_height, left : left + field_width] = coverage
    return canvas


def _lighting(shape: tuple[int, ...], falloff: float, angle: float) -> NDArray:
    """Brightness factor 1 at one side falling linearly to 1 - falloff at the other."""
    rows = np.linspace(0.0, 1.0, shape[0], dtype=np.float32)[:, None]
    columns = np.linspace(0.0, 1.0, shape[1], dtype=np.float32)[None, :]
    ramp = np.float32(np.cos(angle)) * columns + np.float32(np.sin(angle)) * rows
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    return 1.0 - np.float32(falloff) * ramp


def _random_stroke_change(rng: np.random.Generator, digit_height: int) -> int:
    """Up to about a third of an MNIST stroke thinner or thicker on each side."""
    pixels_per_mnist_pixel = digit_height / 20
    return round(float(rng.uniform(-0.4, 0.6)) * pixels_per_mnist_pixel)


def _pick(rng: np.random.Generator, colours: dict[str, tuple[int, int, int]]) -> str:
    names = list(colours)
    return names[int(rng.integers(len(names)))]


def _encode(pixels: NDArray[np.uint8], jpeg_quality: int | None) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(pixels)
    if jpeg_quality is None:
        image.save(buffer, format="PNG", compress_level=1)
    else:
        image.save(buffer, format="JPEG", quality=jpeg_quality)
    return buffer.getvalue()


def _fmt(position: tuple[float, float]) -> str:
    return f"({position[0]:.2f}, {position[1]:.2f})"
