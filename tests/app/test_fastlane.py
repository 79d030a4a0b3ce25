"""The fast lane answers exactly what the typed route answers, and hands on what it cannot see.

Every request here is sent twice, to an app with the lane and to one without it (only the
FastAPI route), and the two answers must be the same bytes. The lane's counts show which
requests it served itself and which it handed to the route.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.fastlane import LaneCounts
from app.main import create_app
from app.settings import Settings
from tests.app.images import gray_jpeg, png

pytestmark = pytest.mark.anyio

PREDICT = "/api/v1/models/tiny-digits/predict"
BOUNDARY = "lanetestboundary"


@dataclass(frozen=True)
class Case:
    name: str
    path: str = PREDICT
    params: dict[str, str] = field(default_factory=dict)
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    data: dict[str, str] | None = None
    body: bytes | None = None  # sent as is, as multipart/form-data with BOUNDARY
    headers: dict[str, str] = field(default_factory=dict)
    served: bool = True  # whether the lane serves it rather than the route

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
    name: str, filename: str | None, data: bytes, extra_headers: str = "", boundary: str = BOUNDARY
) -> bytes:
    disposition = f'form-data; name="{name}"' + (
        f'; filename="{filename}"' if filename is not None else ""
    )
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
    Case("more files than allowed", files=[digit(f"{i}.png", i) for i in range(3)], served=False),
    Case("another form field", files=[digit()], data={"note": "hi"}, served=False),
    Case("field named file", files=[("file", ("d.png", png(), "image/png"))], served=False),
    Case(
        "a files part without filename", body=raw_part("files", None, png()) + CLOSING, served=False
    ),
    Case("no closing boundary", body=raw_part("files", "d.png", png()), served=False),
    Case("garbage body", body=b"this is not multipart at all", served=False),
    Case("top_k=0", params={"top_k": "0"}, files=[digit()], served=False),
    Case("top_k=abc", params={"top_k": "abc"}, files=[digit()], served=False),
    Case("top_k with a leading zero", params={"top_k": "02"}, files=[digit()], served=False),
    Case(
        "include_preprocessed=yes",
        params={"include_preprocessed": "yes"},
        files=[digit()],
        served=False,
    ),
    Case("an unknown query parameter", params={"verbose": "1"}, files=[digit()], served=False),
    Case(
        "version with a leading zero",
        path="/api/v1/models/tiny-digits/versions/01/predict",
        files=[digit()],
        served=False,
    ),
    Case("not multipart", headers={"content-type": "application/json"}, body=b"{}", served=False),
    Case(
        "an empty file box (browsers send one for an unselected file input)",
        body=raw_part("files", "", b"") + CLOSING,
        served=False,
    ),
    Case(
        "an empty file box before a real file",
        body=raw_part("files", "", b"") + raw_part("files", "d.png", png()) + CLOSING,
        served=False,
    ),
    Case(
        "a charset parameter",
        headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}; charset=latin-1"},
        body=raw_part("files", "\u00e9.png", png()) + CLOSING,
        served=False,
    ),
    Case(
        "a part header given twice",
        body=raw_part(
            "files", "n.txt", b"hello", "Content-Type: text/plain\r\nContent-Type: image/png\r\n"
        )
        + CLOSING,
        served=False,
    ),
    Case(
        "a boundary too long for the parser",
        headers={"content-type": f"multipart/form-data; boundary={LONG_BOUNDARY}"},
        body=raw_part("files", "d.png", png(), boundary=LONG_BOUNDARY)
        + f"--{LONG_BOUNDARY}--\r\n".encode(),
        served=False,
    ),
]


@asynccontextmanager
async def app_client(
    model_dir: Path, **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, LaneCounts]]:
    app = create_app(Settings(model_dir=model_dir, **settings))
    async with app.router.lifespan_context(app):
        await app.state.dataplane.repository.loaded.wait()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client, app.state.fast_lane


async def both_answers(
    model_dir: Path, case: Case, **settings: Any
) -> tuple[httpx.Response, httpx.Response, LaneCounts]:
    async with app_client(model_dir, max_files_per_request=2, **settings) as (client, counts):
        laned = await client.post(case.path, **case.request())
    async with app_client(model_dir, max_files_per_request=2, fast_lane=False, **settings) as (
        client,
        _,
    ):
        routed = await client.post(case.path, **case.request())
    return laned, routed, counts


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_the_lane_answers_what_the_route_answers(tiny_model_dir: Path, case: Case) -> None:
    laned, routed, counts = await both_answers(tiny_model_dir, case)
    assert (laned.status_code, laned.content) == (routed.status_code, routed.content)
    assert laned.headers["content-type"] == routed.headers["content-type"]
    assert (counts.served, counts.handed_on) == ((1, 0) if case.served else (0, 1))


@pytest.mark.parametrize(
    ("authorization", "served", "status"),
    [("Bearer s3cret", True, 200), ("Bearer wrong", False, 401), (None, False, 401)],
)
async def test_with_an_api_key_only_the_right_key_is_served_by_the_lane(
    tiny_model_dir: Path, authorization: str | None, served: bool, status: int
) -> None:
    headers = {"authorization": authorization} if authorization else {}
    case = Case("key", files=[digit()], headers=headers, served=served)
    laned, routed, counts = await both_answers(tiny_model_dir, case, api_key="s3cret")
    assert laned.status_code == status
    assert (laned.status_code, laned.content) == (routed.status_code, routed.content)
    assert counts.served == int(served)


@pytest.mark.parametrize(
    ("key", "authorization"),
    [
        pytest.param("cl\u00e9", "Bearer cl\u00e9".encode(), id="non-ASCII key"),
        pytest.param(" k", b"Bearer  k", id="key with a leading space"),
        pytest.param("s3cret", b"bearer s3cret", id="lower-case scheme"),
    ],
)
async def test_keys_the_lane_cannot_check_exactly_go_to_the_route(
    tiny_model_dir: Path, key: str, authorization: bytes
) -> None:
    async with app_client(tiny_model_dir, api_key=key) as (client, counts):
        laned = await client.post(
            PREDICT, files=[digit()], headers={"authorization": authorization}
        )
    async with app_client(tiny_model_dir, api_key=key, fast_lane=False) as (client, _):
        routed = await client.post(
            PREDICT, files=[digit()], headers={"authorization": authorization}
        )
    assert (laned.status_code, laned.content) == (routed.status_code, routed.content)
    assert (counts.served, counts.handed_on) == (0, 1)


async def test_behind_a_root_path_requests_go_to_the_route(tiny_model_dir: Path) -> None:
    app = create_app(Settings(model_dir=tiny_model_dir))
    async with app.router.lifespan_context(app):
        await app.state.dataplane.repository.loaded.wait()
        transport = httpx.ASGITransport(app=app, root_path="/svc")
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.post("/svc" + PREDICT, files=[digit()])
    assert response.status_code == 200
    assert app.state.fast_lane.served == 0


async def disconnecting_client_status(app: Any) -> list[int]:
    """Send half a body, then disconnect; return the statuses the app sent."""
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
    await app(scope, receive, send)
    return statuses


async def test_a_client_that_disconnects_mid_body_gets_what_the_route_gives(
    tiny_model_dir: Path,
) -> None:
    answers = []
    for lane in (True, False):
        app = create_app(Settings(model_dir=tiny_model_dir, fast_lane=lane))
        async with app.router.lifespan_context(app):
            await app.state.dataplane.repository.loaded.wait()
            answers.append(await disconnecting_client_status(app))
            if lane:
                assert app.state.fast_lane.handed_on == 1
    assert answers[0] == answers[1]


async def test_a_body_without_declared_length_goes_to_the_route(tiny_model_dir: Path) -> None:
    body = raw_part("files", "d.png", png()) + CLOSING

    async def chunks() -> AsyncIterator[bytes]:
        yield body[:100]
        yield body[100:]

    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    async with app_client(tiny_model_dir) as (client, counts):
        response = await client.post(PREDICT, content=chunks(), headers=headers)
    assert response.status_code == 200
    assert (counts.served, counts.handed_on) == (0, 1)


async def test_other_paths_are_not_counted(tiny_model_dir: Path) -> None:
    async with app_client(tiny_model_dir) as (client, counts):
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/api/v1/models/tiny-digits")).status_code == 200
    assert (counts.served, counts.handed_on) == (0, 0)
