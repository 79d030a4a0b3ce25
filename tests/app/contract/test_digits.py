"""Digit preprocessing: each MNIST-construction step alone, then the whole pipeline.

Convention checked throughout: arrays are [row, column], ink bright, and the centre of mass
of a normalised digit is at (14, 14) in pixel-index coordinates, within half a pixel.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter

from app.contract.digits import (
    BOX_SIZE,
    FIELD_SIZE,
    WORKING_MAX_SIDE,
    center_by_mass,
    content_bounding_box,
    crop_to_content,
    crop_to_paper,
    fit_in_box,
    normalize_digit,
    remove_background,
    remove_ruled_lines,
    to_grayscale,
    to_white_on_black,
)
from app.contract.digits import _as_mnist_form as mnist_form_shortcut
from app.contract.images import Upload
from app.contract.model_card import InputSpec
from app.contract.preprocessing import prepare_image
from tests.app import digit_variants
from tests.conftest import require_data, shipped_version

Floats = NDArray[np.float32]

SHIPPED_MNIST = shipped_version("mnist-mlp")


# --- helpers -------------------------------------------------------------------------


def seven(size: int = 28, top: int = 4, left: int = 6, scale: int = 1) -> NDArray[np.uint8]:
    """A white "7" on black: a bar and a diagonal, about MNIST's proportions at scale 1."""
    pixels = np.zeros((size, size), dtype=np.uint8)
    bar = 3 * scale
    width = 14 * scale
    height = 20 * scale
    pixels[top : top + bar, left : left + width] = 255
    for row in range(top + bar, top + height):
        progress = (row - top) / height
        column = left + width - bar - round(progress * (width - 2 * bar) * 0.8)
        pixels[row, column : column + bar] = 255
    return pixels


def mass_centre(pixels: NDArray[Any]) -> tuple[float, float]:
    rows, columns = np.indices(pixels.shape)
    total = float(pixels.sum())
    return float((rows * pixels).sum()) / total, float((columns * pixels).sum()) / total


def ink_extent(pixels: NDArray[Any]) -> tuple[int, int]:
    """(height, width) of the non-zero pixels' bounding box."""
    rows = np.flatnonzero(pixels.any(axis=1))
    columns = np.flatnonzero(pixels.any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(columns[-1] - columns[0] + 1)


def assert_model_input(result: object) -> Floats:
    assert isinstance(result, np.ndarray)
    assert result.dtype == np.float32
    assert result.shape == (FIELD_SIZE, FIELD_SIZE)
    assert np.isfinite(result).all()
    assert result.min() >= 0.0 and result.max() <= 255.0
    return result


def correlation(a: NDArray[Any], b: NDArray[Any]) -> float:
    a = a.ravel() - a.mean()
    b = b.ravel() - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


@pytest.fixture(scope="module")
def mnist_sample() -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """300 real MNIST test digits (fixed random choice) and their labels."""
    with np.load(require_data("mnist.npz")) as data:
        images, labels = data["x_test"], data["y_test"]
    chosen = np.random.default_rng(2024).choice(len(images), size=300, replace=False)
    return images[chosen], labels[chosen]


# --- 1. to_grayscale -------------------------------------------------------------------


def test_grayscale_of_rgb_is_its_luminance_as_float32() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    image = Image.fromarray(rgb)
    gray = to_grayscale(image)
    assert gray.dtype == np.float32
    assert gray.shape == (30, 40)
    np.testing.assert_array_equal(gray, np.asarray(image.convert("L"), dtype=np.float32))


def test_transparent_png_with_black_strokes_becomes_black_on_white() -> None:
    rgba = np.zeros((40, 40, 4), dtype=np.uint8)  # transparent black everywhere
    rgba[10:30, 18:22, 3] = 255  # an opaque black stroke
    gray = to_grayscale(Image.fromarray(rgba))
    assert gray[0, 0] == pytest.approx(255.0)
    assert gray[20, 20] == pytest.approx(0.0)


def test_transparent_png_with_white_strokes_becomes_white_on_black() -> None:
    rgba = np.full((40, 40, 4), 255, dtype=np.uint8)
    rgba[..., 3] = 0
    rgba[10:30, 18:22, 3] = 255
    gray = to_grayscale(Image.fromarray(rgba))
    assert gray[0, 0] == pytest.approx(0.0)
    assert gray[20, 20] == pytest.approx(255.0)


def test_transparent_margin_around_a_photo_takes_the_papers_tone() -> None:
    rgba = np.zeros((40, 40, 4), dtype=np.uint8)
    rgba[2:38, 2:38] = (230, 230, 230, 255)  # opaque light paper fills most of it
    rgba[10:30, 18:22, :3] = 20  # dark ink on the paper
    gray = to_grayscale(Image.fromarray(rgba))
    assert gray[0, 0] == pytest.approx(230.0, abs=1.0)
    assert gray[20, 20] == pytest.approx(20.0, abs=1.0)


def test_fully_transparent_picture_is_blank() -> None:
    image = Image.new("RGBA", (50, 50), (0, 0, 0, 0))
    assert not to_grayscale(image).any()
    assert not normalize_digit(image).pixels.any()


MNIST_INPUT = InputSpec(height=28, width=28, channels=1, color_mode="grayscale")


def served_digit(image: Image.Image, file_format: str = "PNG") -> NDArray[np.float32]:
    """The model input the service makes of `image` uploaded as a `file_format` file."""
    buffer = io.BytesIO()
    image.save(buffer, file_format)
    upload = Upload(filename=f"digit.{file_format.lower()}", data=buffer.getvalue())
    return prepare_image(upload, MNIST_INPUT, "mnist-digit").pixels[:, :, 0]


def test_a_palette_png_with_a_transparent_index_reads_as_its_strokes() -> None:
    # Near-black strokes on a transparent field, as a drawing app exports them: the
    # service composites them over white, so they read as the same digit drawn in ink.
    strokes = Image.fromarray(255 - seven(size=40, top=8, left=10))
    palette = strokes.convert("P", palette=Image.Palette.ADAPTIVE, colors=2)
    transparent = palette.getpixel((0, 0))  # the background's index
    palette.info["transparency"] = transparent
    np.testing.assert_allclose(served_digit(palette), served_digit(strokes), atol=1.0)


@pytest.mark.parametrize(
    ("deep", "file_format"),
    [
        (Image.fromarray(seven().astype(np.uint16) * 257), "PNG"),  # 16-bit grayscale
        (Image.fromarray(seven().astype(np.float32) / 255.0), "TIFF"),  # float in 0..1
    ],
    ids=["16-bit PNG", "float TIFF"],
)
def test_a_deep_digit_is_served_like_its_eight_bit_version(
    deep: Image.Image, file_format: str
) -> None:
    eight_bit = served_digit(Image.fromarray(seven()))
    np.testing.assert_allclose(served_digit(deep, file_format), eight_bit, atol=1.0)


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I", "F", "La"])
def test_every_common_mode_gives_a_valid_model_input(mode: str) -> None:
    image = Image.fromarray(255 - seven()).convert("RGB").convert(mode)
    result = assert_model_input(normalize_digit(image).pixels)
    assert ink_extent(result)[0] == BOX_SIZE


def test_large_pictures_are_reduced_before_float_work() -> None:
    image = Image.new("L", (1000, 800), 255)
    gray = to_grayscale(image)
    assert max(gray.shape) < 2 * WORKING_MAX_SIDE
    assert gray.shape == (math.ceil(800 / 6), math.ceil(1000 / 6))  # reduced by 6
    assert to_grayscale(image, max_side=None).shape == (800, 1000)


# --- 2. to_white_on_black ----------------------------------------------------------------


def test_dark_on_light_is_inverted() -> None:
    gray = np.full((28, 28), 240.0, dtype=np.float32)
    gray[5:23, 12:16] = 15.0
    result = to_white_on_black(gray)
    assert result[0, 0] == pytest.approx(15.0)
    assert result[10, 13] == pytest.approx(240.0)


def test_white_on_black_is_unchanged() -> None:
    gray = seven().astype(np.float32)
    result = to_white_on_black(gray)
    np.testing.assert_array_equal(result, gray)
    assert result is not gray


def test_polarity_of_a_digit_cropped_tight_against_the_border() -> None:
    """A bold digit crossing most of the border still reads as dark ink on light paper."""
    gray = np.full((20, 20), 230.0, dtype=np.float32)
    gray[:, 8:13] = 20.0  # a thick "1" running from the top edge to the bottom edge
    gray[0:4, 3:13] = 20.0  # its flag along the top edge
    assert to_white_on_black(gray)[10, 10] == pytest.approx(235.0)


def test_polarity_of_a_bold_digit_covering_most_of_the_picture() -> None:
    gray = np.full((20, 20), 250.0, dtype=np.float32)
    gray[2:18, 2:18] = 10.0  # ink covers 64 % of the picture; the border is paper
    assert to_white_on_black(gray)[10, 10] == pytest.approx(245.0)


# --- 3. remove_background ----------------------------------------------------------------


def test_clean_white_on_black_digit_is_untouched() -> None:
    pixels = seven().astype(np.float32)
    pixels[4, 6] = 128.0
    np.testing.assert_array_equal(remove_background(pixels), pixels)


def test_paper_level_and_contrast_are_normalised() -> None:
    pixels = np.full((40, 40), 60.0, dtype=np.float32)
    pixels[10:30, 18:22] = 160.0
    result = remove_background(pixels)
    assert result[0, 0] == 0.0
    assert result[20, 20] == pytest.approx(255.0)


def test_lighting_gradient_is_removed() -> None:
    columns = np.arange(60, dtype=np.float32)
    pixels = np.tile(20.0 + columns, (60, 1))  # paper from 20 to 79, left to right
    pixels[10:50, 28:32] += 150.0
    result = remove_background(pixels)
    paper = np.ones(result.shape, dtype=bool)
    paper[10:50, 28:32] = False
    assert result[paper].max() == 0.0
    assert result[10:50, 28:32].min() > 200.0


def test_paper_noise_is_suppressed() -> None:
    rng = np.random.default_rng(1)
    pixels = (50.0 + rng.normal(0.0, 8.0, (80, 80))).astype(np.float32)
    pixels[20:60, 38:44] += 150.0
    result = remove_background(pixels)
    paper = np.ones(result.shape, dtype=bool)
    paper[18:62, 36:46] = False
    assert np.count_nonzero(result[paper]) <= 0.001 * paper.sum()
    assert result[20:60, 38:44].mean() > 150.0


@pytest.mark.parametrize("level", [0.0, 128.0, 255.0])
def test_uniform_picture_has_no_ink(level: float) -> None:
    assert not remove_background(np.full((28, 28), level, dtype=np.float32)).any()


def test_faint_blemish_is_not_ink() -> None:
    pixels = np.full((28, 28), 100.0, dtype=np.float32)
    pixels[10:14, 10:14] = 105.0  # 5 grey levels: below MIN_INK_CONTRAST
    assert not remove_background(pixels).any()


# --- 4. crop_to_content ------------------------------------------------------------------


def test_crop_is_the_bounding_box_of_the_ink() -> None:
    ink = np.zeros((50, 40), dtype=np.float32)
    ink[10:30, 5:12] = 255.0
    ink[25:35, 11:20] = 200.0
    assert content_bounding_box(ink) == (10, 5, 35, 20)
    cropped = crop_to_content(ink)
    assert cropped.shape == (25, 15)
    np.testing.assert_array_equal(cropped, ink[10:35, 5:20])


def test_crop_ignores_the_faint_soft_edge() -> None:
    ink = np.zeros((50, 50), dtype=np.float32)
    ink[10:40, 20:30] = 255.0
    ink[8:42, 18:32] = np.maximum(ink[8:42, 18:32], 30.0)  # a blurred halo, 12 % bright
    assert content_bounding_box(ink) == (10, 20, 40, 30)
    assert content_bounding_box(ink, min_fraction=0.0) == (8, 18, 42, 32)


def test_crop_ignores_an_isolated_speck() -> None:
    ink = np.zeros((60, 60), dtype=np.float32)
    ink[20:50, 25:35] = 255.0
    ink[2:4, 55:57] = 255.0  # dust in a corner, far from the digit
    assert content_bounding_box(ink) == (20, 25, 50, 35)


def test_crop_keeps_a_detached_part_of_the_digit() -> None:
    ink = np.zeros((60, 60), dtype=np.float32)
    ink[25:50, 25:30] = 255.0  # a "5" whose top bar was lifted off the paper
    ink[15:19, 25:45] = 255.0
    assert content_bounding_box(ink) == (15, 25, 50, 45)


def test_crop_of_a_blank_picture_is_empty() -> None:
    blank = np.zeros((28, 28), dtype=np.float32)
    assert content_bounding_box(blank) is None
    assert crop_to_content(blank).shape == (0, 0)


# --- 5. fit_in_box -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((40, 10), (20, 5)),  # tall: a "1" stays thin
        ((10, 40), (5, 20)),
        ((30, 10), (20, 7)),  # 6.67 rounds to 7
        ((200, 3), (20, 1)),  # never thinner than a pixel
        ((7, 5), (20, 14)),  # small digits are scaled up
        ((100, 100), (20, 20)),
    ],
)
def test_fit_makes_the_longest_side_20_keeping_the_aspect_ratio(
    shape: tuple[int, int], expected: tuple[int, int]
) -> None:
    ink = np.full(shape, 255.0, dtype=np.float32)
    fitted = fit_in_box(ink)
    assert fitted.shape == expected
    assert fitted.dtype == np.float32
    assert fitted.min() >= 0.0 and fitted.max() <= 255.0


def test_fit_leaves_a_box_that_already_fits_untouched() -> None:
    ink = np.random.default_rng(0).uniform(0, 255, (20, 13)).astype(np.float32)
    np.testing.assert_array_equal(fit_in_box(ink), ink)


def test_fit_downsampling_is_antialiased() -> None:
    """Stripes one source pixel wide average to grey instead of aliasing into bars."""
    stripes = np.zeros((200, 200), dtype=np.float32)
    stripes[:, ::2] = 255.0
    fitted = fit_in_box(stripes)
    assert np.ptp(fitted[2:-2, 2:-2]) < 10.0
    assert fitted[2:-2, 2:-2].mean() == pytest.approx(127.5, abs=5.0)


# --- 6. center_by_mass -------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_centre_of_mass_lands_within_half_a_pixel_of_14_14(seed: int) -> None:
    rng = np.random.default_rng(seed)
    height, width = int(rng.integers(8, 21)), int(rng.integers(3, 21))
    ink = rng.uniform(0, 255, (height, width)).astype(np.float32) ** 2 / 255.0
    field = center_by_mass(ink)
    assert field.shape == (FIELD_SIZE, FIELD_SIZE) and field.dtype == np.float32
    assert field.sum() == pytest.approx(ink.sum(), rel=1e-5)
    row, column = mass_centre(field)
    assert abs(row - 14.0) <= 0.5 and abs(column - 14.0) <= 0.5


def test_centring_keeps_lopsided_ink_inside_the_field() -> None:
    ink = np.zeros((20, 20), dtype=np.float32)
    ink[0, :] = 255.0  # all the mass on the top row
    field = center_by_mass(ink)
    assert field.sum() == pytest.approx(ink.sum())
    assert field[FIELD_SIZE - 20 :].sum() == pytest.approx(ink.sum())


def test_centring_nothing_gives_zeros_and_too_much_is_an_error() -> None:
    assert not center_by_mass(np.zeros((0, 0), dtype=np.float32)).any()
    assert not center_by_mass(np.zeros((5, 5), dtype=np.float32)).any()
    with pytest.raises(ValueError, match="does not fit"):
        center_by_mass(np.ones((29, 5), dtype=np.float32))


# --- the whole pipeline -------------------------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [
        Image.new("L", (28, 28), 0),
        Image.new("L", (28, 28), 255),
        Image.new("RGB", (640, 480), (200, 180, 150)),
        Image.new("RGBA", (64, 64), (255, 255, 255, 0)),
        Image.new("I;16", (28, 28), 40000),
        Image.new("1", (28, 28), 1),
    ],
    ids=["black", "white", "beige-photo", "transparent", "16-bit", "bilevel"],
)
def test_blank_pictures_normalise_to_zeros_and_no_digit(image: Image.Image) -> None:
    result = normalize_digit(image)
    assert not assert_model_input(result.pixels).any()
    assert not result.found


def test_off_centre_dark_on_light_digit_is_boxed_and_centred() -> None:
    canvas = np.full((300, 400), 235, dtype=np.uint8)
    canvas[20:170, 230:380][seven(size=150, top=0, left=0, scale=6) > 0] = 25  # top right
    result = assert_model_input(normalize_digit(Image.fromarray(canvas)).pixels)
    assert max(ink_extent(result)) == BOX_SIZE
    row, column = mass_centre(result)
    assert abs(row - 14.0) <= 0.5 and abs(column - 14.0) <= 0.5
    assert result.max() == pytest.approx(255.0, abs=1.0)


def test_thin_tall_one_keeps_its_aspect_ratio() -> None:
    canvas = np.full((200, 200), 255, dtype=np.uint8)
    canvas[20:180, 95:111] = 0  # 160 x 16: a "1" ten times taller than wide
    result = assert_model_input(normalize_digit(Image.fromarray(canvas)).pixels)
    assert ink_extent(result) == (BOX_SIZE, 2)


def test_mnist_shaped_input_passes_through_unchanged() -> None:
    drawn = seven().astype(np.float32)
    drawn[4, 6:20] = 100.0  # some anti-aliasing
    digit = center_by_mass(crop_to_content(drawn)).astype(np.uint8)  # boxed, centred
    assert ink_extent(digit) == (20, 14)
    np.testing.assert_array_equal(normalize_digit(Image.fromarray(digit)).pixels, digit)


def test_normalisation_is_idempotent() -> None:
    canvas = np.full((120, 90), 200, dtype=np.uint8)
    canvas[10:110, 10:80][seven(size=100, top=0, left=0, scale=5)[:, :70] > 0] = 30
    once = normalize_digit(Image.fromarray(canvas)).pixels
    twice = normalize_digit(Image.fromarray(np.round(once).astype(np.uint8))).pixels
    assert np.abs(twice - np.round(once)).max() <= 1.0


def test_real_mnist_digits_come_out_almost_unchanged(
    mnist_sample: tuple[NDArray[np.uint8], NDArray[np.uint8]],
) -> None:
    """MNIST is what the pipeline rebuilds, so MNIST itself should pass through it."""
    images, _ = mnist_sample
    results = np.stack([normalize_digit(Image.fromarray(image)).pixels for image in images])
    differences = np.abs(results - images.astype(np.float32)).mean(axis=(1, 2))
    # Most are identical; the few MNIST digits whose box included a speck of dust are
    # enlarged, since the speck no longer counts.
    assert np.median(differences) < 0.1
    assert np.mean(differences < 2.0) >= 0.95
    assert np.median([correlation(r, i) for r, i in zip(results, images, strict=True)]) > 0.999
    for result in results:
        row, column = mass_centre(result)
        assert abs(row - 14.0) <= 0.5 and abs(column - 14.0) <= 0.5
        assert max(ink_extent(result)) == BOX_SIZE


def full_pipeline(image: Image.Image) -> NDArray[np.float32]:
    """`normalize_digit` without its shortcut: every step, in order."""
    gray, outside_paper = crop_to_paper(to_grayscale(image))
    ink = remove_ruled_lines(remove_background(to_white_on_black(gray), outside_paper))
    return center_by_mass(fit_in_box(crop_to_content(ink)))


def test_mnist_form_shortcut_returns_exactly_what_the_full_pipeline_does(
    mnist_sample: tuple[NDArray[np.uint8], NDArray[np.uint8]],
) -> None:
    images, _ = mnist_sample
    taken = 0
    for image in images:
        picture = Image.fromarray(image)
        shortcut = mnist_form_shortcut(picture)
        if shortcut is not None:
            taken += 1
            np.testing.assert_array_equal(shortcut.pixels, full_pipeline(picture))
            np.testing.assert_array_equal(normalize_digit(picture).pixels, shortcut.pixels)
            assert shortcut.found
    assert taken >= 0.4 * len(images), f"only {taken} of {len(images)} real digits took it"


def test_a_bar_in_mnist_form_is_no_digit_like_the_same_bar_on_a_larger_canvas() -> None:
    """The shortcut takes a 28x28 picture as it is, and must not call a dash a digit."""
    bar = np.zeros((FIELD_SIZE, FIELD_SIZE), dtype=np.uint8)
    bar[13:16, 4:24] = 255
    bar[13:16, 4:8] = 120  # a dimmer left end brings the centre of mass to 14
    assert mnist_form_shortcut(Image.fromarray(bar)) is not None
    assert not normalize_digit(Image.fromarray(bar)).found
    canvas = np.zeros((40, 40), dtype=np.uint8)
    canvas[6:34, 6:34] = bar
    assert not normalize_digit(Image.fromarray(canvas)).found


def mnist_form_seven() -> NDArray[np.uint8]:
    drawn = seven().astype(np.float32)
    drawn[4, 6:20] = 100.0
    return center_by_mass(crop_to_content(drawn)).astype(np.uint8)


def test_mnist_form_shortcut_declines_transparency_and_a_grey_background() -> None:
    digit = mnist_form_seven()
    transparent = io.BytesIO()
    Image.fromarray(digit).save(transparent, "PNG", transparency=0)
    assert mnist_form_shortcut(Image.open(transparent)) is None
    block = np.zeros((28, 28), dtype=np.uint8)
    block[4:24, 4:24] = 100  # bright enough to be ink, but most dark pixels are not 0
    block[14, 14] = 255
    assert mnist_form_shortcut(Image.fromarray(block)) is None
    np.testing.assert_array_equal(
        normalize_digit(Image.fromarray(block)).pixels, full_pipeline(Image.fromarray(block))
    )


def test_mnist_form_shortcut_agrees_with_the_pipeline_on_random_digit_like_pictures() -> None:
    """Strokes of random width, length and grey level, placed where the checks may pass."""
    rng = np.random.default_rng(7)
    taken = 0
    found_by_shortcut: list[bool] = []
    found_by_pipeline: list[bool] = []
    for _ in range(400):
        picture = np.zeros((28, 28), dtype=np.uint8)
        height, width = 20, int(rng.integers(3, 21))
        top = int(rng.integers(4, 6))
        left = max(1, 14 - width // 2 + int(rng.integers(-1, 2)))
        strokes = rng.integers(0, 256, (height, width)) * (rng.random((height, width)) < 0.4)
        picture[top : top + height, left : left + width] = strokes
        picture[top, left] = picture[top + height - 1, left + width - 1] = 255
        image = Image.fromarray(picture)
        shortcut = mnist_form_shortcut(image)
        if shortcut is not None:
            taken += 1
            np.testing.assert_array_equal(shortcut.pixels, full_pipeline(image))
            # The same picture on a larger black canvas takes the full pipeline.
            canvas = np.zeros((40, 40), dtype=np.uint8)
            canvas[6:34, 6:34] = picture
            found_by_pipeline.append(normalize_digit(Image.fromarray(canvas)).found)
            found_by_shortcut.append(shortcut.found)
    assert taken >= 20, taken
    assert found_by_shortcut == found_by_pipeline
    assert 0 < sum(found_by_shortcut) < taken  # both answers occur among these pictures


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda d: 255 - d, id="inverted"),
        pytest.param(lambda d: np.roll(d, 2, axis=1), id="off-centre"),
        pytest.param(lambda d: (d * 0.8).astype(np.uint8), id="low-contrast"),
        pytest.param(lambda d: np.where(np.arange(28) == 1, 20, d), id="faint-column"),
        pytest.param(lambda d: np.where(np.eye(28, dtype=bool), 255, d), id="ink-on-border"),
    ],
)
def test_mnist_form_shortcut_declines_pictures_that_need_work(spoil: Any) -> None:
    digit = mnist_form_seven()
    assert mnist_form_shortcut(Image.fromarray(digit)) is not None
    spoiled = np.ascontiguousarray(spoil(digit), dtype=np.uint8)
    assert mnist_form_shortcut(Image.fromarray(spoiled)) is None
    assert mnist_form_shortcut(Image.fromarray(digit).resize((56, 56))) is None
    assert mnist_form_shortcut(Image.fromarray(digit).convert("RGB")) is None


@pytest.mark.parametrize("kind", list(digit_variants.DIGIT_VARIANTS))
def test_real_world_variants_normalise_back_to_the_mnist_digit(
    kind: str, mnist_sample: tuple[NDArray[np.uint8], NDArray[np.uint8]]
) -> None:
    """Photographed, recoloured, moved, resized, compressed: still the same 28x28 digit."""
    images, _ = mnist_sample
    make = digit_variants.DIGIT_VARIANTS[kind]
    similarities = []
    for index, image in enumerate(images[:8]):
        picture = make(image, index)
        result = assert_model_input(normalize_digit(Image.open(io.BytesIO(picture.data))).pixels)
        similarities.append(correlation(result, image.astype(np.float32)))
    # Photos of a sheet hold smaller digits, reduced further and compressed harder.
    floor = 0.8 if kind in digit_variants.PAPER_VARIANTS else 0.85
    assert np.mean(similarities) > floor, similarities


# --- sheets on a table, ruled lines, and pictures with no digit ----------------------------


def photo_of_a_sheet(angle: float = 6.0, digit: bool = True) -> Image.Image:
    """A 240x200 photo of a light sheet turned by `angle` degrees on a dark table, with a
    dark "7" on it (80 pixels tall, like `seven(scale=4)`)."""
    photo = Image.new("L", (240, 200), 55)
    radians = math.radians(angle)
    corners = [
        (120 + x * math.cos(radians) - y * math.sin(radians),
         100 + x * math.sin(radians) + y * math.cos(radians))
        for x, y in ((-80, -65), (80, -65), (80, 65), (-80, 65))
    ]  # fmt: skip
    ImageDraw.Draw(photo).polygon(corners, fill=235)
    if digit:
        photo.paste(25, (95, 60), Image.fromarray(seven(size=80, top=0, left=0, scale=4)))
    return photo


def seven_alone() -> NDArray[np.float32]:
    """What `normalize_digit` makes of the "7" of `photo_of_a_sheet` on plain paper."""
    paper = np.full((120, 110), 235, dtype=np.uint8)
    paper[20:100, 15:95][seven(size=80, top=0, left=0, scale=4) > 0] = 25
    return normalize_digit(Image.fromarray(paper)).pixels


@pytest.mark.parametrize("angle", [0.0, 6.0, -12.0])
def test_a_sheet_on_a_dark_table_is_the_paper_not_the_digit(angle: float) -> None:
    photo = photo_of_a_sheet(angle)
    cropped, outside = crop_to_paper(to_grayscale(photo))
    assert outside is not None and outside.shape == cropped.shape
    assert cropped.shape[0] <= 165 and cropped.shape[1] <= 195  # the table around it is gone
    assert cropped[outside].min() > 200  # what is left of it is painted the paper's level
    result = normalize_digit(photo)
    assert result.found
    assert correlation(result.pixels, seven_alone()) > 0.9


def test_an_empty_sheet_on_a_table_has_no_digit() -> None:
    result = normalize_digit(photo_of_a_sheet(digit=False))
    assert not result.found
    assert not result.pixels.any()


def bold_ring(size: int = 100, width: int = 22) -> NDArray[np.uint8]:
    rows, columns = np.indices((size, size)) - (size - 1) / 2
    radius = np.hypot(rows, columns * 1.25)
    return np.where((radius <= size / 2) & (radius > size / 2 - width), 255, 0).astype(np.uint8)


def tight(pixels: NDArray[np.uint8]) -> NDArray[np.uint8]:
    rows, columns = np.flatnonzero(pixels.any(axis=1)), np.flatnonzero(pixels.any(axis=0))
    return pixels[rows[0] : rows[-1] + 1, columns[0] : columns[-1] + 1]


@pytest.mark.parametrize(
    "pixels",
    [
        pytest.param(tight(bold_ring()), id="bold-0"),
        pytest.param(tight(seven(size=100, top=0, left=0, scale=5)), id="bold-7"),
        pytest.param(np.pad(np.full((96, 30), 255, dtype=np.uint8), ((2, 2), (8, 8))), id="bold-1"),
    ],
)
def test_bold_light_strokes_on_black_are_not_taken_for_a_sheet(
    pixels: NDArray[np.uint8],
) -> None:
    gray = pixels.astype(np.float32)
    cropped, outside = crop_to_paper(gray)
    assert outside is None and cropped is gray
    assert normalize_digit(Image.fromarray(pixels)).found


def test_a_shadow_across_a_page_is_neither_a_table_nor_a_digit() -> None:
    rng = np.random.default_rng(3)
    page = np.full((200, 240), 230.0) + rng.normal(0.0, 2.0, (200, 240))
    page[:, :140] *= 0.7  # a shadow over the left of the page: three sides of the border
    picture = Image.fromarray(np.clip(page, 0, 255).astype(np.uint8))
    assert crop_to_paper(to_grayscale(picture))[1] is None
    assert not normalize_digit(picture).found


def test_small_pictures_are_not_searched_for_a_sheet() -> None:
    gray = np.full((28, 28), 40.0, dtype=np.float32)
    gray[3:25, 3:25] = 230.0
    assert crop_to_paper(gray)[1] is None


def ruled_ink(height: int = 150, width: int = 200, level: float = 110.0) -> Floats:
    """White-on-black ink of ruled paper: 2-pixel lines every 30 rows, tilted 0.6 degrees."""
    rows, columns = np.indices((height, width))
    across = rows - 0.01 * columns
    on_line = np.abs((across - 15.0) % 30.0 - 15.0) < 1.0
    return np.where(on_line, np.float32(level), np.float32(0.0)).astype(np.float32)


def assert_only_the_stroke_is_left(result: Floats, columns: tuple[int, int]) -> None:
    """The "1" in rows 20-130 and `columns` is whole; of the lines, only stubs where the
    stroke crosses them are left."""
    left, right = columns
    np.testing.assert_array_equal(result[20:130, left:right], 255.0)
    near_stroke = np.zeros(result.shape, dtype=bool)
    near_stroke[:, left - 3 : right + 3] = True
    assert not result[~near_stroke].any()


def test_ruled_lines_are_erased_and_the_stroke_crossing_them_kept() -> None:
    ink = ruled_ink()
    ink[20:130, 95:101] = 255.0  # a "1" crossing four lines
    assert_only_the_stroke_is_left(remove_ruled_lines(ink), columns=(95, 101))


def test_a_page_of_lines_has_no_digit() -> None:
    assert not remove_ruled_lines(ruled_ink()).any()
    page = Image.fromarray((235 - ruled_ink(level=90.0)).astype(np.uint8))
    result = normalize_digit(page)
    assert not result.found and not result.pixels.any()


def thin_seven(height: int = 120, width: int = 80) -> Floats:
    """A "7" cropped tight: a 2-pixel bar from edge to edge, as straight as a ruled line."""
    ink = np.zeros((height, width), dtype=np.float32)
    ink[0:2, :] = 255.0
    for row in range(2, height):
        column = round((width - 3) * (1 - (row - 2) / (height - 2)) * 0.9)
        ink[row, column : column + 3] = 255.0
    return ink


def test_a_bar_from_edge_to_edge_of_a_tight_crop_is_kept() -> None:
    ink = thin_seven()
    np.testing.assert_array_equal(remove_ruled_lines(ink), ink)
    with_rules = np.maximum(ink, ruled_ink(120, 80, level=90.0))
    result = remove_ruled_lines(with_rules)
    np.testing.assert_array_equal(result[0:2], 255.0)  # the bar stays...
    near_the_seven = np.asarray(Image.fromarray(ink).filter(ImageFilter.MaxFilter(7))) > 0
    rules = with_rules > ink
    # ...the faint rules go, but for stubs where they cross the "7" and a stray pixel.
    assert np.count_nonzero(result[rules & ~near_the_seven]) <= 0.01 * np.count_nonzero(rules)


def test_a_lone_vertical_stroke_spanning_the_picture_is_a_one() -> None:
    ink = np.zeros((100, 100), dtype=np.float32)
    ink[:, 48:51] = 255.0
    np.testing.assert_array_equal(remove_ruled_lines(ink), ink)
    page = Image.fromarray((240 - 0.9 * ink).astype(np.uint8))
    assert normalize_digit(page).found


def test_a_margin_line_beside_the_digit_is_erased() -> None:
    ink = ruled_ink()
    ink[:, 20:22] = 230.0  # a dark margin line from top to bottom, nearly as dark as the pen
    ink[40:110, 100:104] = 255.0  # the digit, right of it
    result = remove_ruled_lines(ink)
    assert not result[:, :60].any()
    assert result[40:110, 100:104].min() == 255.0


def test_graph_paper_is_erased_both_ways_and_the_stroke_kept() -> None:
    ink = np.maximum(ruled_ink(150, 150), ruled_ink(150, 150).T)
    ink[20:130, 72:78] = 255.0  # a "1" between two of the vertical lines
    assert_only_the_stroke_is_left(remove_ruled_lines(ink), columns=(72, 78))


def test_vertical_lines_alone_are_not_searched_for() -> None:
    """A page with vertical lines only is a ruled page turned sideways (its digit is too),
    or strokes: they are left to the model."""
    ink = ruled_ink().T.copy()
    np.testing.assert_array_equal(remove_ruled_lines(ink), ink)


def page_with(mark: NDArray[np.bool_], darkness: float = 200.0) -> Image.Image:
    """A 200x240 photo of white paper (noise, JPEG) with `mark` drawn `darkness` darker."""
    rng = np.random.default_rng(11)
    page = 235.0 - darkness * mark + rng.normal(0.0, 2.0, mark.shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(page, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=85)
    return Image.open(io.BytesIO(buffer.getvalue()))


def mark(top: int, left: int, pixels: NDArray[Any]) -> NDArray[np.bool_]:
    canvas = np.zeros((200, 240), dtype=bool)
    canvas[top : top + pixels.shape[0], left : left + pixels.shape[1]] = pixels > 0
    return canvas


def blotches(seed: int) -> NDArray[np.float32]:
    coarse = np.random.default_rng(seed).normal(0.0, 1.0, (14, 17)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse).resize((240, 200), Image.Resampling.BICUBIC))


@pytest.mark.parametrize(
    ("picture", "found"),
    [
        pytest.param(
            page_with(mark(40, 80, seven(size=80, top=0, left=0, scale=3))), True, id="digit"
        ),
        pytest.param(
            page_with(mark(40, 80, seven(size=80, top=0, left=0, scale=3)), darkness=80),
            True,
            id="faint-pencil",
        ),
        pytest.param(page_with(mark(90, 110, seven(size=20, top=0, left=0))), True, id="small"),
        pytest.param(page_with(mark(90, 110, np.ones((3, 3)))), False, id="speck"),
        pytest.param(page_with(mark(95, 80, np.ones((5, 60)))), False, id="dash"),
        pytest.param(page_with(np.zeros((200, 240), dtype=bool)), False, id="blank"),
        pytest.param(
            Image.fromarray((230 + 4 * blotches(2)).astype(np.uint8)), False, id="paper-texture"
        ),
        pytest.param(
            Image.fromarray(np.random.default_rng(5).integers(0, 256, (120, 160), np.uint8)),
            False,
            id="noise",
        ),
    ],
)
def test_a_digit_is_found_only_where_there_is_one(picture: Image.Image, found: bool) -> None:
    assert normalize_digit(picture).found is found


PAGES_PER_KIND = 12
DIGITS_PER_KIND = 6


def test_no_digit_on_blank_ruled_or_edge_pages_and_one_in_every_digit_picture(
    mnist_sample: tuple[NDArray[np.uint8], NDArray[np.uint8]],
) -> None:
    """About a hundred generated photos: pages without a digit, and digits of every kind."""
    wrong = []
    for make_page in digit_variants.NO_DIGIT_PAGES.values():
        for seed in range(PAGES_PER_KIND):
            page = make_page(seed)
            if normalize_digit(Image.open(io.BytesIO(page.data))).found:
                wrong.append(f"digit found in {page.description}")
    images, _ = mnist_sample
    for make in digit_variants.DIGIT_VARIANTS.values():
        for index, image in enumerate(images[:DIGITS_PER_KIND]):
            picture = make(image, 100 + index)
            if not normalize_digit(Image.open(io.BytesIO(picture.data))).found:
                wrong.append(f"no digit found in {picture.description}")
    assert not wrong, "\n".join(wrong)


# Floors for the shipped model (0.977 on MNIST's test set) on 100 digits of each kind: it
# reads 0.93-0.99 of them per kind on 1,000 (docs/digits.md); the floors leave room for a
# retrained model and for the chance of a 100-digit sample (three standard deviations).
ACCURACY_FLOORS = {kind: 0.85 for kind in digit_variants.DIGIT_VARIANTS}


@pytest.mark.slow
def test_every_kind_of_digit_picture_is_read_by_the_shipped_model(
    mnist_sample: tuple[NDArray[np.uint8], NDArray[np.uint8]],
) -> None:
    import tensorflow as tf

    model = tf.saved_model.load(str(SHIPPED_MNIST)).signatures["serving_default"]
    images, labels = mnist_sample[0][-100:], mnist_sample[1][-100:]
    accuracies = {}
    for kind, make in digit_variants.DIGIT_VARIANTS.items():
        pictures = [make(image, 200 + index) for index, image in enumerate(images)]
        batch = np.stack([normalize_digit(Image.open(io.BytesIO(p.data))).pixels for p in pictures])
        probabilities = model(pixels=tf.constant(batch[..., None]))["probabilities"].numpy()
        accuracies[kind] = float(np.mean(probabilities.argmax(axis=1) == labels))
    print("accuracy per kind:", {kind: round(a, 3) for kind, a in accuracies.items()})
    low = {kind: a for kind, a in accuracies.items() if a < ACCURACY_FLOORS[kind]}
    assert not low, low


# --- the variant generator itself --------------------------------------------------------


def test_variants_are_deterministic_and_decodable() -> None:
    digit = seven()
    makers: dict[str, Any] = {
        **{
            kind: lambda seed, make=make: make(digit, seed)
            for kind, make in digit_variants.DIGIT_VARIANTS.items()
        },
        **digit_variants.NO_DIGIT_PAGES,
    }
    for kind, make in makers.items():
        first, again = make(5), make(5)
        assert first == again, kind
        assert first.description.startswith(f"{kind}: ")
        image = Image.open(io.BytesIO(first.data))
        assert image.format == {"image/png": "PNG", "image/jpeg": "JPEG"}[first.media_type]
        assert min(image.size) >= FIELD_SIZE
        if kind not in digit_variants.VARIANTS:  # every new kind draws at random
            assert make(6) != first, kind
    assert digit_variants.combined(digit, 5) != digit_variants.combined(digit, 6)


def test_variant_mix_cycles_through_every_kind() -> None:
    digits = [seven()] * len(digit_variants.VARIANTS)
    kinds = [kind for kind, _ in digit_variants.variant_mix(digits, seed=3)]
    assert kinds == list(digit_variants.VARIANTS)
    every = digit_variants.DIGIT_VARIANTS
    mixed = list(digit_variants.variant_mix([seven()] * len(every), seed=3, kinds=every))
    assert [kind for kind, _ in mixed] == list(every)
    assert mixed[: len(kinds)] == list(digit_variants.variant_mix(digits, seed=3))
    pages = [kind for kind, _ in digit_variants.page_mix(6, seed=3)]
    assert pages == list(digit_variants.NO_DIGIT_PAGES) * 2
