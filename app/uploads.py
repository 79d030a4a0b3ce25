"""Read the images of a native upload: the multipart body of `predict` and `probabilities`.

These routes read their body themselves instead of declaring `files: list[UploadFile]`:
FastAPI's form parsing spools each file into an `UploadFile` (a temporary file written
on a worker thread) and answers a misnamed field in pydantic's words. Here the body is
parsed in memory by python-multipart, the parser Starlette uses, and names, filenames
and part headers are read the way Starlette reads them, so the answers stay what the
form parsing gave; every malformed upload is explained here, in the README's terms:

- a body that is not multipart form data (or that the parser refuses, or that ends
  before its closing boundary): 400 `bad_request`, raised as Starlette's HTTPException;
- no file in the field `files` (a misnamed field, text instead of a file, an empty
  form): 422 `invalid_request`, raised as FastAPI's RequestValidationError.

Both are rendered by `app/errors.py`, as the framework's own errors are.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import Request, UploadFile
from fastapi.exceptions import RequestValidationError
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from app.contract.images import Upload, upload_filename
from app.errors import text_instead_of_file

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

FIELD = "files"
HOWTO = "send images in the form field 'files', e.g. curl -F files=@digit.png"

OPENAPI_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "Images in the form field `files`, e.g. `curl -F files=@digit.png`",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        FIELD: {
                            "type": "array",
                            "items": {
                                "type": "string",
                                "contentMediaType": "application/octet-stream",
                            },
                            "description": "One or more images: PNG, JPEG, BMP, GIF, TIFF or WebP",
                        }
                    },
                    "required": [FIELD],
                }
            }
        },
    }
}
"""`openapi_extra` of a route that reads its upload with `read_uploads`."""


async def read_uploads(request: Request) -> list[Upload]:
    """The files sent in the form field `files`, in order, read into memory.

    Empty file inputs (a browser sends one when no file was chosen) are left out, and
    other form fields are ignored. Raises HTTPException(400) for a body that is not
    multipart form data and RequestValidationError (422) when `files` holds no file.
    """
    boundary, charset = _multipart_type(request.headers.get("content-type"))
    form = _Form(charset)
    try:
        parser = MultipartParser(boundary, form.callbacks())
        async for chunk in request.stream():
            if chunk:  # Starlette ends the stream with an empty chunk
                parser.write(chunk)
        parser.finalize()
    except FormParserError:  # a malformed body, or a boundary the parser refuses
        raise HTTPException(400, "Invalid multipart data.") from None
    except ClientDisconnect:  # nobody hears the answer, but the metrics count it
        raise HTTPException(400, "The client disconnected before sending the body.") from None
    if parser.state != MultipartState.END:  # python-multipart does not object itself
        raise HTTPException(
            400, "The multipart body is cut short: it ends before its closing boundary."
        )
    return form.uploads()


async def read_upload_files(files: list[UploadFile]) -> list[Upload]:
    """Files FastAPI parsed from a form (`evaluate`), read into memory."""
    return [
        Upload(
            filename=upload_filename(file.filename, index),
            data=await file.read(),
            content_type=file.content_type,
        )
        for index, file in enumerate(files)
    ]


def missing_field_error(found: Sequence[str], howto: str, *fields: str) -> RequestValidationError:
    """422 `invalid_request`: none of `fields` in a form whose fields are `found`."""
    wanted = " or ".join(repr(name) for name in fields)
    return form_error((fields[0],), f"no field {wanted} in the upload ({_found(found)}): {howto}")


def form_error(location: tuple[str | int, ...], message: str) -> RequestValidationError:
    """422 `invalid_request` about the form field at `location`, shaped as FastAPI's own."""
    error = {"type": "invalid_form", "loc": ("body", *location), "msg": message, "input": None}
    return RequestValidationError([error])


def _found(names: Sequence[str], most: int = 5) -> str:
    """What a form held, for a message: "found 'file', 'note'" (at most `most` names)."""
    distinct = list(dict.fromkeys(names))
    if not distinct:
        return "the form is empty"
    more = f" and {len(distinct) - most} more" if len(distinct) > most else ""
    return "found " + ", ".join(repr(name) for name in distinct[:most]) + more


def _multipart_type(content_type: str | None) -> tuple[bytes, str]:
    """The boundary and the charset of names and filenames, as Starlette reads them."""
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        if not content_type:
            raise HTTPException(400, "No Content-Type header: expected multipart form data.")
        raise HTTPException(400, f"Content-Type {content_type!r} is not multipart form data.")
    boundary = options.get(b"boundary")
    if boundary is None:
        raise HTTPException(400, "Missing boundary in multipart.")
    try:
        charset = codecs.lookup(options.get(b"charset", b"utf-8").decode("latin-1")).name
    except LookupError:
        charset = "latin-1"
    return boundary, charset


def _decode(value: bytes, charset: str) -> str:
    try:
        return value.decode(charset)
    except UnicodeDecodeError:
        return value.decode("latin-1")


@dataclass(slots=True)
class _Part:
    """One part of the body: its field name, filename (None: a text field) and data."""

    name: str
    filename: str | None
    content_type: bytes | None
    data: list[bytes] = field(default_factory=list)


class _Form:
    """Collects the parts of a multipart body from python-multipart's callbacks."""

    def __init__(self, charset: str) -> None:
        self.charset = charset
        self.parts: list[_Part] = []
        self._headers: list[tuple[bytes, bytes]] = []
        self._field = b""
        self._value = b""
        self._part: _Part | None = None

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_part_end": self._end,
        }

    def uploads(self) -> list[Upload]:
        """The files of the field `files`; raises 422 if it holds none, or holds text."""
        files = [part for part in self.parts if part.name == FIELD and not _empty_input(part)]
        if not files:
            raise self._no_files()
        uploads = []
        for index, part in enumerate(files):
            if part.filename is None:
                raise form_error((FIELD, index), text_instead_of_file(FIELD))
            content_type = part.content_type.decode("latin-1") if part.content_type else None
            uploads.append(
                Upload(
                    filename=upload_filename(part.filename, index),
                    data=b"".join(part.data),
                    content_type=content_type,
                )
            )
        return uploads

    def _no_files(self) -> RequestValidationError:
        if any(part.name == FIELD for part in self.parts):  # only empty file inputs
            return form_error(
                (FIELD,),
                "no file in the field 'files' (found an empty file input: no file was "
                f"chosen): {HOWTO}",
            )
        return missing_field_error([part.name for part in self.parts], HOWTO, FIELD)

    # python-multipart's callbacks ------------------------------------------------------

    def _begin(self) -> None:
        self._headers = []

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers.append((self._field.lower(), self._value))
        self._field = b""
        self._value = b""

    def _headers_finished(self) -> None:
        # As Starlette: the last Content-Disposition counts, and the first Content-Type.
        disposition = None
        content_type = None
        for name, value in self._headers:
            if name == b"content-disposition":
                disposition = value
            elif name == b"content-type" and content_type is None:
                content_type = value
        _, options = parse_options_header(disposition)
        if b"name" not in options:
            message = 'The Content-Disposition header field "name" must be provided.'
            raise HTTPException(400, message)
        filename = options.get(b"filename")
        self._part = _Part(
            _decode(options[b"name"], self.charset),
            _decode(filename, self.charset) if filename is not None else None,
            content_type,
        )

    def _data(self, data: bytes, start: int, end: int) -> None:
        assert self._part is not None
        self._part.data.append(data[start:end])

    def _end(self) -> None:
        assert self._part is not None
        self.parts.append(self._part)


def _empty_input(part: _Part) -> bool:
    """A browser's file input with no file chosen: no filename and no content."""
    return part.filename == "" and not any(part.data)
