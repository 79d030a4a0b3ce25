"""The reliability diagram is a real PNG of the figure's size with something drawn on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from app.contract.classification import ReliabilityBin, reliability_bins
from training.plots import plot_reliability_diagram


def drawn_pixels(path: Path) -> int:
    """How many pixels are not the white background."""
    pixels = np.asarray(Image.open(path).convert("L"))
    return int((pixels < 250).sum())


def test_reliability_diagram_is_a_png_of_both_curves(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, 1000)
    probabilities = np.stack([confidence, 1 - confidence], axis=1)
    labels = (rng.random(1000) > confidence).astype(np.int64)
    softened = (probabilities + 0.5) / 2
    path = plot_reliability_diagram(
        reliability_bins(probabilities, labels),
        reliability_bins(softened, labels),
        tmp_path / "reliability.png",
        title="tiny",
    )
    assert path == tmp_path / "reliability.png"
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (600, 700)  # 6 x 7 inches at 100 dpi
    empty_axes = tmp_path / "empty.png"
    no_bins: list[ReliabilityBin] = []
    plot_reliability_diagram(no_bins, no_bins, empty_axes)
    # The curves, their markers and the count steps add ink to the bare axes.
    assert drawn_pixels(path) > drawn_pixels(empty_axes) + 2000
