"""The native upload routes answer as before: the fast lane's equivalence corpus, kept.

`predict` and `probabilities` once had two implementations, a fast lane for plain
uploads and the typed FastAPI route for the rest, and a corpus of requests showed both
gave the same bytes. The two are now one route that reads its own body. Its answers to
that corpus (and to a few more odd bodies) were recorded from the code before the merge,
where lane and route agreed, in `inference_contract.json`: status, headers and body.
The route must still give them, floats aside: probabilities and confidences may move in
their last bits with the model runtime, so they are compared to 1e-5 and the rest of the
body byte for byte.

Answers carry a request id made afresh for each request (`X-Request-ID`, and the
`request_id` of error bodies), added after the recording: that one generated field is
left out of the comparison (`without_request_id`).

The answers the merge changed on purpose are in `CHANGED`, each with its new body: a
missing or misnamed form field now says what was found and how to fix it, and a body
that is not multipart form data (or is cut short) is a 400 `bad_request`, as the
README's error table says.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.main import create_app
from app.settings import Settings
from tests.app.conftest import ServeFn
from tests.app.images import gray_jpeg, png

pytestmark = pytest.mark.anyio

PREDICT = "/api/v1/models/tiny-digits/predict"
BOUNDARY = "lanetestboundary"
RECORDED: dict[str, dict[str, Any]] = json.loads(
    Path(__file__).with_name("inference_contract.json").read_text(encoding="utf-8")
)
# Every request of the corpus is sent with this limit, as when the answers were recorded.
MAX_FILES = 2


@dataclass(frozen=True)
class Case:
    name: str
    path: str = PREDICT
    params: dict[str, str] = field(default_factory=dict)
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    data: dict[str, str] | None = None
    body: bytes | None = None  # sent as is, as multipart/form-data with BOUNDARY
    headers: dict[str, str] = field(default_factory=dict)

    def request(self) -> dict[str, Any]:
        headers = dict(self.headers)
        request: dict[str, Any] = {"params": self.params, "headers": headers}
        if self.body is not None:
            headers.setdefault("content-type", f"multipart/form-data; boundary={BOUNDARY}")
            request["content"] = self.body
        else:
            request["files"] = self.files
            request["data"] = self.data
        return request


def digit(name: str = "d.png", seed: int = 0) -> tuple[str, tuple[str, bytes, str]]:
    return ("files", (name, png(seed), "image/png"))


def raw_part(
    name: str | None,
    filename: str | None,
    data: bytes,
    extra_headers: str = "",
    boundary: str = BOUNDARY,
) -> bytes:
    disposition = "form-data" + (f'; name="{name}"' if name is not None else "")
    disposition += f'; filename="{filename}"' if filename is not None else ""
    head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n{extra_headers}\r\n"
    return head.encode() + data + b"\r\n"


LONG_BOUNDARY = "b" * 257  # longer than python-multipart takes
CLOSING = f"--{BOUNDARY}--\r\n".encode()

CASES = [
    Case("one digit", files=[digit()]),
    Case(
        "two digits, top_k", params={"top_k": "4"}, files=[digit(f"{i}.png", i) for i in range(2)]
    ),
    Case("include_preprocessed", params={"include_preprocessed": "true"}, files=[digit()]),
    Case(
        "probabilities",
        path="/api/v1/models/tiny-digits/probabilities",
        files=[digit(), digit("e.png", 1)],
    ),
    Case("pinned version", path="/api/v1/models/tiny-digits/versions/1/predict", files=[digit()]),
    Case(
        "x-ray",
        path="/api/v1/models/tiny-xray/predict",
        files=[("files", ("x.jpg", gray_jpeg(), "image/jpeg"))],
    ),
    Case("no part headers but the disposition", body=raw_part("files", "d.png", png()) + CLOSING),
    Case("empty filename", body=raw_part("files", "", png()) + CLOSING),
    Case("unknown model", path="/api/v1/models/nope/predict", files=[digit()]),
    Case("unknown version", path="/api/v1/models/tiny-digits/versions/7/predict", files=[digit()]),
    Case("not an image", files=[("files", ("notes.txt", b"hello there", "text/plain"))]),
    Case("empty file", files=[("files", ("empty.png", b"", "image/png"))]),
    Case("truncated PNG", files=[("files", ("cut.png", png()[:60], "image/png"))]),
    Case("more files than allowed", files=[digit(f"{i}.png", i) for i in range(3)]),
    Case("another form field", files=[digit()], data={"note": "hi"}),
    Case("field named file", files=[("file", ("d.png", png(), "image/png"))]),
    Case("a files part without filename", body=raw_part("files", None, png()) + CLOSING),
    Case("no closing boundary", body=raw_part("files", "d.png", png())),
    Case("garbage body", body=b"this is not multipart at all"),
    Case("top_k=0", params={"top_k": "0"}, files=[digit()]),
    Case("top_k=abc", params={"top_k": "abc"}, files=[digit()]),
    Case("top_k with a leading zero", params={"top_k": "02"}, files=[digit()]),
    Case("include_preprocessed=yes", params={"include_preprocessed": "yes"}, files=[digit()]),
    Case("an unknown query parameter", params={"verbose": "1"}, files=[digit()]),
    Case(
        "version with a leading zero",
        path="/api/v1/models/tiny-digits/versions/01/predict",
        files=[digit()],
    ),
    Case("not multipart", headers={"content-type": "application/json"}, body=b"{}"),
    Case(
        "an empty file box (browsers send one for an unselected file input)",
        body=raw_part("files", "", b"") + CLOSING,
    ),
    Case(
        "an empty file box before a real file",
        body=raw_part("files", "", b"") + raw_part("files", "d.png", png()) + CLOSING,
    ),
    Case(
        "a charset parameter",
        headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}; charset=latin-1"},
        body=raw_part("files", "\u00e9.png", png()) + CLOSING,
    ),
    Case(
        "a part header given twice",
        body=raw_part(
            "files", "n.txt", b"hello", "Content-Type: text/plain\r\nContent-Type: image/png\r\n"
        )
        + CLOSING,
    ),
    Case(
        "a boundary too long for the parser",
        headers={"content-type": f"multipart/form-data; boundary={LONG_BOUNDARY}"},
        body=raw_part("files", "d.png", png(), boundary=LONG_BOUNDARY)
        + f"--{LONG_BOUNDARY}--\r\n".encode(),
    ),
    # Recorded with the corpus, beyond the lane's own cases.
    Case(
        "a file and a text value in files",
        body=raw_part("files", "d.png", png()) + raw_part("files", None, b"foo") + CLOSING,
    ),
    Case("only another field", files=[("x", ("a", b"", "text/plain"))], data={"other": "x"}),
    Case("no body at all"),
    Case(
        "url-encoded files=foo",
        headers={"content-type": "application/x-www-form-urlencoded"},
        body=b"files=foo",
    ),
    Case(
        "multipart without a boundary",
        headers={"content-type": "multipart/form-data"},
        body=b"garbage",
    ),
    Case(
        "an unknown charset",
        headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}; charset=nope"},
        body=raw_part("files", "d.png", png()) + CLOSING,
    ),
    Case("an empty multipart body", body=b""),
    Case("a form without parts", body=CLOSING),
    Case("a part without a name", body=raw_part(None, "d.png", png()) + CLOSING),
    Case("two empty file boxes", body=raw_part("files", "", b"") * 2 + CLOSING),
    Case("a named empty file", body=raw_part("files", "e.png", b"") + CLOSING),
    Case("a preamble", body=b"preamble\r\n" + raw_part("files", "d.png", png()) + CLOSING),
    Case(
        "the disposition given twice",
        body=raw_part(
            "other",
            "d.png",
            png(),
            'Content-Disposition: form-data; name="files"; filename="x.png"\r\n',
        )
        + CLOSING,
    ),
]

_HOWTO = "send images in the form field 'files', e.g. curl -F files=@digit.png"
_NOT_MULTIPART = (
    " The body must be multipart/form-data; send each image as a form field named 'files', "
    "e.g. curl -F files=@digit.png http://HOST/api/v1/models/NAME/predict"
)
_TEXT_IN_FILES = (
    "the field 'files' holds text, not a file: send the file itself, e.g. "
    "curl -F files=@digit.png (the @ sends the file's content)"
)


def invalid_request(message: str, *location: str) -> dict[str, Any]:
    """A 422 `invalid_request` body about one form field."""
    return {
        "error": f"Invalid request: {'.'.join(location)}: {message}",
        "code": "invalid_request",
        "details": {"problems": [{"location": list(location), "message": message}]},
    }


def bad_request(message: str) -> dict[str, Any]:
    return {"error": message, "code": "bad_request"}


_EMPTY_FILE_BOX = (
    422,
    invalid_request(
        f"no file in the field 'files' (found an empty file input: no file was chosen): {_HOWTO}",
        "body",
        "files",
    ),
)


# Answers the merge changed on purpose, each group with the answer it replaced.
CHANGED: dict[str, tuple[int, dict[str, Any]]] = {
    # was: 422 "no form field 'files': send each image as a form field named 'files', ..."
    "field named file": (
        422,
        invalid_request(
            f"no field 'files' in the upload (found 'file'): {_HOWTO}", "body", "files"
        ),
    ),
    "only another field": (
        422,
        invalid_request(
            f"no field 'files' in the upload (found 'other', 'x'): {_HOWTO}", "body", "files"
        ),
    ),
    "a form without parts": (
        422,
        invalid_request(
            f"no field 'files' in the upload (the form is empty): {_HOWTO}", "body", "files"
        ),
    ),
    "an empty file box (browsers send one for an unselected file input)": _EMPTY_FILE_BOX,
    "two empty file boxes": _EMPTY_FILE_BOX,
    # was: 422 "Value error, Expected UploadFile, received: <class 'str'>"
    "a files part without filename": (422, invalid_request(_TEXT_IN_FILES, "body", "files", "0")),
    "a file and a text value in files": (
        422,
        invalid_request(_TEXT_IN_FILES, "body", "files", "1"),
    ),
    # was: 422 "no form field 'files'" (the body was not multipart, or was cut short)
    "not multipart": (
        400,
        bad_request("Content-Type 'application/json' is not multipart form data." + _NOT_MULTIPART),
    ),
    "no body at all": (
        400,
        bad_request("No Content-Type header: expected multipart form data." + _NOT_MULTIPART),
    ),
    "no closing boundary": (
        400,
        bad_request(
            "The multipart body is cut short: it ends before its closing boundary." + _NOT_MULTIPART
        ),
    ),
    "an empty multipart body": (
        400,
        bad_request(
            "The multipart body is cut short: it ends before its closing boundary." + _NOT_MULTIPART
        ),
    ),
    # was: 422 "Expected UploadFile, received: <class 'str'>" (parsed as a url-encoded form)
    "url-encoded files=foo": (
        400,
        bad_request(
            "Content-Type 'application/x-www-form-urlencoded' is not multipart form data."
            + _NOT_MULTIPART
        ),
    ),
}

# A JSON number with a fraction or an exponent: the floats of an answer.
_FLOAT = re.compile(rb"-?\d+(?:\.\d+(?:[eE][-+]?\d+)?|[eE][-+]?\d+)")


def without_request_id(response: httpx.Response) -> tuple[bytes, dict[str, str]]:
    """Body and headers without the request id, which came after the recording and is
    made afresh for every request: its `X-Request-ID` header and an error body's
    `request_id` field (its last), with the content length the body then has. Only
    that generated field is left out; everything else is compared as recorded."""
    headers = dict(response.headers)
    request_id = headers.pop("x-request-id")
    field = f',"request_id":"{request_id}"}}'.encode()
    content = response.content
    if response.status_code >= 400:
        assert content.endswith(field), content
        assert headers["content-length"] == str(len(content))
        content = content[: -len(field)] + b"}"
        headers["content-length"] = str(len(content))
    return content, headers


def assert_same_answer(response: httpx.Response, recorded: dict[str, Any]) -> None:
    """Same status, headers and body as `recorded`, floats to 1e-5."""
    expected = recorded["body"].encode()
    assert response.status_code == recorded["status"], response.text
    content, headers = without_request_id(response)
    assert _FLOAT.sub(b"<float>", content) == _FLOAT.sub(b"<float>", expected)
    floats = [float(number) for number in _FLOAT.findall(content)]
    assert floats == pytest.approx([float(n) for n in _FLOAT.findall(expected)], abs=1e-5)
    if floats:  # their digits may differ in number, so the length may too
        assert headers.pop("content-length") == str(len(content))
        recorded["headers"].pop("content-length")
    assert headers == recorded["headers"]


def assert_changed_answer(response: httpx.Response, status: int, body: dict[str, Any]) -> None:
    answered = response.json()
    assert answered.pop("request_id") == response.headers["x-request-id"]
    assert (response.status_code, answered) == (status, body)
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-length"] == str(len(response.content))


def recorded(name: str, model_dir: Path) -> dict[str, Any]:
    """The recorded answer, with this test's model folder where the answer names it."""
    answer: dict[str, Any] = json.loads(json.dumps(RECORDED[name]))  # a copy to change
    if "<model_dir>" in answer["body"]:
        answer["body"] = answer["body"].replace("<model_dir>", str(model_dir))
        answer["headers"]["content-length"] = str(len(answer["body"].encode()))
    return answer


def test_every_recorded_case_is_sent_and_every_change_is_a_case() -> None:
    names = [case.name for case in CASES]
    assert len(set(names)) == len(names)
    assert set(CHANGED) <= set(names)
    assert set(names) - set(CHANGED) <= set(RECORDED)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_the_route_answers_as_before_the_merge(
    serve: ServeFn, tiny_model_dir: Path, case: Case
) -> None:
    async with serve(max_files_per_request=MAX_FILES) as client:
        response = await client.post(case.path, **case.request())
    if case.name in CHANGED:
        assert_changed_answer(response, *CHANGED[case.name])
    else:
        assert_same_answer(response, recorded(case.name, tiny_model_dir))


@pytest.mark.parametrize(
    ("authorization", "answer"),
    [
        ("Bearer s3cret", "key Bearer s3cret"),
        ("Bearer wrong", "key Bearer wrong"),
        (None, "key None"),
    ],
)
async def test_the_api_key_is_checked_as_before(
    serve: ServeFn, tiny_model_dir: Path, authorization: str | None, answer: str
) -> None:
    headers = {"authorization": authorization} if authorization else {}
    async with serve(max_files_per_request=MAX_FILES, api_key="s3cret") as client:
        response = await client.post(PREDICT, files=[digit()], headers=headers)
    assert_same_answer(response, recorded(answer, tiny_model_dir))


@pytest.mark.parametrize(
    ("key", "authorization", "answer"),
    [
        pytest.param(
            "cl\u00e9",
            "Bearer cl\u00e9".encode(),
            "odd key 'clé' b'Bearer cl\\xc3\\xa9'",
            id="non-ASCII key",
        ),
        pytest.param(
            " k", b"Bearer  k", "odd key ' k' b'Bearer  k'", id="key with a leading space"
        ),
        pytest.param(
            "s3cret", b"bearer s3cret", "odd key 's3cret' b'bearer s3cret'", id="lower-case scheme"
        ),
    ],
)
async def test_odd_keys_are_checked_as_before(
    serve: ServeFn, tiny_model_dir: Path, key: str, authorization: bytes, answer: str
) -> None:
    async with serve(api_key=key) as client:
        response = await client.post(
            PREDICT, files=[digit()], headers={"authorization": authorization}
        )
    assert_same_answer(response, recorded(answer, tiny_model_dir))


async def test_behind_a_root_path_the_route_answers_as_before(tiny_model_dir: Path) -> None:
    app = create_app(Settings(model_dir=tiny_model_dir))
    async with app.router.lifespan_context(app):
        await app.state.dataplane.repository.loaded.wait()
        transport = httpx.ASGITransport(app=app, root_path="/svc")
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.post("/svc" + PREDICT, files=[digit()])
    assert_same_answer(response, recorded("root path", tiny_model_dir))


async def test_a_body_without_declared_length_is_read_as_before(
    serve: ServeFn, tiny_model_dir: Path
) -> None:
    body = raw_part("files", "d.png", png()) + CLOSING

    async def chunks() -> AsyncIterator[bytes]:
        yield body[:100]
        yield body[100:]

    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    async with serve() as client:
        response = await client.post(PREDICT, content=chunks(), headers=headers)
    assert_same_answer(response, recorded("no content-length", tiny_model_dir))


async def test_a_client_that_disconnects_mid_body_gets_a_400_as_before(
    tiny_model_dir: Path,
) -> None:
    app = create_app(Settings(model_dir=tiny_model_dir))
    messages = [
        {"type": "http.request", "body": raw_part("files", "d.png", png())[:50], "more_body": True},
        {"type": "http.disconnect"},
    ]
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    headers = [
        (b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode()),
        (b"content-length", b"4000"),
    ]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": PREDICT, "raw_path": PREDICT.encode(), "query_string": b"",
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 1), "server": ("test", 80),
    }  # fmt: skip
    async with app.router.lifespan_context(app):
        await app.state.dataplane.repository.loaded.wait()
        await app(scope, receive, send)
    assert statuses == RECORDED["disconnect"]["statuses"] == [400]
