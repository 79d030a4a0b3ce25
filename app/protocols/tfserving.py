"""TensorFlow Serving REST API (`/v1`): model status, metadata, predict and classify.

Requests in TF Serving's JSON become the data plane's one call: numeric tensors go to
`classify_pixels` as they are, `{"b64": "..."}` images go through the same decoding and
preprocessing as uploads (`classify_uploads`). The signature has one input, so each
instance may be the tensor itself or an object naming it (`{"pixels": ...}`).
Wire format: tensorflow/serving `g3doc/api/api_rest.md`.

`:classify` lists every class with its probability as the score, unchanged. The list is
best first, and "best" is the class the model card decides (`app.contract.decision`):
the most likely, or, for a two-class model with an operating point, the class its
threshold picks, even when the other has the higher score. A client that takes the
first class therefore gets the same label as the native `predict`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field

from app.contract.decision import rank_classes
from app.contract.images import Upload
from app.contract.model_card import ModelCard
from app.dataplane import DataPlane
from app.deps import DataPlaneDep, RepositoryDep
from app.errors import ErrorResponse, InvalidInput, ModelNotFound
from app.protocols.inputs import (
    ModelInput,
    classify,
    decode_base64,
    openapi_body,
    parse_body,
    to_model_pixels,
)
from app.repository import ModelRepository, ModelState, ServedModel
from app.schemas import RuntimeStatus

TAG = "TensorFlow Serving REST API (/v1)"
OPENAPI_TAG = {
    "name": TAG,
    "description": "Drop-in for clients of TensorFlow Serving's REST API: model status, "
    "signature metadata, `:predict` (row `instances` or columnar `inputs`; numeric tensors "
    'or `{"b64": ...}` images) and `:classify`. Errors are `{"error": "<message>"}`.',
}

router = APIRouter(prefix="/v1", tags=[TAG])

ModelName = Annotated[str, Path(description="Model name", examples=["mnist-mlp"])]
Version = Annotated[int, Path(ge=1, description="Model version", examples=[1])]

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Malformed body, wrong shape or signature"},
    404: {"model": ErrorResponse, "description": "Servable not found: unknown model or version"},
    503: {"model": ErrorResponse, "description": "Model not loaded yet, or overloaded"},
}

# TF Serving's ManagedVersionState, by our version states.
_STATES: dict[ModelState, Literal["LOADING", "AVAILABLE", "UNLOADING", "END"]] = {
    ModelState.LOADING: "LOADING",
    ModelState.READY: "AVAILABLE",
    ModelState.FAILED: "END",
    ModelState.UNLOADING: "UNLOADING",
}


# Schemas ---------------------------------------------------------------------------


class Status(BaseModel):
    error_code: str = Field(description="OK, or UNKNOWN when loading failed", examples=["OK"])
    error_message: str = Field(default="", description="Why the version failed to load")


_RUNTIME_DESCRIPTION = (
    "Not in TF Serving: what runs this version (LiteRT or the SavedModel) and why; "
    "null until it is loaded"
)


class ModelVersionStatus(BaseModel):
    version: str = Field(examples=["1"])
    state: Literal["START", "LOADING", "AVAILABLE", "UNLOADING", "END"]
    status: Status
    runtime: RuntimeStatus | None = Field(default=None, description=_RUNTIME_DESCRIPTION)


class StatusResponse(BaseModel):
    """GetModelStatus: the state of each version of a model."""

    model_version_status: list[ModelVersionStatus]


class ModelSpec(BaseModel):
    name: str = Field(examples=["mnist-mlp"])
    signature_name: str = Field(default="", description="Empty, as TF Serving echoes it")
    version: str = Field(examples=["1"])


class Dim(BaseModel):
    size: str = Field(description="int64 as a string; -1 for the batch", examples=["-1"])
    name: str = ""


class TensorShape(BaseModel):
    dim: list[Dim]
    unknown_rank: bool = False


class TensorInfo(BaseModel):
    dtype: str = Field(examples=["DT_FLOAT"])
    tensor_shape: TensorShape
    name: str = Field(examples=["serving_default_pixels:0"])


class SignatureDef(BaseModel):
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]
    method_name: str = "tensorflow/serving/predict"


class SignatureDefMap(BaseModel):
    signature_def: dict[str, SignatureDef]


class Metadata(BaseModel):
    signature_def: SignatureDefMap
    runtime: RuntimeStatus | None = Field(default=None, description=_RUNTIME_DESCRIPTION)


class MetadataResponse(BaseModel):
    """GetModelMetadata: the model's serving signature."""

    model_spec: ModelSpec
    metadata: Metadata


class PredictRequest(BaseModel):
    """`instances` (row format) or `inputs` (columnar), never both."""

    signature_name: str | None = Field(default=None, examples=["serving_default"])
    instances: list[Any] | None = Field(
        default=None,
        description='One item per image: [H, W, C] (or [H, W]) pixels, {"b64": "<image>"}, '
        'or either under the input name ({"pixels": ...})',
    )
    inputs: Any = Field(
        default=None,
        description='The batch as one tensor [N, H, W, C], a list of {"b64": ...} images, '
        'or either under the input name ({"pixels": ...})',
    )


class ClassifyRequest(PredictRequest):
    """As for predict; `examples` is also read, as named instances."""

    examples: list[Any] | None = Field(default=None, description="As `instances`")


# TF Serving has no word for "this picture holds no digit"; an extra top-level key leaves
# the shapes its clients read (predictions, outputs, results) exactly as they are.
_DIGIT_FOUND = (
    'Digit models, for {"b64": ...} images only: per instance, false when the picture '
    "holds no plausible digit (a blank page, only ruled lines or a paper edge); the "
    "probabilities are then a guess. Absent for numeric tensors, which are not normalised"
)


class PredictResponse(BaseModel):
    """`predictions` answers row requests, `outputs` columnar ones."""

    predictions: list[list[float]] | None = Field(
        default=None, description="Softmax probabilities, one row per instance"
    )
    outputs: list[list[float]] | None = Field(
        default=None, description="Softmax probabilities, [N, classes]"
    )
    digit_found: list[bool] | None = Field(default=None, description=_DIGIT_FOUND)


class ClassifyResponse(BaseModel):
    results: list[list[tuple[str, float]]] = Field(
        description="Per instance, every class as [label, score]: the label the model "
        "decides first (the highest score, or the class a two-class model's operating "
        "point picks), then the rest by score. Scores are the probabilities",
        examples=[[[["7", 0.98], ["1", 0.01]]]],
    )
    digit_found: list[bool] | None = Field(default=None, description=_DIGIT_FOUND)


# Status and metadata ---------------------------------------------------------------


@router.get(
    "/models/{name}",
    response_model=StatusResponse,
    summary="Status of every version of a model",
    responses={404: _ERRORS[404]},
)
async def model_status(name: ModelName, repository: RepositoryDep) -> StatusResponse:
    """AVAILABLE, LOADING, UNLOADING or END (failed to load, with the error) per version."""
    with _not_found_as(f"Could not find any versions of model {name}"):
        entries = repository.versions(name)
    if not entries:
        raise ModelNotFound(
            f"Could not find any versions of model {name}: {repository.problem(name)}", model=name
        )
    return StatusResponse(model_version_status=[_version_status(e) for e in entries])


@router.get(
    "/models/{name}/versions/{version}",
    response_model=StatusResponse,
    summary="Status of one model version",
    responses={404: _ERRORS[404]},
)
async def model_version_status(
    name: ModelName, version: Version, repository: RepositoryDep
) -> StatusResponse:
    """As the model status, for the given version only."""
    with _not_found_as(f"Could not find version {version} of model {name}"):
        entries = [e for e in repository.versions(name) if e.version == version]
    if not entries:
        raise ModelNotFound(
            f"Could not find version {version} of model {name}: "
            f"{repository.why_not_served(name, version)}",
            model=name,
            version=version,
        )
    return StatusResponse(model_version_status=[_version_status(e) for e in entries])


@router.get(
    "/models/{name}/metadata",
    response_model=MetadataResponse,
    summary="Signature of the served version",
    responses=_ERRORS,
)
async def model_metadata(name: ModelName, repository: RepositoryDep) -> MetadataResponse:
    """The `serving_default` signature: float32 pixels [-1, H, W, C] to probabilities."""
    return _metadata(_get(repository, name, None))


@router.get(
    "/models/{name}/versions/{version}/metadata",
    response_model=MetadataResponse,
    summary="Signature of a model version",
    responses=_ERRORS,
)
async def model_version_metadata(
    name: ModelName, version: Version, repository: RepositoryDep
) -> MetadataResponse:
    """As the metadata, for the given version."""
    return _metadata(_get(repository, name, version))


# Predict and classify --------------------------------------------------------------

_PREDICT_BODY = openapi_body(PredictRequest, "Row (`instances`) or columnar (`inputs`) request")
_CLASSIFY_BODY = openapi_body(ClassifyRequest, "As for predict")


@router.post(
    "/models/{name}:predict",
    response_model=PredictResponse,
    response_model_exclude_none=True,
    summary="Predict: softmax probabilities",
    responses=_ERRORS,
    openapi_extra=_PREDICT_BODY,
)
async def predict(name: ModelName, request: Request, dataplane: DataPlaneDep) -> PredictResponse:
    """`{"predictions": [...]}` for `instances`, `{"outputs": [...]}` for `inputs`."""
    return await _predict(dataplane, name, None, await request.body())


@router.post(
    "/models/{name}/versions/{version}:predict",
    response_model=PredictResponse,
    response_model_exclude_none=True,
    summary="Predict with a model version",
    responses=_ERRORS,
    openapi_extra=_PREDICT_BODY,
)
async def predict_version(
    name: ModelName, version: Version, request: Request, dataplane: DataPlaneDep
) -> PredictResponse:
    """As predict, with the given model version."""
    return await _predict(dataplane, name, version, await request.body())


@router.post(
    "/models/{name}:classify",
    response_model=ClassifyResponse,
    response_model_exclude_none=True,
    summary="Classify: every class with its score, best first",
    responses=_ERRORS,
    openapi_extra=_CLASSIFY_BODY,
)
async def classify_route(
    name: ModelName, request: Request, dataplane: DataPlaneDep
) -> ClassifyResponse:
    """`{"results": [[["label", score], ...], ...]}`, one list per instance."""
    return await _classify(dataplane, name, None, await request.body())


@router.post(
    "/models/{name}/versions/{version}:classify",
    response_model=ClassifyResponse,
    response_model_exclude_none=True,
    summary="Classify with a model version",
    responses=_ERRORS,
    openapi_extra=_CLASSIFY_BODY,
)
async def classify_version(
    name: ModelName, version: Version, request: Request, dataplane: DataPlaneDep
) -> ClassifyResponse:
    """As classify, with the given model version."""
    return await _classify(dataplane, name, version, await request.body())


async def _predict(
    dataplane: DataPlane, name: str, version: int | None, body: bytes
) -> PredictResponse:
    request = parse_body(PredictRequest, body)
    model = _get(dataplane.repository, name, version)
    images, row_format = _model_input(request, _card(model))
    with _not_found_as(_servable(name, version)):
        result = await classify(dataplane, name, model.version, images)
    probabilities = result.probabilities.tolist()
    if row_format:
        return PredictResponse(predictions=probabilities, digit_found=result.digit_found)
    return PredictResponse(outputs=probabilities, digit_found=result.digit_found)


async def _classify(
    dataplane: DataPlane, name: str, version: int | None, body: bytes
) -> ClassifyResponse:
    request = parse_body(ClassifyRequest, body)
    if request.examples is not None:
        if request.instances is not None or request.inputs is not None:
            raise InvalidInput('send one of "examples", "instances" or "inputs"')
        request.instances = request.examples
    model = _get(dataplane.repository, name, version)
    card = _card(model)
    images, _ = _model_input(request, card)
    with _not_found_as(_servable(name, version)):
        result = await classify(dataplane, name, model.version, images)
    rankings = rank_classes(result.probabilities, card.class_names, card.operating_point)
    results = [
        [(card.class_names[i], float(row[i])) for i in ranked]
        for row, ranked in zip(result.probabilities, rankings, strict=True)
    ]
    return ClassifyResponse(results=results, digit_found=result.digit_found)


def _model_input(request: PredictRequest, card: ModelCard) -> tuple[ModelInput, bool]:
    """The request's images, and whether it was in row format."""
    if request.signature_name not in (None, "", card.signature_name):
        raise InvalidInput(
            f'Serving signature name: "{request.signature_name}" not found in signature def; '
            f'the model has "{card.signature_name}"'
        )
    if request.instances is not None and request.inputs is not None:
        raise InvalidInput('send either "instances" (row format) or "inputs" (columnar), not both')
    name = card.input.tensor_name
    if request.instances is not None:
        items = [_unwrap(item, name, f"instances[{i}]") for i, item in enumerate(request.instances)]
        return _images(items, card, "instances"), True
    if request.inputs is None:
        raise InvalidInput('missing "instances" or "inputs" key in the request body')
    inputs = _unwrap(request.inputs, name, "inputs")
    if not isinstance(inputs, list):
        raise InvalidInput(
            f'"inputs" must be a list with one entry per image, as [N, ...] ({name})'
        )
    return _images(inputs, card, "inputs"), False


def _unwrap(item: Any, input_name: str, where: str) -> Any:
    """`{"pixels": x}` names the signature's one input: take `x`."""
    if not isinstance(item, dict) or _is_b64(item):
        return item
    if set(item) != {input_name}:
        raise InvalidInput(
            f"{where} names inputs {sorted(item)}; the signature has one input, {input_name!r}"
        )
    return item[input_name]


def _images(items: list[Any], card: ModelCard, what: str) -> ModelInput:
    if not items:
        raise InvalidInput(f'"{what}" is empty; send at least one image')
    encoded = [_is_b64(item) for item in items]
    if all(encoded):
        return [
            Upload(filename=f"{what}[{i}]", data=decode_base64(item["b64"], f"{what}[{i}].b64"))
            for i, item in enumerate(items)
        ]
    if any(encoded):
        raise InvalidInput(f'"{what}" mixes {{"b64": ...}} images with numeric tensors')
    try:
        values = np.asarray(items)
    except (ValueError, TypeError):
        raise InvalidInput(
            f'"{what}" is not a regular tensor: every image must have the same shape'
        ) from None
    return to_model_pixels(values, card, f'"{what}"')


def _is_b64(item: Any) -> bool:
    return isinstance(item, dict) and set(item) == {"b64"}


# Helpers ---------------------------------------------------------------------------


def _version_status(entry: ServedModel) -> ModelVersionStatus:
    failed = entry.state is ModelState.FAILED
    return ModelVersionStatus(
        version=str(entry.version),
        state=_STATES[entry.state],
        status=Status(
            error_code="UNKNOWN" if failed else "OK",
            error_message=(entry.error or "") if failed else "",
        ),
        runtime=RuntimeStatus.of(entry.runtime_info),
    )


def _metadata(model: ServedModel) -> MetadataResponse:
    card = _card(model)
    spec = card.input
    pixels = TensorInfo(
        dtype="DT_FLOAT",
        tensor_shape=_shape(-1, spec.height, spec.width, spec.channels),
        name=f"{card.signature_name}_{spec.tensor_name}:0",
    )
    probabilities = TensorInfo(
        dtype="DT_FLOAT",
        tensor_shape=_shape(-1, len(card.class_names)),
        name="StatefulPartitionedCall:0",
    )
    signature = SignatureDef(
        inputs={spec.tensor_name: pixels}, outputs={card.output_name: probabilities}
    )
    return MetadataResponse(
        model_spec=ModelSpec(name=model.name, version=str(model.version)),
        metadata=Metadata(
            signature_def=SignatureDefMap(signature_def={card.signature_name: signature}),
            runtime=RuntimeStatus.of(model.runtime_info),
        ),
    )


def _shape(*sizes: int) -> TensorShape:
    return TensorShape(dim=[Dim(size=str(size)) for size in sizes])


def _get(repository: ModelRepository, name: str, version: int | None) -> ServedModel:
    with _not_found_as(_servable(name, version)):
        return repository.get(name, version)


def _card(model: ServedModel) -> ModelCard:
    assert model.card is not None, "a ready model always has its card"
    return model.card


def _servable(name: str, version: int | None) -> str:
    request = f"Latest({name})" if version is None else f"Specific({name}, {version})"
    return f"Servable not found for request: {request}"


@contextlib.contextmanager
def _not_found_as(message: str) -> Iterator[None]:
    """Word a 404 as TF Serving does, keeping our explanation after it."""
    try:
        yield
    except ModelNotFound as error:
        raise ModelNotFound(f"{message}: {error.message}", **(error.details or {})) from error
