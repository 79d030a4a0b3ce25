"""A direct path for the commonest requests: plain image uploads to `predict` or `probabilities`.

Served through FastAPI, a one-digit `predict` spends ~2 ms of event-loop CPU before any
model work: dependency injection, Starlette's form parser spooling each file into an
`UploadFile`, response-model validation. That, not the model, was what kept one serving
process at a third of the HTTP stack's ceiling (docs/performance.md). This ASGI layer
serves the same request from the same data plane and answers the same bytes, for a
fraction of that cost.

It serves a request only when it can see the request is plain: a native `predict` or
`probabilities` POST (no root path) with a declared length of at most `MAX_BODY_BYTES`, a
multipart body (boundary only, no charset) whose parts are all non-empty file boxes in
the field `files` with no header given twice, only the query parameters the route knows
in their everyday spellings, and the API key (if one is set) given as exactly
`Bearer <key>`. Anything else, including every malformed request and a client that
disconnects mid-body, is handed on to the typed FastAPI route with the messages already
read: the route is the specification, owns the OpenAPI page and gives every validation
error. Errors of the data plane itself (unknown model, undecodable image, overload) are
rendered by the one function the route's handler uses too, so both paths answer them
alike.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

from pydantic import BaseModel
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.contract.images import Upload, upload_filename
from app.dataplane import DataPlane
from app.errors import ServingError, serving_error_response
from app.postprocess import predict_response, probabilities_response
from app.settings import Settings

MAX_BODY_BYTES = 4 * 1024 * 1024
"""Larger uploads go to the route: their decoding dwarfs what the lane saves."""

# Matched with fullmatch: `$` would also accept a trailing newline.
_PATH = re.compile(
    r"/api/v1/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?"
    r"/(?P<endpoint>predict|probabilities)"
)
_VERSION = re.compile(r"[1-9][0-9]{0,8}")
_TOP_K = re.compile(r"[1-9][0-9]{0,3}")
_TRUE = {"true", "1"}
_FALSE = {"false", "0"}


@dataclass
class LaneCounts:
    """How many requests the lane served and handed on (for tests and diagnostics)."""

    served: int = 0
    handed_on: int = 0


@dataclass(frozen=True)
class _Query:
    top_k: int | None = None
    include_preprocessed: bool = False


class FastLane:
    """ASGI middleware serving plain native image uploads without FastAPI's machinery."""

    def __init__(self, app: ASGIApp, settings: Settings, counts: LaneCounts) -> None:
        self.app = app
        self.settings = settings
        self.counts = counts
        key = settings.api_key.get_secret_value() if settings.api_key is not None else None
        # HTTPBearer strips the token and reads the header as latin-1; for a printable
        # ASCII key without surrounding spaces, the exact header bytes below are the one
        # spelling both accept. Any other key is left to the route.
        self._bearer: bytes | None = (
            b"Bearer " + key.encode("ascii")
            if key is not None and key.isascii() and key.isprintable() and key == key.strip()
            else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Behind a root path the routes see another path than scope["path"]: leave such
        # deployments to them rather than repeat Starlette's path arithmetic.
        plain_scope = scope["type"] == "http" and not scope.get("root_path")
        match = _PATH.fullmatch(scope["path"]) if plain_scope else None
        if match is None:
            await self.app(scope, receive, send)
            return
        dataplane: DataPlane | None = getattr(scope["app"].state, "dataplane", None)
        version = match["version"]
        boundary = self._plain_request(scope)
        query = _plain_query(scope["query_string"]) if boundary is not None else None
        plain_version = version is None or _VERSION.fullmatch(version) is not None
        if dataplane is None or boundary is None or query is None or not plain_version:
            self.counts.handed_on += 1
            await self.app(scope, receive, send)
            return

        messages = await _read_request(receive)
        body = b"".join(m.get("body", b"") for m in messages)
        disconnected = messages[-1]["type"] == "http.disconnect"
        uploads = None if disconnected else _file_parts(body, boundary, self.settings)
        if uploads is None:  # the route explains what is wrong, or sees the disconnect
            self.counts.handed_on += 1
            await self.app(scope, _replay(messages, receive), send)
            return

        self.counts.served += 1
        filenames = [upload.filename for upload in uploads]
        try:
            result = await dataplane.classify_uploads(
                match["name"], int(version) if version else None, uploads
            )
        except ServingError as error:
            await serving_error_response(error)(scope, receive, send)
            return
        answer: BaseModel
        if match["endpoint"] == "predict":
            answer = predict_response(
                result,
                filenames,
                query.top_k or self.settings.default_top_k,
                include_preprocessed=query.include_preprocessed,
            )
        else:
            answer = probabilities_response(result, filenames)
        response = Response(answer.model_dump_json(), media_type="application/json")
        await response(scope, receive, send)

    def _plain_request(self, scope: Scope) -> bytes | None:
        """The multipart boundary of a POST the lane may serve, else None."""
        if scope["method"] != "POST":
            return None
        content_type = length = authorization = None
        for key, value in scope["headers"]:  # the first of each, as Starlette reads them
            if key == b"content-type" and content_type is None:
                content_type = value
            elif key == b"content-length" and length is None:
                length = value
            elif key == b"authorization" and authorization is None:
                authorization = value
        if content_type is None or length is None or not length.isdigit():
            return None
        if int(length) > MAX_BODY_BYTES:
            return None
        if self.settings.api_key is not None:
            if self._bearer is None or authorization is None:
                return None  # the route explains what is wrong with the key
            if not hmac.compare_digest(authorization, self._bearer):
                return None
        kind, options = parse_options_header(content_type)
        # A charset parameter changes how Starlette decodes names and filenames.
        if kind != b"multipart/form-data" or set(options) != {b"boundary"}:
            return None
        return options[b"boundary"] or None


def _plain_query(query_string: bytes) -> _Query | None:
    """`top_k` and `include_preprocessed` in their everyday spellings, else None."""
    if not query_string:
        return _Query()
    top_k: int | None = None
    include_preprocessed: bool | None = None
    for key, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if key == "top_k" and top_k is None and _TOP_K.fullmatch(value) and int(value) <= 1000:
            top_k = int(value)
        elif key == "include_preprocessed" and include_preprocessed is None:
            if value.lower() not in _TRUE | _FALSE:
                return None
            include_preprocessed = value.lower() in _TRUE
        else:
            return None
    return _Query(top_k=top_k, include_preprocessed=bool(include_preprocessed))


async def _read_request(receive: Receive) -> list[Message]:
    """The request's messages up to its last body chunk or a disconnect."""
    messages = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] == "http.disconnect" or not message.get("more_body", False):
            return messages


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A `receive` that gives `messages` again, then whatever the connection says next."""
    pending = list(messages)

    async def receive_again() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return receive_again


class _Parts:
    """Collects the parts of a multipart body from python-multipart's callbacks."""

    def __init__(self) -> None:
        self.parts: list[tuple[dict[bytes, bytes], bytes]] = []
        self.repeated_header = False
        self._headers: dict[bytes, bytes] = {}
        self._field: list[bytes] = []
        self._value: list[bytes] = []
        self._data: list[bytes] = []

    def parser(self, boundary: bytes) -> MultipartParser:
        return MultipartParser(
            boundary,
            {
                "on_part_begin": self._begin,
                "on_header_field": lambda data, start, end: self._field.append(data[start:end]),
                "on_header_value": lambda data, start, end: self._value.append(data[start:end]),
                "on_header_end": self._header_end,
                "on_part_data": lambda data, start, end: self._data.append(data[start:end]),
                "on_part_end": self._end,
            },
        )

    def _begin(self) -> None:
        self._headers = {}
        self._data = []

    def _header_end(self) -> None:
        name = b"".join(self._field).lower()
        if name in self._headers:
            self.repeated_header = True  # Starlette would read the first; leave it to it
        self._headers[name] = b"".join(self._value)
        self._field = []
        self._value = []

    def _end(self) -> None:
        self.parts.append((self._headers, b"".join(self._data)))


def _file_parts(body: bytes, boundary: bytes, settings: Settings) -> list[Upload] | None:
    """The uploads of a body made only of files in the field `files`, else None.

    python-multipart is the parser Starlette uses; names and filenames are read the way
    Starlette reads them without a charset parameter (UTF-8), so both paths see the same
    uploads.
    """
    collected = _Parts()
    try:
        parser = collected.parser(boundary)
        parser.write(body)
        parser.finalize()
    except Exception:  # whatever the parser objects to (a 257-byte boundary, say)
        return None  # is the route's to explain
    if parser.state != MultipartState.END:  # truncated: python-multipart does not say so
        return None
    parts = collected.parts
    if collected.repeated_header or not parts or len(parts) > settings.max_files_per_request:
        return None
    uploads: list[Upload] = []
    for headers, data in parts:
        disposition, options = parse_options_header(headers.get(b"content-disposition"))
        filename = options.get(b"filename")
        if disposition != b"form-data" or options.get(b"name") != b"files" or filename is None:
            return None
        if not filename and not data:  # an empty file box: FastAPI drops it from the list
            return None
        content_type = headers.get(b"content-type")
        try:
            uploads.append(
                Upload(
                    filename=upload_filename(filename.decode("utf-8"), len(uploads)),
                    data=data,
                    content_type=content_type.decode("latin-1") if content_type else None,
                )
            )
        except UnicodeDecodeError:
            return None
    return uploads
