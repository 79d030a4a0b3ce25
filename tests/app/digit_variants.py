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

`variant_mix` cycles through all kinds over a sequence of digits, which is the mix the
preprocessing accuracy check and the serving tests use.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray
from PIL import Image

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
    digits: Iterable[NDArray[np.uint8]], seed: int = 0
) -> Iterator[tuple[str, DigitPicture]]:
    """Yield (kind, picture) for each digit, cycling through `VARIANTS` in order.

    Digit number i gets kind i % len(VARIANTS) and seed `seed * 1_000_003 + i`, so a
    sequence of digits always gives the same pictures, and any 9 consecutive digits cover
    every kind once.
    """
    kinds = list(VARIANTS)
    for index, digit in enumerate(digits):
        kind = kinds[index % len(kinds)]
        yield kind, VARIANTS[kind](digit, seed * 1_000_003 + index)


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
