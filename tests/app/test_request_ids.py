"""Request ids: kept or made, answered on every response, in error bodies and log records."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from app.logs import RequestIdFilter
from app.main import create_app
from app.request_ids import (
    MAX_LENGTH,
    RequestIdMiddleware,
    accepted_request_id,
    current_request_id,
)
from app.settings import Settings
from tests.app.conftest import ServeFn
from tests.app.images import png

pytestmark = pytest.mark.anyio

PREDICT = "/api/v1/models/tiny-digits/predict"
GENERATED = re.compile(r"[0-9a-f]{32}")
ONE_DIGIT = {"files": ("d.png", png(), "image/png")}


@pytest.fixture
def request_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog, its handler given the filter every handler of `python -m app` has."""
    request_ids = RequestIdFilter()
    caplog.handler.addFilter(request_ids)
    try:
        yield caplog
    finally:
        caplog.handler.removeFilter(request_ids)


@pytest.mark.parametrize(
    "sent",
    [
        "abc",
        "0f8c6d0e-3f1a-4b5e-9d7c-2a1b3c4d5e6f",
        "req:2024-01-31+x=y@edge_1.a-b",
        "...",
        "a..b",
        "x" * MAX_LENGTH,
    ],
)
def test_safe_ids_are_kept(sent: str) -> None:
    assert accepted_request_id(sent.encode()) == sent


@pytest.mark.parametrize(
    "sent",
    [
        b"",
        b"x" * (MAX_LENGTH + 1),
        b"has space",
        b'quote"d',
        b"semi;colon",
        b"line\nbreak",
        b"tab\there",
        "caf\u00e9".encode(),
        b"<script>",
        b"../../etc/passwd",  # a path: ids end up in file names
        b"a/b",
        b".",
        b"..",
    ],
)
def test_unsafe_ids_are_refused(sent: bytes) -> None:
    assert accepted_request_id(sent) is None


async def test_a_sent_id_is_answered_and_a_missing_one_is_made(serve: ServeFn) -> None:
    async with serve() as client:
        echoed = await client.post(PREDICT, files=ONE_DIGIT, headers={"X-Request-ID": "abc-123"})
        made = [await client.get("/healthz") for _ in range(2)]
    assert echoed.status_code == 200
    assert echoed.headers["x-request-id"] == "abc-123"
    ids = [response.headers["x-request-id"] for response in made]
    assert all(GENERATED.fullmatch(request_id) for request_id in ids), ids
    assert ids[0] != ids[1]


@pytest.mark.parametrize("sent", [b"x" * (MAX_LENGTH + 1), b"two words", b"a\xff"])
async def test_an_unsafe_id_is_replaced_not_echoed(serve: ServeFn, sent: bytes) -> None:
    async with serve() as client:
        response = await client.post(PREDICT, files=ONE_DIGIT, headers={"X-Request-ID": sent})
    answered = response.headers["x-request-id"]
    assert GENERATED.fullmatch(answered), answered
    assert sent not in response.content


# One request per kind of error, over the three protocols and every layer that answers.
ERRORS = [
    pytest.param(404, "GET", "/api/v1/no-such-route", {}, {}, id="404 unknown route"),
    pytest.param(404, "POST", "/api/v1/models/nope/predict", {"files": ONE_DIGIT}, {}, id="404"),
    pytest.param(
        415,
        "POST",
        PREDICT,
        {"files": {"files": ("n.txt", b"hello", "text/plain")}},
        {},
        id="415 native",
    ),
    pytest.param(
        413,
        "POST",
        PREDICT,
        {"files": {"files": ("big.png", b"x" * 4096, "image/png")}},
        {"max_body_bytes": 1024},
        id="413 body limit",
    ),
    pytest.param(
        400, "POST", "/v1/models/tiny-digits:predict", {"content": b"{"}, {}, id="400 tfserving"
    ),
    pytest.param(
        400,
        "POST",
        "/v2/models/tiny-digits/infer",
        {"json": {"inputs": [{"name": "pixels", "shape": [1], "datatype": "FP64", "data": [1]}]}},
        {},
        id="400 v2",
    ),
    pytest.param(
        401, "POST", PREDICT, {"files": ONE_DIGIT}, {"api_key": "s3cret"}, id="401 api key"
    ),
]


@pytest.mark.parametrize(("status", "method", "url", "sending", "settings"), ERRORS)
async def test_errors_carry_the_id_in_header_and_body(
    serve: ServeFn,
    status: int,
    method: str,
    url: str,
    sending: dict[str, object],
    settings: dict[str, object],
) -> None:
    async with serve(**settings) as client:
        sent = await client.request(method, url, headers={"X-Request-ID": "mine-1"}, **sending)  # type: ignore[arg-type]
        made = await client.request(method, url, **sending)  # type: ignore[arg-type]
    assert sent.status_code == made.status_code == status, sent.text
    assert sent.headers["x-request-id"] == sent.json()["request_id"] == "mine-1"
    assert made.headers["x-request-id"] == made.json()["request_id"]
    assert GENERATED.fullmatch(made.json()["request_id"])
    assert sent.json()["error"] and sent.json()["code"]  # the existing fields stay


async def test_an_overload_refusal_carries_the_id(serve: ServeFn) -> None:
    async with serve(max_queued_images=1, max_batch_wait_ms=1500) as client:
        first = asyncio.create_task(client.post(PREDICT, files=ONE_DIGIT))
        await asyncio.sleep(0.2)
        refused = await client.post(
            "/v1/models/tiny-digits:predict", content=b"{", headers={"X-Request-ID": "busy"}
        )
        await first
    assert refused.status_code == 503
    assert refused.headers["x-request-id"] == refused.json()["request_id"] == "busy"


async def test_an_unhandled_error_is_a_json_500_with_the_id_logged(
    tmp_path: Path, request_logs: pytest.LogCaptureFixture
) -> None:
    async def boom() -> None:
        raise RuntimeError("a bug")

    app = create_app(Settings(model_dir=tmp_path))
    app.add_api_route("/boom", boom)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/boom", headers={"X-Request-ID": "oops-1"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "oops-1"
    assert response.json() == {
        "error": "internal server error; the server log has the details under request id oops-1",
        "code": "internal_error",
        "request_id": "oops-1",
    }
    [logged] = [r for r in request_logs.records if r.name == "app.request_ids"]
    assert logged.levelno == logging.ERROR
    assert logged.request_id == "oops-1"  # type: ignore[attr-defined]
    assert logged.exc_info is not None and "a bug" in str(logged.exc_info[1])


@pytest.fixture
def model_failure(monkeypatch: pytest.MonkeyPatch) -> dict[str, bool]:
    """Set `["now"]` to make every model call fail (warm-up, before it, still passes)."""
    from app.runtime import ModelRuntime

    real_predict = ModelRuntime.predict_batch
    switch = {"now": False}

    def predict(self: ModelRuntime, pixels):  # type: ignore[no-untyped-def]
        if switch["now"]:
            raise RuntimeError("device lost")
        return real_predict(self, pixels)

    monkeypatch.setattr(ModelRuntime, "predict_batch", predict)
    return switch


async def test_log_records_carry_the_id_of_the_request_they_are_about(
    serve: ServeFn, model_failure: dict[str, bool], request_logs: pytest.LogCaptureFixture
) -> None:
    async with serve() as client:
        model_failure["now"] = True
        request_logs.clear()
        failed = await client.post(PREDICT, files=ONE_DIGIT, headers={"X-Request-ID": "r-42"})
        during = list(request_logs.records)
        request_logs.clear()
        logging.getLogger("app.test").warning("between requests")
        after = list(request_logs.records)
    assert failed.status_code == 500
    errors = [r for r in during if r.name == "app.errors"]
    assert errors and "device lost" in errors[0].getMessage()
    # The service's records (the test's own HTTP client logs too, once a logging test has
    # set the root level to INFO, from outside the request).
    during = [r for r in during if r.name.startswith("app.")]
    assert {r.request_id for r in during} == {"r-42"}  # type: ignore[attr-defined]
    assert [r.request_id for r in after] == [None]  # type: ignore[attr-defined]


async def test_concurrent_requests_keep_their_own_ids(
    serve: ServeFn, model_failure: dict[str, bool], request_logs: pytest.LogCaptureFixture
) -> None:
    ids = [f"concurrent-{i}" for i in range(6)]
    # The batch wait makes the requests overlap: they wait, and fail, as one batch.
    async with serve(max_batch_wait_ms=300) as client:
        model_failure["now"] = True
        request_logs.clear()
        responses = await asyncio.gather(
            *(
                client.post(PREDICT, files=ONE_DIGIT, headers={"X-Request-ID": request_id})
                for request_id in ids
            )
        )
    assert [r.headers["x-request-id"] for r in responses] == ids
    assert [r.json()["request_id"] for r in responses] == ids
    logged = [r.request_id for r in request_logs.records if r.name == "app.errors"]  # type: ignore[attr-defined]
    assert sorted(logged) == sorted(ids)
    # The failed batch is logged once, from the batcher's task, naming every request in it.
    [batch] = [r for r in request_logs.records if r.name == "app.batching"]
    assert sorted(batch.request_id.split(",")) == sorted(ids)  # type: ignore[attr-defined]


async def test_the_middleware_isolates_interleaved_requests() -> None:
    """Two requests whose handlers interleave each see only their own id throughout."""
    seen: dict[str, list[str | None]] = {}
    both_inside = asyncio.Barrier(2)

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        name = scope["path"]
        seen[name] = [current_request_id()]
        await both_inside.wait()  # the other request has set its id by now
        seen[name].append(current_request_id())
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = RequestIdMiddleware(handler)
    sent: dict[str, list[Message]] = {"/a": [], "/b": []}

    async def call(path: str, request_id: bytes) -> None:
        scope = {
            "type": "http",
            "method": "GET",
            "path": path,
            "headers": [(b"x-request-id", request_id)],
        }

        async def send(message: Message) -> None:
            sent[path].append(message)

        async def receive() -> Message:
            return {"type": "http.request", "body": b""}

        await middleware(scope, receive, send)

    await asyncio.gather(call("/a", b"id-a"), call("/b", b"id-b"))
    assert seen == {"/a": ["id-a", "id-a"], "/b": ["id-b", "id-b"]}
    assert (b"x-request-id", b"id-a") in sent["/a"][0]["headers"]
    assert (b"x-request-id", b"id-b") in sent["/b"][0]["headers"]
    assert current_request_id() is None


def test_outside_a_request_there_is_no_id() -> None:
    assert current_request_id() is None
