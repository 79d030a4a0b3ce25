"""What the protocol adapters share: reading bodies, shaping tensors, one call to the core.

Both protocols say bad input is a 400 with `{"error": "<message>"}`, so bodies are
parsed here rather than by FastAPI (whose validation errors are 422), and image
decoding errors, which the native API reports as 415/422, become 400s.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ValidationError

from app.contract.images import Upload
from app.contract.model_card import ModelCard
from app.dataplane import Classification, DataPlane
from app.errors import InvalidImage, InvalidInput, UnsupportedMediaType

Body = TypeVar("Body", bound=BaseModel)

# A request's images, as one of the two things the data plane classifies.
ModelInput = NDArray[np.float32] | list[Upload]


def parse_body(model: type[Body], body: bytes) -> Body:
    """Validate a JSON request body, or raise a 400 saying what is wrong with it."""
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        problems = error.errors(include_url=False)
        if problems and problems[0]["type"] == "json_invalid":
            raise InvalidInput(f"malformed JSON body: {problems[0]['msg']}") from None
        summary = "; ".join(
            f"{'.'.join(str(part) for part in p['loc']) or 'body'}: {p['msg']}"
            for p in problems[:5]
        )
        raise InvalidInput(f"invalid request body: {summary}") from None


def to_model_pixels(values: NDArray[Any], card: ModelCard, what: str) -> NDArray[np.float32]:
    """Numbers shaped `[N, H, W, C]` (or `[N, H, W]` for one channel) as float32 pixels."""
    spec = card.input
    accepted = f"[N, {spec.height}, {spec.width}, {spec.channels}]"
    if spec.channels == 1:
        accepted += f" or [N, {spec.height}, {spec.width}]"
    if values.dtype.kind not in "iuf":
        raise InvalidInput(f"{what} must hold numbers (float32 pixels {accepted})")
    if values.ndim == 3 and spec.channels == 1:
        values = values[..., np.newaxis]
    if values.ndim != 4 or values.shape[1:] != (spec.height, spec.width, spec.channels):
        raise InvalidInput(f"{what} has shape {list(values.shape)}; the model takes {accepted}")
    if values.shape[0] == 0:
        raise InvalidInput(f"{what} holds no images; send at least one")
    with np.errstate(over="ignore"):  # out-of-range values become inf: the core refuses them
        return values.astype(np.float32, copy=False)


def decode_base64(text: object, what: str) -> bytes:
    """Standard or URL-safe base64, with or without padding, as TF Serving accepts it."""
    if not isinstance(text, str):
        raise InvalidInput(f"{what} must be a base64 string, not {type(text).__name__}")
    text = text.strip()
    url_safe = "-" in text or "_" in text
    try:
        return base64.b64decode(
            text + "=" * (-len(text) % 4), altchars=b"-_" if url_safe else None, validate=True
        )
    except ValueError as error:  # binascii.Error, or characters outside ASCII
        raise InvalidInput(f"{what} is not valid base64 ({error})") from None


async def classify(
    dataplane: DataPlane, name: str, version: int | None, images: ModelInput
) -> Classification:
    """The one core call of every protocol: tensors or encoded images in, softmax out."""
    if isinstance(images, list):
        with _image_errors_as_bad_input():  # a tensor is answered whole or not at all
            return await dataplane.classify_uploads(name, version, images, all_or_nothing=True)
    return await dataplane.classify_pixels(name, version, images)


@contextlib.contextmanager
def _image_errors_as_bad_input() -> Iterator[None]:
    try:
        yield
    except (InvalidImage, UnsupportedMediaType) as error:
        raise InvalidInput(error.message, **(error.details or {})) from error


def openapi_body(model: type[BaseModel], description: str, *, binary: bool = False) -> Any:
    """`openapi_extra` documenting a body the route reads itself, as `model` JSON.

    With `binary`, also documents the JSON header followed by raw tensor bytes.
    """
    content: dict[str, Any] = {"application/json": {"schema": _inline_refs(model)}}
    if binary:
        content["application/octet-stream"] = {
            "schema": {"type": "string", "format": "binary"},
        }
    return {"requestBody": {"required": True, "description": description, "content": content}}


def _inline_refs(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with its `$defs` inlined, so it stands alone in OpenAPI."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(definitions[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved
