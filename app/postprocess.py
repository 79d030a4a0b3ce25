"""Turn softmax outputs into the native API's response items."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from app.dataplane import Classification, Evaluation
from app.schemas import ClassProbability, FilePrediction, FileProbabilities, Prediction


def to_predictions(
    classification: Classification, filenames: Sequence[str], top_k: int
) -> list[Prediction]:
    """Label, confidence and the `top_k` most likely classes of each input."""
    names = classification.card.class_names
    k = min(top_k, len(names))
    predictions = []
    for filename, row in zip(filenames, classification.probabilities, strict=True):
        ranked = np.argsort(-row, kind="stable")[:k]
        best = int(ranked[0])
        predictions.append(
            Prediction(
                filename=filename,
                label=names[best],
                class_index=best,
                confidence=float(row[best]),
                top_k=[
                    ClassProbability(
                        label=names[int(i)], class_index=int(i), probability=float(row[i])
                    )
                    for i in ranked
                ],
            )
        )
    return predictions


def to_probabilities(
    classification: Classification, filenames: Sequence[str]
) -> list[FileProbabilities]:
    """Every class's probability for each input, keyed by class name."""
    names = classification.card.class_names
    return [
        FileProbabilities(
            filename=filename,
            probabilities={name: float(p) for name, p in zip(names, row, strict=True)},
        )
        for filename, row in zip(filenames, classification.probabilities, strict=True)
    ]


def to_file_predictions(evaluation: Evaluation, filenames: Sequence[str]) -> list[FilePrediction]:
    """Per-file outcome of an evaluation: true class, predicted class, right or wrong."""
    names = evaluation.classification.card.class_names
    results = []
    for filename, label, row in zip(
        filenames, evaluation.labels, evaluation.classification.probabilities, strict=True
    ):
        predicted = int(np.argmax(row))
        results.append(
            FilePrediction(
                filename=filename,
                true_label=names[label],
                predicted_label=names[predicted],
                confidence=float(row[predicted]),
                correct=predicted == label,
            )
        )
    return results
