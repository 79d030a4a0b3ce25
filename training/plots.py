"""PNG pictures of a training run, drawn with matplotlib's file-only Agg backend.

Figures are drawn on an explicit `FigureCanvasAgg` rather than through `pyplot`, so no
display is needed and no global backend switch happens on import.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from app.contract.classification import (
    EvaluationReport,
    ReliabilityBin,
    calibration_error_of_bins,
)


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def plot_training_history(history: dict[str, list[float]], path: Path, title: str) -> Path:
    """Loss and accuracy per epoch, training next to validation."""
    figure = _new_figure(10, 4)
    axes = figure.subplots(1, 2)
    for axis, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for key, label in ((metric, "training"), (f"val_{metric}", "validation")):
            values = history.get(key)
            if values:
                axis.plot(range(1, len(values) + 1), values, marker="o", label=label)
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def plot_confusion_matrix(report: EvaluationReport, path: Path, title: str) -> Path:
    """Counts per (true, predicted) class, with the accuracy in the title."""
    matrix = np.asarray(report.confusion_matrix)
    names = report.class_names
    size = max(5.0, 0.5 * len(names) + 2)
    figure = _new_figure(size, size)
    axis = figure.subplots()
    axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(names)), names, rotation=45 if len(names) > 2 else 0)
    axis.set_yticks(range(len(names)), names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, column), count in np.ndenumerate(matrix):
        colour = "white" if count > threshold else "black"
        axis.text(column, row, str(count), ha="center", va="center", color=colour, fontsize=8)
    accuracy = f"{report.accuracy:.4f}" if report.accuracy is not None else "n/a"
    axis.set_title(f"{title}\naccuracy {accuracy} on {report.count} test images")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def plot_reliability_diagram(
    bins_before: Sequence[ReliabilityBin],
    bins_after: Sequence[ReliabilityBin],
    path: Path,
    title: str = "Reliability",
) -> Path:
    """Accuracy against mean confidence per bin, before and after calibration.

    A calibrated model's points lie on the diagonal; the ECE in the legend is the
    count-weighted distance from it. Below, how many examples fell in each bin.
    """
    figure = _new_figure(6, 7)
    reliability, counts = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    reliability.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    for bins, label, marker in ((bins_before, "before", "s"), (bins_after, "after", "o")):
        filled = [b for b in bins if b.count]
        ece = calibration_error_of_bins(bins)
        reliability.plot(
            [b.confidence for b in filled],
            [b.accuracy for b in filled],
            marker=marker,
            label=f"{label} (ECE {ece:.4f})" if ece is not None else label,
        )
        centres = [(b.lower + b.upper) / 2 for b in bins]
        counts.step(centres, [b.count for b in bins], where="mid", label=label)
    reliability.set_xlim(0, 1)
    reliability.set_ylim(0, 1)
    reliability.set_ylabel("accuracy of the top label")
    reliability.grid(alpha=0.3)
    reliability.legend(loc="upper left")
    reliability.set_title(title)
    counts.set_xlabel("confidence (highest probability)")
    counts.set_ylabel("examples")
    counts.set_yscale("symlog", linthresh=1)  # most examples sit in the top bins
    counts.set_ylim(bottom=0)
    counts.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path
