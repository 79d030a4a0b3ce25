"""Open Inference Protocol V2 REST (`/v2`): health, metadata and infer.

The protocol KServe, Triton and MLServer speak. `infer` reads one input, either FP32
pixels `[N, H, W, C]` (or `[N, H, W]` for a one-channel model), which go to
`classify_pixels` as they are, or BYTES encoded images `[N]` / `[N, 1]`, which go
through the same decoding and preprocessing as uploads (`classify_uploads`). BYTES
elements are raw image bytes in binary data, and base64 strings in JSON (JSON cannot
hold raw bytes; KServe's image examples send base64 the same way).

Extensions: binary tensor data (`v2_binary`) and classification (`"classification": k`
on a requested output returns `"score:index:label"` strings, top k, shape `[N, k]`).
The first string is the label the model card decides (`app.contract.decision`): the
most likely class, or the class a two-class model's operating point picks even when the
other scores higher; the scores are the probabilities, unchanged.

Digit models have a second output, `digit_found` (BOOL `[N]`), for BYTES images: false
where the picture holds no plausible digit (a blank page, only ruled lines or a paper
edge), whose probabilities are then a guess. FP32 pixels are taken as already
normalised, so no digit is looked for and the output is not given for them.
Wire format: kserve/open-inference-protocol `specification/protocol/inference_rest.md`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse
from numpy.typing import NDArray
from pydantic import BaseModel, Field

from app.contract.decision import rank_classes
from app.contract.images import Upload
from app.contract.model_card import ModelCard
from app.dataplane import Classification, DataPlane
from app.deps import DataPlaneDep, RepositoryDep, SettingsDep
from app.errors import ErrorResponse, InvalidInput, ModelNotReady
from app.protocols import v2_binary
from app.protocols.inputs import (
    ModelInput,
    classify,
    decode_base64,
    openapi_body,
    parse_body,
    to_model_pixels,
)
from app.repository import ModelRepository, ModelState, ServedModel
from app.runtime import RuntimeInfo

TAG = "Open Inference Protocol V2 (/v2)"
OPENAPI_TAG = {
    "name": TAG,
    "description": "Drop-in for KServe, Triton and MLServer clients (e.g. `tritonclient.http`): "
    "server and model health and metadata, and `infer` with FP32 pixels or BYTES images, "
    'the binary tensor data and classification extensions. Errors are `{"error": ...}`.',
}
EXTENSIONS = ["binary_tensor_data", "classification"]
DIGIT_FOUND = "digit_found"
PLATFORMS = {"savedmodel": "tensorflow_savedmodel", "litert": "litert_tflite"}
"""`platform` by what runs the version, named `<runtime>_<format>` as Triton's are."""

router = APIRouter(prefix="/v2", tags=[TAG])  # model endpoints
health_router = APIRouter(prefix="/v2", tags=[TAG])  # server metadata and probes: always open

ModelName = Annotated[str, Path(description="Model name", examples=["mnist-mlp"])]
Version = Annotated[int, Path(ge=1, description="Model version", examples=[1])]

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Malformed request, shape or datatype"},
    404: {"model": ErrorResponse, "description": "Unknown model or version"},
    503: {"model": ErrorResponse, "description": "Model not loaded yet, or overloaded"},
}


# Schemas ---------------------------------------------------------------------------


class ServerMetadata(BaseModel):
    name: str = Field(examples=["vision-serving"])
    version: str = Field(examples=["0.1.0"])
    extensions: list[str] = Field(examples=[EXTENSIONS])


class ServerLive(BaseModel):
    live: bool


class ServerReady(BaseModel):
    ready: bool
    error: str | None = Field(default=None, description="Why not ready, if so")


class ModelReady(BaseModel):
    name: str = Field(examples=["mnist-mlp"])
    ready: bool
    error: str | None = Field(default=None, description="Why not ready, if so")


class TensorMetadata(BaseModel):
    name: str = Field(examples=["pixels"])
    datatype: str = Field(examples=["FP32"])
    shape: list[int] = Field(description="-1 for variable dimensions", examples=[[-1, 28, 28, 1]])


class ModelMetadata(BaseModel):
    name: str = Field(examples=["mnist-mlp"])
    versions: list[str] = Field(description="Versions being served", examples=[["1"]])
    platform: str = Field(
        description="tensorflow_savedmodel, or litert_tflite when LiteRT runs the SavedModel's "
        "conversion (checked at load to agree with it)",
        examples=[PLATFORMS["litert"]],
    )
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, str] = Field(
        default_factory=dict,
        description="Not in the protocol, which clients ignore: `runtime` (litert or "
        "savedmodel), `runtime_source` (export or converted at load; LiteRT only) and "
        "`runtime_reason`, why that runtime serves",
        examples=[{"runtime": "litert", "runtime_source": "export", "runtime_reason": "..."}],
    )


class RequestInput(BaseModel):
    name: str = Field(examples=["pixels"])
    shape: list[int] = Field(examples=[[1, 28, 28]])
    datatype: str = Field(description="FP32 pixels, or BYTES encoded images", examples=["FP32"])
    parameters: dict[str, Any] | None = Field(
        default=None, description="`binary_data_size`: bytes of this input in the binary tail"
    )
    data: Any = Field(default=None, description="Row-major values, flat or nested")


class RequestOutput(BaseModel):
    name: str = Field(examples=["probabilities"])
    parameters: dict[str, Any] | None = Field(
        default=None,
        description="`binary_data`: return as binary; `classification`: top k as BYTES",
        examples=[{"classification": 3}],
    )


class InferenceRequest(BaseModel):
    """JSON header of an infer request; binary tensor data may follow it."""

    id: str | None = None
    parameters: dict[str, Any] | None = Field(
        default=None, description="`binary_data_output`: return every output as binary"
    )
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = Field(
        default=None, description="Outputs to return; all of them when left out"
    )


class ResponseOutput(BaseModel):
    name: str = Field(examples=["probabilities"])
    shape: list[int] = Field(examples=[[1, 10]])
    datatype: str = Field(examples=["FP32"])
    parameters: dict[str, Any] | None = Field(
        default=None, description="`binary_data_size` when the data is in the binary tail"
    )
    data: list[Any] | None = Field(default=None, description="Row-major, flat")


class InferenceResponse(BaseModel):
    model_name: str = Field(examples=["mnist-mlp"])
    model_version: str | None = Field(default=None, examples=["1"])
    id: str | None = Field(default=None, description="The request's id, when it had one")
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]


# Server ----------------------------------------------------------------------------


@health_router.get("", response_model=ServerMetadata, summary="Server metadata")
async def server_metadata(request: Request) -> ServerMetadata:
    """Server name, version and the protocol extensions it supports."""
    return ServerMetadata(name="vision-serving", version=request.app.version, extensions=EXTENSIONS)


@health_router.get("/health/live", response_model=ServerLive, summary="Server liveness")
async def server_live() -> ServerLive:
    """200 while the process serves HTTP."""
    return ServerLive(live=True)


@health_router.get(
    "/health/ready",
    response_model=ServerReady,
    summary="Server readiness",
    responses={503: {"model": ServerReady, "description": "Not every model is serving"}},
)
async def server_ready(repository: RepositoryDep) -> JSONResponse:
    """200 when every model has a version serving; 503 with the reasons otherwise."""
    reasons = repository.not_ready_reasons()
    body = ServerReady(ready=not reasons, error="; ".join(reasons) or None)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=503 if reasons else 200)


# Model metadata and readiness ------------------------------------------------------

_READY_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: _ERRORS[404],
    503: {"model": ModelReady, "description": "Known, but not serving (loading or failed)"},
}


@router.get(
    "/models/{name}", response_model=ModelMetadata, summary="Model metadata", responses=_ERRORS
)
async def model_metadata(name: ModelName, repository: RepositoryDep) -> ModelMetadata:
    """Input `pixels` FP32 [-1, H, W, C] (BYTES images also accepted), output FP32 [-1, classes]."""
    return _metadata(repository, repository.get(name))


@router.get(
    "/models/{name}/versions/{version}",
    response_model=ModelMetadata,
    summary="Model version metadata",
    responses=_ERRORS,
)
async def model_version_metadata(
    name: ModelName, version: Version, repository: RepositoryDep
) -> ModelMetadata:
    """As the model metadata, for the given version."""
    return _metadata(repository, repository.get(name, version))


@router.get(
    "/models/{name}/ready",
    response_model=ModelReady,
    summary="Model readiness",
    responses=_READY_RESPONSES,
)
async def model_ready(name: ModelName, repository: RepositoryDep) -> JSONResponse:
    """200 when a version serves; 503 while loading or after a failed load; 404 if unknown."""
    return _readiness(repository, name, None)


@router.get(
    "/models/{name}/versions/{version}/ready",
    response_model=ModelReady,
    summary="Model version readiness",
    responses=_READY_RESPONSES,
)
async def model_version_ready(
    name: ModelName, version: Version, repository: RepositoryDep
) -> JSONResponse:
    """As the model readiness, for the given version."""
    return _readiness(repository, name, version)


def _metadata(repository: ModelRepository, model: ServedModel) -> ModelMetadata:
    card = _card(model)
    info = model.runtime_info
    spec = card.input
    return ModelMetadata(
        name=model.name,
        versions=[
            str(e.version) for e in repository.versions(model.name) if e.state is ModelState.READY
        ],
        platform=PLATFORMS[info.name if info else "savedmodel"],
        parameters=_runtime_parameters(info),
        inputs=[
            TensorMetadata(
                name=spec.tensor_name,
                datatype="FP32",
                shape=[-1, spec.height, spec.width, spec.channels],
            )
        ],
        outputs=[
            TensorMetadata(
                name=card.output_name, datatype="FP32", shape=[-1, len(card.class_names)]
            ),
            *(
                [TensorMetadata(name=DIGIT_FOUND, datatype="BOOL", shape=[-1])]
                * _reads_digits(card)
            ),
        ],
    )


def _runtime_parameters(info: RuntimeInfo | None) -> dict[str, str]:
    if info is None:
        return {}
    source = {"runtime_source": info.litert_source} if info.litert_source else {}
    return {"runtime": info.name, **source, "runtime_reason": info.reason}


def _readiness(repository: ModelRepository, name: str, version: int | None) -> JSONResponse:
    try:
        repository.get(name, version)
    except ModelNotReady as error:
        body = ModelReady(name=name, ready=False, error=error.message)
        return JSONResponse(body.model_dump(exclude_none=True), status_code=503)
    return JSONResponse(ModelReady(name=name, ready=True).model_dump(exclude_none=True))


# Infer -----------------------------------------------------------------------------

_INFER_EXTRA = {
    **openapi_body(
        InferenceRequest,
        "JSON, or (binary tensor data extension) a JSON header of "
        "`Inference-Header-Content-Length` bytes followed by the inputs' raw bytes",
        binary=True,
    ),
    "parameters": [
        {
            "name": v2_binary.HEADER_LENGTH,
            "in": "header",
            "required": False,
            "description": "Length of the JSON header when binary tensor data follows it",
            "schema": {"type": "integer", "minimum": 0},
        }
    ],
}
_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON; or, when an output asks for binary data, a JSON header of "
        "`Inference-Header-Content-Length` bytes followed by the outputs' raw bytes",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
    **_ERRORS,
}


@router.post(
    "/models/{name}/infer",
    response_model=InferenceResponse,
    summary="Inference",
    responses=_INFER_RESPONSES,
    openapi_extra=_INFER_EXTRA,
)
async def infer(
    name: ModelName, request: Request, dataplane: DataPlaneDep, settings: SettingsDep
) -> Response:
    """Softmax probabilities FP32 [N, classes], or the top k classes as BYTES."""
    return await _infer(dataplane, name, None, request, settings.max_body_bytes)


@router.post(
    "/models/{name}/versions/{version}/infer",
    response_model=InferenceResponse,
    summary="Inference with a model version",
    responses=_INFER_RESPONSES,
    openapi_extra=_INFER_EXTRA,
)
async def infer_version(
    name: ModelName,
    version: Version,
    request: Request,
    dataplane: DataPlaneDep,
    settings: SettingsDep,
) -> Response:
    """As inference, with the given model version."""
    return await _infer(dataplane, name, version, request, settings.max_body_bytes)


@dataclass(frozen=True)
class _Output:
    """One requested output: the probabilities, or their top `classification` classes."""

    name: str
    binary: bool
    classification: int | None


async def _infer(
    dataplane: DataPlane, name: str, version: int | None, request: Request, max_bytes: int
) -> Response:
    body = v2_binary.decompress(
        await request.body(), request.headers.get("content-encoding"), max_bytes
    )
    header, tail = v2_binary.split_body(body, request.headers.get(v2_binary.HEADER_LENGTH))
    infer_request = parse_body(InferenceRequest, header)
    model = dataplane.repository.get(name, version)
    card = _card(model)
    images = _read_input(infer_request.inputs, tail, card)
    outputs = _requested_outputs(infer_request, card, encoded_images=isinstance(images, list))
    result = await classify(dataplane, name, model.version, images)
    return _respond(infer_request, result, outputs)


def _read_input(inputs: list[RequestInput], tail: bytes, card: ModelCard) -> ModelInput:
    expected = card.input.tensor_name
    names = [tensor.name for tensor in inputs]
    if names != [expected]:
        raise InvalidInput(f"the model takes one input, {expected!r}; got {names}")
    [raw] = v2_binary.take_buffers([_binary_size(t) for t in inputs], tail, names)
    tensor = inputs[0]
    what = f"input {tensor.name!r}"
    if any(size < 0 for size in tensor.shape):
        raise InvalidInput(f"{what} has shape {tensor.shape}; dimensions cannot be negative")
    if raw is not None and tensor.data is not None:
        raise InvalidInput(f"{what} has both 'data' and binary_data_size; send one")
    if raw is None and tensor.data is None:
        raise InvalidInput(f"{what} has no 'data' and no binary_data_size parameter")
    if tensor.datatype == "FP32":
        return _pixels(tensor, raw, card, what)
    if tensor.datatype == "BYTES":
        return _encoded_images(tensor, raw, what)
    raise InvalidInput(
        f"{what} has datatype {tensor.datatype}; the model takes FP32 pixels "
        f"or BYTES encoded images"
    )


def _pixels(
    tensor: RequestInput, raw: bytes | None, card: ModelCard, what: str
) -> NDArray[np.float32]:
    count = math.prod(tensor.shape)
    if raw is not None:
        if len(raw) != count * 4:
            raise InvalidInput(
                f"{what} has {len(raw)} bytes of binary data, but FP32 shape {tensor.shape} "
                f"needs {count * 4}"
            )
        values = np.frombuffer(raw, dtype="<f4")
    else:
        try:
            values = np.asarray(tensor.data)
        except (ValueError, TypeError):
            raise InvalidInput(f"{what}: 'data' is not a regular (rectangular) array") from None
        if values.dtype.kind not in "iuf":
            raise InvalidInput(f"{what} is FP32, but its 'data' holds {_kind(values)}")
        if values.size != count:
            raise InvalidInput(
                f"{what} has {values.size} values, but shape {tensor.shape} needs {count}"
            )
    return to_model_pixels(values.reshape(tensor.shape), card, what)


def _encoded_images(tensor: RequestInput, raw: bytes | None, what: str) -> list[Upload]:
    shape = tensor.shape
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
        raise InvalidInput(
            f"{what} is BYTES with shape {shape}; send [N] or [N, 1], one encoded image each"
        )
    if raw is not None:
        images = v2_binary.decode_bytes_elements(raw, what)
    else:
        images = [
            decode_base64(item, f"{what} element {i} (BYTES in JSON are base64 images)")
            for i, item in enumerate(_flatten(tensor.data))
        ]
    if len(images) != shape[0]:
        raise InvalidInput(f"{what} has {len(images)} elements, but shape {shape} needs {shape[0]}")
    if not images:
        raise InvalidInput(f"{what} holds no images; send at least one")
    return [Upload(filename=f"{tensor.name}[{i}]", data=data) for i, data in enumerate(images)]


def _requested_outputs(
    infer_request: InferenceRequest, card: ModelCard, *, encoded_images: bool
) -> list[_Output]:
    binary_default = _flag(infer_request.parameters, "binary_data_output", "request parameters")
    reports_digits = _reads_digits(card) and encoded_images
    default = [RequestOutput(name=card.output_name)]
    if reports_digits:
        default.append(RequestOutput(name=DIGIT_FOUND))
    known = [card.output_name, *([DIGIT_FOUND] * _reads_digits(card))]
    outputs = []
    for output in infer_request.outputs or default:
        if output.name not in known:
            raise InvalidInput(f"unknown output {output.name!r}; the model's outputs are {known}")
        if output.name == DIGIT_FOUND and not reports_digits:
            raise InvalidInput(
                f"output {DIGIT_FOUND!r} is given for BYTES images only: FP32 pixels are "
                "taken as already normalised, so no digit is looked for in them"
            )
        where = f"output {output.name!r} parameters"
        binary = _flag(output.parameters, "binary_data", where, default=binary_default)
        count = (output.parameters or {}).get("classification")
        if count is not None and (type(count) is not int or count < 1):
            raise InvalidInput(f"{where}: classification must be a positive integer (top k)")
        if count is not None and output.name == DIGIT_FOUND:
            raise InvalidInput(f"{where}: classification applies to {card.output_name!r} only")
        outputs.append(_Output(output.name, binary, count))
    return outputs


def _respond(
    infer_request: InferenceRequest, result: Classification, outputs: list[_Output]
) -> Response:
    tensors: list[ResponseOutput] = []
    buffers: list[bytes] = []
    for output in outputs:
        values: list[Any]
        if output.name == DIGIT_FOUND:
            found = np.asarray(result.digit_found, dtype=bool)
            tensor = ResponseOutput(name=output.name, shape=[len(found)], datatype="BOOL")
            raw = found.tobytes()  # one byte per element, as the binary extension says
            values = found.tolist()
        elif output.classification is None:
            probabilities = result.probabilities
            tensor = ResponseOutput(
                name=output.name, shape=list(probabilities.shape), datatype="FP32"
            )
            raw = probabilities.astype("<f4").tobytes()
            values = probabilities.ravel().tolist()
        else:
            labels = _top_classes(result, output.classification)
            tensor = ResponseOutput(
                name=output.name, shape=[len(labels), len(labels[0])], datatype="BYTES"
            )
            values = [label for row in labels for label in row]
            raw = v2_binary.encode_bytes_elements([label.encode() for label in values])
        if output.binary:
            tensor.parameters = {"binary_data_size": len(raw)}
            buffers.append(raw)
        else:
            tensor.data = values
        tensors.append(tensor)
    response = InferenceResponse(
        model_name=result.model.name,
        model_version=str(result.model.version),
        id=infer_request.id,
        outputs=tensors,
    )
    header = response.model_dump(exclude_none=True)
    if buffers:
        return v2_binary.binary_response(json.dumps(header).encode(), buffers)
    return JSONResponse(header)


def _top_classes(result: Classification, k: int) -> list[list[str]]:
    """Triton's `"score:index:label"` strings, the decided label first (fixed-point
    scores, as it writes)."""
    card = result.card
    names = card.class_names
    k = min(k, len(names))
    rankings = rank_classes(result.probabilities, names, card.operating_point)
    return [
        [f"{float(row[i]):.6f}:{i}:{names[i]}" for i in ranked[:k]]
        for row, ranked in zip(result.probabilities, rankings, strict=True)
    ]


# Helpers ---------------------------------------------------------------------------


def _binary_size(tensor: RequestInput) -> int | None:
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is not None and (type(size) is not int or size < 0):
        raise InvalidInput(f"input {tensor.name!r}: binary_data_size must be a byte count")
    return size


def _flag(
    parameters: dict[str, Any] | None, key: str, where: str, *, default: bool = False
) -> bool:
    value = (parameters or {}).get(key, default)
    if not isinstance(value, bool):
        raise InvalidInput(f"{where}: {key} must be true or false")
    return value


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    return [item for element in data for item in _flatten(element)]


def _kind(values: NDArray[Any]) -> str:
    return {"b": "booleans", "U": "strings", "O": "mixed values"}.get(
        values.dtype.kind, "non-numbers"
    )


def _reads_digits(card: ModelCard) -> bool:
    """Whether the model's preprocessing looks for a digit (and so can find none)."""
    return card.preprocessing.kind == "mnist-digit"


def _card(model: ServedModel) -> ModelCard:
    assert model.card is not None, "a ready model always has its card"
    return model.card
