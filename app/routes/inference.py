"""Native image-upload API: predict, probabilities and evaluate, latest or pinned version.

`predict` and `probabilities` read their multipart body themselves (`app/uploads.py`),
as the TF Serving and V2 adapters read theirs, and answer with the serialised response
without validating it again: for a digit, FastAPI's form parsing (a temporary file per
upload) and response validation cost more than the model. Path and query parameters and
the router's API key stay FastAPI's, so they are validated, documented and applied in
one place; the data plane is taken from the app's state rather than solved as one more
dependency on this path. `evaluate` keeps FastAPI's form parsing. The versioned path
(`/versions/{version}/...`) is the same handler with a pinned version.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Path, Query, Request, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.datastructures import UploadFile as StarletteUpload

from app.dataplane import DataPlane
from app.deps import DataPlaneDep, SettingsDep, get_dataplane
from app.errors import ErrorResponse, InvalidInput
from app.labelled import ArchiveLimits, parse_labels, read_labelled_archive
from app.postprocess import (
    predict_response,
    probabilities_response,
    to_file_errors,
    to_file_predictions,
)
from app.schemas import EvaluateResponse, PredictResponse, ProbabilitiesResponse
from app.uploads import OPENAPI_BODY, missing_field_error, read_upload_files, read_uploads

router = APIRouter(prefix="/api/v1", tags=["inference"])

ModelName = Annotated[str, Path(description="Model name", examples=["mnist-mlp"])]
Version = Annotated[int, Path(ge=1, description="Model version", examples=[1])]
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
        "description": "No file could be decoded (see 415), no file in the field `files`, "
        "or bad labels or parameters",
    },
    503: {"model": ErrorResponse, "description": "Model not loaded yet or failed to load"},
}


def _json(answer: BaseModel) -> Response:
    # The answer was built from typed parts: validating it again as the response model
    # would cost more than the model call of a digit.
    return Response(answer.model_dump_json(), media_type="application/json")


async def _predict(
    request: Request,
    name: str,
    version: int | None,
    top_k: int | None,
    include_preprocessed: bool,
) -> Response:
    dataplane = await get_dataplane(request)
    uploads = await read_uploads(request)
    result = await dataplane.classify_uploads(name, version, uploads)
    answer = predict_response(
        result,
        [upload.filename for upload in uploads],
        top_k or dataplane.settings.default_top_k,
        include_preprocessed=include_preprocessed,
    )
    return _json(answer)


@router.post(
    "/models/{name}/predict",
    response_model=PredictResponse,
    summary="Predict the class of uploaded images",
    responses=_ERRORS,
    openapi_extra=OPENAPI_BODY,
)
async def predict(
    name: ModelName,
    request: Request,
    top_k: TopK = None,
    include_preprocessed: IncludePreprocessed = False,
) -> Response:
    """Label, confidence and top-k classes for each uploaded image, in upload order."""
    return await _predict(request, name, None, top_k, include_preprocessed)


@router.post(
    "/models/{name}/versions/{version}/predict",
    response_model=PredictResponse,
    summary="Predict with a pinned model version",
    responses=_ERRORS,
    openapi_extra=OPENAPI_BODY,
)
async def predict_version(
    name: ModelName,
    version: Version,
    request: Request,
    top_k: TopK = None,
    include_preprocessed: IncludePreprocessed = False,
) -> Response:
    """As `predict`, with the given model version."""
    return await _predict(request, name, version, top_k, include_preprocessed)


async def _probabilities(request: Request, name: str, version: int | None) -> Response:
    dataplane = await get_dataplane(request)
    uploads = await read_uploads(request)
    result = await dataplane.classify_uploads(name, version, uploads)
    answer = probabilities_response(result, [upload.filename for upload in uploads])
    return _json(answer)


@router.post(
    "/models/{name}/probabilities",
    response_model=ProbabilitiesResponse,
    summary="Softmax probabilities of every class for uploaded images",
    responses=_ERRORS,
    openapi_extra=OPENAPI_BODY,
)
async def probabilities(name: ModelName, request: Request) -> Response:
    """Every class's probability for each uploaded image; each file's sum to 1."""
    return await _probabilities(request, name, None)


@router.post(
    "/models/{name}/versions/{version}/probabilities",
    response_model=ProbabilitiesResponse,
    summary="Probabilities from a pinned model version",
    responses=_ERRORS,
    openapi_extra=OPENAPI_BODY,
)
async def probabilities_version(name: ModelName, version: Version, request: Request) -> Response:
    """As `probabilities`, with the given model version."""
    return await _probabilities(request, name, version)


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
    request: Request,
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
        examples = parse_labels(labels, await read_upload_files(files), class_names)
    elif files:
        raise missing_field_error(
            await _sent_fields(request),
            "send the class name of each file in 'labels', comma-separated in file order, "
            "e.g. curl -F files=@a.png -F files=@b.png -F labels=7,2",
            "labels",
        )
    else:
        raise missing_field_error(
            await _sent_fields(request),
            "send a zip in the field 'archive' (curl -F archive=@labelled.zip), or images in "
            "'files' with their class names in 'labels'",
            "archive",
            "files",
        )
    evaluation = await dataplane.evaluate(name, model.version, examples)
    filenames = [example.upload.filename for example in examples]
    return EvaluateResponse(
        **evaluation.report.model_dump(),
        model=model.name,
        version=model.version,
        predictions=to_file_predictions(evaluation, filenames) if include_predictions else None,
        errors=to_file_errors(evaluation.classification),
        evaluation_at_argmax=evaluation.report_at_argmax,
    )


async def _sent_fields(request: Request) -> list[str]:
    """The names of the form's fields (FastAPI parsed it; Starlette kept it on `request`),
    without the empty file inputs FastAPI left out."""
    form = await request.form()
    return [
        name
        for name, value in form.multi_items()
        # Starlette's UploadFile: FastAPI's is a subclass the form does not hold.
        if not (isinstance(value, StarletteUpload) and not value.filename and not value.size)
    ]


@router.post(
    "/models/{name}/evaluate",
    response_model=EvaluateResponse,
    summary="Evaluate the model on labelled images you upload",
    responses=_ERRORS,
)
async def evaluate(
    name: ModelName,
    request: Request,
    dataplane: DataPlaneDep,
    settings: SettingsDep,
    archive: Archive = None,
    files: LabelledFiles = None,
    labels: Labels = None,
    include_predictions: IncludePredictions = False,
) -> EvaluateResponse:
    """Accuracy, confusion matrix and per-class metrics (the training schema) on your data.

    Send either a zip in `archive` with one folder per class name (`0`..`9` for digits,
    `NORMAL`/`PNEUMONIA` for X-rays), or images in `files` with `labels`. Labels are
    decided as `predict` decides them (`decision` names the rule); a model with an
    operating point also gets `evaluation_at_argmax`.
    """
    return await _evaluate(
        request, dataplane, settings, name, None, archive, files, labels, include_predictions
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
    request: Request,
    dataplane: DataPlaneDep,
    settings: SettingsDep,
    archive: Archive = None,
    files: LabelledFiles = None,
    labels: Labels = None,
    include_predictions: IncludePredictions = False,
) -> EvaluateResponse:
    """As `evaluate`, with the given model version."""
    return await _evaluate(
        request, dataplane, settings, name, version, archive, files, labels, include_predictions
    )
