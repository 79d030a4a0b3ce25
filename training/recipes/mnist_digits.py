"""What the recipes trained on MNIST share: the data, the served digit preprocessing and
what a digit reader cannot do. Not a recipe itself (it defines no `RECIPE`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.contract.model_card import Preprocessing
from training import flags
from training.data import DataError, LabelledArrays, load_mnist_arrays, mnist_split

DATA_HELP = (
    "an .npz with x_train,y_train,x_test,y_test (and optionally x_val,y_val); omitted: "
    "keras.datasets.mnist.load_data(), which needs internet"
)

LIMITATIONS = (
    "Reads one handwritten digit per picture: dark or light ink, any size or position, on "
    "plain, ruled or squared paper or a sheet on a darker table (0.95-0.99 on synthetic "
    "photos of MNIST test digits, docs/digits.md). A blank page, ruled paper alone, an "
    "empty sheet or a shadow gives digit_found false and a meaningless label. Several "
    "digits, letters or other marks are still read as one of 0-9, often confidently. Not "
    "handled: a table seen along one side only, a shadow across the digit, a faint digit "
    "touching the picture's edge. Handwriting unlike MNIST's writers (Y. LeCun, C. Cortes, "
    "C. J. C. Burges) is read less well."
)

PREPROCESSING = Preprocessing(
    kind="mnist-digit",
    description="app.contract.digits.normalize_digit: grayscale (deep images by the "
    "bits their data uses); a sheet photographed on a darker table is cropped to; "
    "polarity from the border (dark-on-light inverted); paper level (a plane, or a "
    "quadratic surface on photos) and noise removed, ink stretched to 255; ruled and "
    "squared lines erased; cropped to the ink, fitted in 20x20 keeping the aspect "
    "ratio, centred by centre of mass in 28x28; MNIST-form 28x28 pictures pass "
    "unchanged. Raw 0..255 pixels (the model scales them). Each answer says whether "
    "a digit was found (digit_found).",
)


def add_validation_split_flag(parser: argparse.ArgumentParser, default: float) -> None:
    parser.add_argument(
        "--validation-split",
        type=flags.share,
        default=None,
        help="share of x_train held out for validation when the npz has no x_val "
        f"(default: {default})",
    )


def load_split(data: Path | None, split: str) -> LabelledArrays:
    """`test` (x_test/y_test), `train`, or `val` when the npz holds x_val/y_val."""
    arrays = load_mnist_arrays(data)
    if f"x_{split}" not in arrays:
        raise DataError(f"{data} holds no x_{split}/y_{split} arrays")
    return mnist_split(arrays, split)
