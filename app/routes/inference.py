"""Native image-upload API: predict, probabilities and evaluate, latest or pinned version.

Each handler reads the multipart upload, calls the data plane and shapes the response;
the versioned path (`/versions/{version}/...`) is the same handler with a pinned version.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Path, Query, UploadFile

from app.dataplane import DataPlane
from app.deps import DataPlaneDep, SettingsDep, read_uploads
from app.errors import ErrorResponse, InvalidInput
from app.labelled import ArchiveLimits, parse_labels, read_labelled_archive
from app.postprocess import (
    predict_response,
    probabilities_response,
    to_file_errors,
    to_file_predictions,
)
from app.schemas import EvaluateResponse, PredictResponse, ProbabilitiesResponse

router = APIRouter(prefix="/api/v1", tags=["inference"])

ModelName = Annotated[str, Path(description="Model name", examples=["mnist-mlp"])]
Version = Annotated[int, Path(ge=1, description="Model version", examples=[1])]
Files = Annotated[
    list[UploadFile],
    File(description="One or more images: PNG, JPEG, BMP, GIF, TIFF or WebP"),
]
TopK = Annotated[
    int | None,
    Query(ge=1, le=1000, description="How many of the most likely classes to list"),
]
IncludePreprocessed = Annotated[
    bool,
    Query(description="Return the image the model actually saw, as a base64 PNG, per file"),
]

_ERRORS: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorResponse, "description": "No files or an invalid request"},
    404: {"model": ErrorResponse, "description": "Unknown model or version"},
    413: {"model": ErrorResponse, "description": "Body, file count or archive over a limit"},
    415: {
        "model": ErrorResponse,
        "description": "No file is a supported image (with several files, those that are "
        "get answers and the others are listed in `errors`)",
    },
    422: {
        "model": ErrorResponse,
        "description": "No file could be decoded (see 415), or bad labels or parameters",
    },
    503: {"model": ErrorResponse, "description": "Model not loaded yet or failed to load"},
}


async def _predict(
    dataplane: DataPlane,
    name: str,
    version: int | None,
    files: Files,
    top_k: int,
    include_preprocessed: bool,
) -> PredictResponse:
    uploads = await read_uploads(files)
    result = await dataplane.classify_uploads(name, version, uploads)
    filenames = [u.filename for u in uploads]
    return predict_response(result, filenames, top_k, include_preprocessed=include_preprocessed)


@router.post(
    "/models/{name}/predict",
    response_model=PredictResponse,
    summary="Predict the class of uploaded images",
    responses=_ERRORS,
)
async def predict(
    name: ModelName,
    files: Files,
    dataplane: DataPlaneDep,
    settings: SettingsDep,
    top_k: TopK = None,
    include_preprocessed: IncludePreprocessed = False,
) -> PredictResponse:
    """Label, confidence and top-k classes for each uploaded image, in upload order."""
    k = top_k or settings.default_top_k
    return await _predict(dataplane, name, None, files, k, include_preprocessed)


@router.post(
    "/models/{name}/versions/{version}/predict",
    response_model=PredictResponse,
    summary="Predict with a pinned model version",
    responses=_ERRORS,
)
async def predict_version(
    name: ModelName,
    version: Version,
    files: Files,
    dataplane: DataPlaneDep,
    settings: SettingsDep,
    top_k: TopK = None,
    include_preprocessed: IncludePreprocessed = False,
) -> PredictResponse:
    """As `predict`, with the given model version."""
    k = top_k or settings.default_top_k
    return await _predict(dataplane, name, version, files, k, include_preprocessed)


async def _probabilities(
    dataplane: DataPlane, name: str, version: int | None, files: Files
) -> ProbabilitiesResponse:
    uploads = await read_uploads(files)
    result = await dataplane.classify_uploads(name, version, uploads)
    return probabilities_response(result, [u.filename for u in uploads])


@router.post(
    "/models/{name}/probabilities",
    response_model=ProbabilitiesResponse,
    summary="Softmax probabilities of every class for uploaded images",
    responses=_ERRORS,
)
async def probabilities(
    name: ModelName, files: Files, dataplane: DataPlaneDep
) -> ProbabilitiesResponse:
    """Every class's probability for each uploaded image; each file's sum to 1."""
    return await _probabilities(dataplane, name, None, files)


@router.post(
    "/models/{name}/versions/{version}/probabilities",
    response_model=ProbabilitiesResponse,
    summary="Probabilities from a pinned model version",
    responses=_ERRORS,
)
async def probabilities_version(
    name: ModelName, version: Version, files: Files, dataplane: DataPlaneDep
) -> ProbabilitiesResponse:
    """As `probabilities`, with the given model version."""
    return await _probabilities(dataplane, name, version, files)


Archive = Annotated[
    UploadFile | None,
    File(description="Zip archive with one folder per class name (the Kaggle layout)"),
]
LabelledFiles = Annotated[
    list[UploadFile] | None, File(description="Images, labelled by the `labels` field")
]
Labels = Annotated[
    str | None,
    Form(description="Class names of `files`, comma-separated, in file order", examples=["7,2,1"]),
]
IncludePredictions = Annotated[
    bool, Query(description="Also return each file's predicted and true label")
]


async def _evaluate(
    dataplane: DataPlane,
    settings: SettingsDep,
    name: str,
    version: int | None,
    archive: Archive,
    files: LabelledFiles,
    labels: Labels,
    include_predictions: bool,
) -> EvaluateResponse:
    model = dataplane.repository.get(name, version)
    assert model.card is not None
    class_names = model.card.class_names
    if archive is not None and (files or labels):
        raise InvalidInput("send either 'archive' or 'files' with 'labels', not both")
    if archive is not None:
        limits = ArchiveLimits(
            max_entries=settings.max_archive_entries,
            max_uncompressed_bytes=settings.max_archive_uncompressed_bytes,
        )
        examples = read_labelled_archive(await archive.read(), class_names, limits)
    elif files and labels is not None:
        examples = parse_labels(labels, await read_uploads(files), class_names)
    else:
        raise InvalidInput(
            "send a zip in the field 'archive', or images in 'files' with their class names "
            "in 'labels'"
        )
    evaluation = await dataplane.evaluate(name, model.version, examples)
    filenames = [example.upload.filename for example in examples]
    return EvaluateResponse(
        **evaluation.report.model_dump(),
        model=model.name,
        version=model.version,
        predictions=to_file_predictions(evaluation, filenames) if include_predictions else None,
        errors=to_file_errors(evaluation.classification),
    )


@router.post(
    "/models/{name}/evaluate",
    response_model=EvaluateResponse,
    summary="Evaluate the model on labelled images you upload",
    responses=_ERRORS,
)
async def evaluate(
    name: ModelName,
    dataplane: DataPlaneDep,
    settings: SettingsDep,
    archive: Archive = None,
    files: LabelledFiles = None,
    labels: Labels = None,
    include_predictions: IncludePredictions = False,
) -> EvaluateResponse:
    """Accuracy, confusion matrix and per-class metrics (the training schema) on your data.

    Send either a zip in `archive` with one folder per class name (`0`..`9` for digits,
    `NORMAL`/`PNEUMONIA` for X-rays), or images in `files` with `labels`.
    """
    return await _evaluate(
        dataplane, settings, name, None, archive, files, labels, include_predictions
    )


@router.post(
    "/models/{name}/versions/{version}/evaluate",
    response_model=EvaluateResponse,
    summary="Evaluate a pinned model version",
    responses=_ERRORS,
)
async def evaluate_version(
    name: ModelName,
    version: Version,
    dataplane: DataPlaneDep,
    settings: SettingsDep,
    archive: Archive = None,
    files: LabelledFiles = None,
    labels: Labels = None,
    include_predictions: IncludePredictions = False,
) -> EvaluateResponse:
    """As `evaluate`, with the given model version."""
    return await _evaluate(
        dataplane, settings, name, version, archive, files, labels, include_predictions
    )
