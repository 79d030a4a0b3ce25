"""PNG pictures of a training run, drawn with matplotlib's file-only Agg backend.

Figures are drawn on an explicit `FigureCanvasAgg` rather than through `pyplot`, so no
display is needed and no global backend switch happens on import.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from app.contract.classification import EvaluationReport


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
