"""Turn softmax outputs into the native API's response items.

A single label (`label`, `predicted_label`, the first of `top_k`) is the one the card's
decision rule gives (`app.contract.decision`): the argmax, or a two-class model's
operating point. Probabilities are reported as the model gave them.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from app.contract.decision import decide, rank_classes
from app.dataplane import Classification, Evaluation
from app.schemas import (
    ClassProbability,
    FileError,
    FilePrediction,
    FileProbabilities,
    Prediction,
    PredictResponse,
    ProbabilitiesResponse,
)


def predict_response(
    classification: Classification,
    filenames: Sequence[str],
    top_k: int,
    *,
    include_preprocessed: bool = False,
) -> PredictResponse:
    """The native `predict` answer."""
    return PredictResponse(
        model=classification.model.name,
        version=classification.model.version,
        predictions=to_predictions(
            classification, filenames, top_k, include_preprocessed=include_preprocessed
        ),
        errors=to_file_errors(classification),
    )


def probabilities_response(
    classification: Classification, filenames: Sequence[str]
) -> ProbabilitiesResponse:
    """The native `probabilities` answer."""
    return ProbabilitiesResponse(
        model=classification.model.name,
        version=classification.model.version,
        class_names=classification.card.class_names,
        results=to_probabilities(classification, filenames),
        errors=to_file_errors(classification),
    )


def to_predictions(
    classification: Classification,
    filenames: Sequence[str],
    top_k: int,
    *,
    include_preprocessed: bool = False,
) -> list[Prediction]:
    """Label, confidence and the `top_k` classes of each input that was read, label first.

    `filenames` names every file sent; each answer is matched to its own by position.
    """
    card = classification.card
    names = card.class_names
    k = min(top_k, len(names))
    rankings = rank_classes(classification.probabilities, names, card.operating_point)
    predictions = []
    for row_index, (position, row, ranking) in enumerate(
        zip(classification.positions, classification.probabilities, rankings, strict=True)
    ):
        ranked = ranking[:k]
        best = int(ranked[0])
        predictions.append(
            Prediction(
                index=position,
                filename=filenames[position],
                label=names[best],
                class_index=best,
                confidence=float(row[best]),
                top_k=[
                    ClassProbability(
                        label=names[int(i)], class_index=int(i), probability=float(row[i])
                    )
                    for i in ranked
                ],
                digit_found=classification.digit_found_at(row_index),
                preprocessed_png=(
                    pixels_to_png_base64(classification.pixels[row_index])
                    if include_preprocessed and classification.pixels is not None
                    else None
                ),
            )
        )
    return predictions


def to_file_errors(classification: Classification) -> list[FileError]:
    """The files that could not be read, each with the error it would have got alone."""
    return [
        FileError(
            index=failure.position,
            filename=failure.filename,
            error=failure.error.message,
            code=failure.error.code,
            status=failure.error.status_code,
        )
        for failure in classification.failures
    ]


def pixels_to_png_base64(pixels: NDArray[np.float32]) -> str:
    """An `[H, W, C]` array of 0..255 pixels as a base64-encoded PNG."""
    image = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    mode = "L" if image.shape[2] == 1 else "RGB"
    buffer = io.BytesIO()
    Image.fromarray(image[:, :, 0] if mode == "L" else image, mode=mode).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def to_probabilities(
    classification: Classification, filenames: Sequence[str]
) -> list[FileProbabilities]:
    """Every class's probability for each input that was read, keyed by class name."""
    names = classification.card.class_names
    return [
        FileProbabilities(
            index=position,
            filename=filenames[position],
            probabilities={name: float(p) for name, p in zip(names, row, strict=True)},
            digit_found=classification.digit_found_at(row_index),
        )
        for row_index, (position, row) in enumerate(
            zip(classification.positions, classification.probabilities, strict=True)
        )
    ]


def to_file_predictions(evaluation: Evaluation, filenames: Sequence[str]) -> list[FilePrediction]:
    """Per-file outcome of an evaluation: true class, predicted class, right or wrong."""
    classification = evaluation.classification
    card = classification.card
    names = card.class_names
    decided = decide(classification.probabilities, names, card.operating_point)
    results = []
    for row_index, (position, label, row, predicted_index) in enumerate(
        zip(
            classification.positions,
            evaluation.labels,
            classification.probabilities,
            decided,
            strict=True,
        )
    ):
        predicted = int(predicted_index)
        results.append(
            FilePrediction(
                index=position,
                filename=filenames[position],
                true_label=names[label],
                predicted_label=names[predicted],
                confidence=float(row[predicted]),
                correct=predicted == label,
                digit_found=classification.digit_found_at(row_index),
            )
        )
    return results
