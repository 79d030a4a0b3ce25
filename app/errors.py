"""Typed serving errors and the one JSON shape every failure is rendered in.

Each error type carries its HTTP status, so code deep in the request path raises what
went wrong and `install_error_handlers` turns it into a response in one place. The
shape `{"error": "<message>", "code": "<machine-readable>", ...}` is also what
TensorFlow Serving and Open Inference Protocol clients read (`error` is a string).
Every body rendered during a request carries its `request_id` (`app.request_ids`).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.contract.images import ImageError, NotAnImage
from app.request_ids import current_request_id

logger = logging.getLogger(__name__)


class ErrorResponse(BaseModel):
    """Body of every error response."""

    error: str = Field(description="What went wrong and, where possible, how to fix it")
    code: str = Field(description="Stable machine-readable error code", examples=["invalid_image"])
    details: dict[str, Any] | None = Field(default=None, description="Extra context, if any")
    request_id: str | None = Field(
        default=None,
        description="The request's id, also answered as the X-Request-ID header: the "
        "client's own if it sent a usable one, else one the server made",
        examples=["4f6c1b0e9a2d4c3b8e7f6a5d4c3b2a1f"],
    )


class ServingError(Exception):
    """Base of the errors a request can end in; subclasses set status and code."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or None
        self.headers: dict[str, str] | None = None


class InvalidInput(ServingError):
    status_code = 400
    code = "invalid_input"


class ModelNotFound(ServingError):
    status_code = 404
    code = "model_not_found"


class ArtifactNotFound(ServingError):
    status_code = 404
    code = "artifact_not_found"


class PayloadTooLarge(ServingError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(ServingError):
    status_code = 415
    code = "unsupported_media_type"


class InvalidImage(ServingError):
    status_code = 422
    code = "invalid_image"


class InvalidLabels(ServingError):
    status_code = 422
    code = "invalid_labels"


class InvalidArchive(ServingError):
    status_code = 422
    code = "invalid_archive"


class Unauthorized(ServingError):
    status_code = 401
    code = "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.headers = {"WWW-Authenticate": "Bearer"}


class Forbidden(ServingError):
    status_code = 403
    code = "forbidden"


class Overloaded(ServingError):
    """The model's queue is full or the request ran out of time: retry later."""

    status_code = 503
    code = "overloaded"

    def __init__(self, message: str, retry_after_seconds: int = 1) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after_seconds)}


class ModelNotReady(ServingError):
    status_code = 503
    code = "model_not_ready"


class InferenceFailed(ServingError):
    status_code = 500
    code = "inference_failed"


def image_error(error: ImageError) -> ServingError:
    """The HTTP answer to a file the contract's decoder could not read: 415 or 422."""
    if isinstance(error, NotAnImage):
        return UnsupportedMediaType(error.message, filename=error.filename)
    return InvalidImage(error.message, filename=error.filename)


def error_response(status_code: int, code: str, message: str, **extra: Any) -> JSONResponse:
    body = ErrorResponse(
        error=message, code=code, details=extra or None, request_id=current_request_id()
    )
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status_code)


def serving_error_response(exc: ServingError) -> JSONResponse:
    """The JSON answer to `exc`; server-side failures (not overload) are logged first."""
    if exc.status_code >= 500 and not isinstance(exc, Overloaded):
        logger.error("%s: %s", exc.code, exc.message)
    response = error_response(exc.status_code, exc.code, exc.message, **(exc.details or {}))
    if exc.headers:
        response.headers.update(exc.headers)
    return response


_UPLOAD_HOWTO = (
    "send each image as a form field named 'files', e.g. "
    "curl -F files=@digit.png http://HOST/api/v1/models/NAME/predict"
)
# An example file for each form field that takes one, for `text_instead_of_file`.
_FILE_EXAMPLES = {"files": "digit.png", "archive": "labelled.zip"}


def text_instead_of_file(field: str) -> str:
    """How to fix a form field that holds text where a file belongs (`-F files=x.png`)."""
    example = _FILE_EXAMPLES.get(field, "file")
    return (
        f"the field {field!r} holds text, not a file: send the file itself, e.g. "
        f"curl -F {field}=@{example} (the @ sends the file's content)"
    )


def _explain(error: Any) -> str:
    """pydantic's message for one validation error, or how to fix a text-for-file field."""
    location = error["loc"]
    # FastAPI's words for a text value in an UploadFile field: "Expected UploadFile, ...".
    if location[:1] == ("body",) and len(location) > 1 and "UploadFile" in str(error["msg"]):
        return text_instead_of_file(str(location[1]))
    return str(error["msg"])


# Codes for the HTTP errors Starlette raises itself (unknown route, wrong method, ...).
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def install_error_handlers(app: FastAPI) -> None:
    """Render every failure, ours or the framework's, as an `ErrorResponse`."""

    @app.exception_handler(ServingError)
    async def _serving_error(_: Request, exc: ServingError) -> JSONResponse:
        return serving_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"location": [str(part) for part in error["loc"]], "message": _explain(error)}
            for error in exc.errors()
        ]
        summary = "; ".join(f"{'.'.join(p['location'])}: {p['message']}" for p in problems[:5])
        message = f"Invalid request: {summary}"
        return error_response(422, "invalid_request", message, problems=problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = str(exc.detail)
        if exc.status_code == 400 and "multipart" in message.lower():  # Starlette's parser
            message += f" The body must be multipart/form-data; {_UPLOAD_HOWTO}"
        response = error_response(exc.status_code, code, message)
        if exc.headers:
            response.headers.update(exc.headers)
        return response
