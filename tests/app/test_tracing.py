"""OpenTelemetry traces: the span tree of each protocol, batches, errors, and tracing off.

Spans go to the SDK's InMemorySpanExporter through `create_app(span_exporter=...)`, so
every test reads the spans the real provider, FastAPI's request span and the stage
middleware made for requests sent through the whole app.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import opentelemetry.trace
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from app import tracing
from app.main import create_app
from app.repository import ServedModel
from app.settings import Settings
from app.tracing import StageTracingMiddleware, check_exporter_environment
from tests.app.images import png
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.anyio

STAGES = ["receive", "decode", "queue", "model", "respond"]
PREDICT = "/api/v1/models/tiny-digits/predict"
# W3C trace context of a caller: version, trace id, parent span id, sampled
CALLER_TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
CALLER_SPAN_ID = 0xB7AD6B7169203331
TRACEPARENT = f"00-{CALLER_TRACE_ID:032x}-{CALLER_SPAN_ID:016x}-01"


@dataclass
class Traced:
    client: httpx.AsyncClient
    spans: InMemorySpanExporter
    app: FastAPI

    def model(self, name: str = "tiny-digits") -> ServedModel:
        model: ServedModel = self.app.state.dataplane.repository.get(name, None)
        return model

    def traces(self) -> dict[int, list[ReadableSpan]]:
        """Finished spans by trace id."""
        found: dict[int, list[ReadableSpan]] = {}
        for span in self.spans.get_finished_spans():
            found.setdefault(span.context.trace_id, []).append(span)
        return found


@pytest.fixture
def traced(tiny_model_dir: Path, runtime_cache_dir: Path) -> Any:
    """`async with traced(**settings) as served:` the tiny models, traced in memory."""

    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Traced]:
        settings = Settings(
            model_dir=tiny_model_dir,
            runtime_cache_dir=runtime_cache_dir,
            tracing="console",  # replaced by the in-memory exporter
            **overrides,
        )
        exporter = InMemorySpanExporter()
        app = create_app(settings, span_exporter=exporter)
        async with app.router.lifespan_context(app):
            await app.state.dataplane.repository.loaded.wait()
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield Traced(client, exporter, app)

    return start


def request_span(spans: list[ReadableSpan]) -> ReadableSpan:
    [server] = [span for span in spans if span.kind is SpanKind.SERVER]
    return server


def stages(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    """The stage spans of one trace, in the order they started."""
    return sorted(
        (span for span in spans if span.kind is SpanKind.INTERNAL),
        key=lambda span: (span.start_time or 0, STAGES.index(span.name)),
    )


def check_request_tree(spans: list[ReadableSpan]) -> tuple[ReadableSpan, dict[str, ReadableSpan]]:
    """One request span with the five stages as its children, one after another and
    within it; returns the request span and the stages by name."""
    server = request_span(spans)
    ordered = stages(spans)
    assert [span.name for span in ordered] == STAGES
    for span in ordered:
        assert span.parent is not None and span.parent.span_id == server.context.span_id
        assert span.context.trace_id == server.context.trace_id
        assert server.start_time <= span.start_time <= span.end_time <= server.end_time  # type: ignore[operator]
    for earlier, later in itertools.pairwise(ordered):
        assert earlier.end_time <= later.start_time, (earlier.name, later.name)  # type: ignore[operator]
    return server, {span.name: span for span in ordered}


def fp32(batch: np.ndarray) -> dict[str, Any]:
    data = batch.ravel().tolist()
    return {"name": "pixels", "datatype": "FP32", "shape": list(batch.shape), "data": data}


# ------------------------------------------------------------------ one request per protocol


@pytest.mark.parametrize(
    ("protocol", "route"),
    [
        ("native", "/api/v1/models/{name}/predict"),
        ("tfserving", "/v1/models/{name}:predict"),
        ("v2", "/v2/models/{name}/infer"),
    ],
)
async def test_a_request_of_each_protocol_is_a_request_span_with_five_stages(
    traced: Any, protocol: str, route: str
) -> None:
    batch = np.random.default_rng(0).uniform(0, 255, size=(2, 28, 28, 1)).astype(np.float32)
    async with traced(inline_max_us=0) as served:  # through the queue, as under load
        if protocol == "native":
            files = [("files", ("a.png", png(1))), ("files", ("b.png", png(2)))]
            response = await served.client.post(PREDICT, files=files)
        elif protocol == "tfserving":
            body = {"instances": batch.tolist()}
            response = await served.client.post("/v1/models/tiny-digits:predict", json=body)
        else:
            body = {"inputs": [fp32(batch)]}
            response = await served.client.post("/v2/models/tiny-digits/infer", json=body)
        assert response.status_code == 200, response.text
        [spans] = served.traces().values()

    server, stage = check_request_tree(spans)
    assert server.name == f"POST {route}"
    attributes = server.attributes or {}
    assert attributes["http.route"] == route
    assert attributes["http.response.status_code"] == 200
    assert attributes["vision_serving.protocol"] == protocol
    assert attributes["vision_serving.model"] == "tiny-digits"
    assert attributes["vision_serving.model.version"] == 1
    assert attributes["vision_serving.images"] == 2
    assert attributes["vision_serving.request_id"] == response.headers["X-Request-ID"]
    assert server.status.status_code is StatusCode.UNSET
    model = stage["model"].attributes or {}
    assert model["vision_serving.batch.size"] == 2
    assert model["vision_serving.batch.requests"] == 1
    assert model["vision_serving.batch.inline"] is False
    assert model["vision_serving.model"] == "tiny-digits"
    # The model span is the batcher's own measure: the call is within the queue's end
    # and the respond stage's start, and all of it is inside the request.
    assert stage["queue"].end_time == stage["model"].start_time
    assert stage["model"].end_time == stage["respond"].start_time


async def test_the_callers_traceparent_is_continued(traced: Any) -> None:
    async with traced() as served:
        response = await served.client.post(
            PREDICT, files={"files": ("a.png", png())}, headers={"traceparent": TRACEPARENT}
        )
        assert response.status_code == 200
        [(trace_id, spans)] = served.traces().items()
    assert trace_id == CALLER_TRACE_ID
    server = request_span(spans)
    assert server.parent is not None and server.parent.span_id == CALLER_SPAN_ID
    assert server.parent.is_remote


async def test_an_idle_model_runs_inline_with_an_empty_queue_stage(traced: Any) -> None:
    async with traced() as served:  # the tiny model costs microseconds: inline when idle
        response = await served.client.post(PREDICT, files={"files": ("a.png", png())})
        assert response.status_code == 200
        [spans] = served.traces().values()
    _, stage = check_request_tree(spans)
    assert (stage["model"].attributes or {})["vision_serving.batch.inline"] is True
    assert stage["queue"].start_time == stage["queue"].end_time


async def test_probes_metrics_and_pages_are_not_traced(traced: Any) -> None:
    async with traced() as served:
        for path in ("/healthz", "/readyz", "/metrics", "/v2/health/ready", "/docs"):
            await served.client.get(path)
        assert served.spans.get_finished_spans() == ()
        await served.client.get("/v2/models/tiny-digits")  # metadata: traced, no stages
        [spans] = served.traces().values()
    assert [span.name for span in spans] == ["GET /v2/models/{name}"]


# ------------------------------------------------------------------ batches


async def test_requests_sharing_a_batch_each_get_a_model_span_of_the_same_call(
    traced: Any,
) -> None:
    # A 200 ms batch window gathers the concurrent requests into one model call.
    async with traced(inline_max_us=0, max_batch_wait_ms=200) as served:
        uploads = [{"files": (f"{i}.png", png(i))} for i in range(4)]
        responses = await asyncio.gather(
            *(served.client.post(PREDICT, files=files) for files in uploads)
        )
        assert [r.status_code for r in responses] == [200] * 4
        traces = served.traces()
        batcher = served.model().batcher
        assert batcher is not None and batcher.stats.batch_sizes == [4]

    assert len(traces) == 4  # one trace per request
    models = []
    for spans in traces.values():
        server, stage = check_request_tree(spans)
        assert stage["model"].parent.span_id == server.context.span_id  # type: ignore[union-attr]
        models.append(stage["model"])
    batch = {span.attributes["vision_serving.batch.id"] for span in models}  # type: ignore[index]
    assert len(batch) == 1  # the same call, named alike in every trace
    for span in models:
        attributes = span.attributes or {}
        assert attributes["vision_serving.batch.size"] == 4
        assert attributes["vision_serving.batch.requests"] == 4
        assert attributes["vision_serving.images"] == 1
    # One call: the same times in every trace (to the clock's renewal, every 10 s)
    starts = [span.start_time or 0 for span in models]
    assert max(starts) - min(starts) < 100_000  # ns
    assert len({(span.end_time or 0) - (span.start_time or 0) for span in models}) == 1


# ------------------------------------------------------------------ errors


async def test_a_failed_model_call_marks_the_model_span_and_the_request_span(
    traced: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(pixels: np.ndarray) -> np.ndarray:
        raise RuntimeError("the accelerator fell off the bus")

    async with traced(inline_max_us=0) as served:
        batcher = served.model().batcher
        assert batcher is not None
        monkeypatch.setattr(batcher, "_predict", broken)
        response = await served.client.post(PREDICT, files={"files": ("a.png", png())})
        assert response.status_code == 500
        [spans] = served.traces().values()

    server, stage = check_request_tree(spans)
    assert server.status.status_code is StatusCode.ERROR
    assert (server.attributes or {})["vision_serving.error.code"] == "inference_failed"
    model = stage["model"]
    assert model.status.status_code is StatusCode.ERROR
    assert "the accelerator fell off the bus" in (model.status.description or "")
    [event] = model.events
    assert event.name == "exception"


async def test_a_file_that_is_not_an_image_ends_the_decode_stage_in_error(traced: Any) -> None:
    async with traced() as served:
        response = await served.client.post(PREDICT, files={"files": ("a.png", b"not a png")})
        assert response.status_code == 415
        [spans] = served.traces().values()
    server = request_span(spans)
    # A client error: the server span stays unset (HTTP semantic conventions) but says why
    assert server.status.status_code is StatusCode.UNSET
    assert (server.attributes or {})["http.response.status_code"] == 415
    assert (server.attributes or {})["vision_serving.error.code"] == "unsupported_media_type"
    assert [span.name for span in stages(spans)] == ["receive", "decode"]
    decode = stages(spans)[1]
    assert decode.status.status_code is StatusCode.ERROR
    assert decode.status.description == "HTTP 415 unsupported_media_type"


async def test_requests_past_their_deadline_end_the_stage_they_were_waiting_in(
    traced: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow(pixels: np.ndarray) -> np.ndarray:  # holds the inference thread until released
        entered.set()
        release.wait(10)
        return np.full((len(pixels), 10), 0.1, dtype=np.float32)

    async with traced(inline_max_us=0, request_timeout_seconds=0.3) as served:
        batcher = served.model().batcher
        assert batcher is not None
        monkeypatch.setattr(batcher, "_predict", slow)
        running = asyncio.create_task(served.client.post(PREDICT, files={"files": ("a", png())}))
        await asyncio.to_thread(entered.wait, 10)  # the first request's batch is running
        queued = await served.client.post(PREDICT, files={"files": ("b", png(1))})
        release.set()
        assert [(await running).status_code, queued.status_code] == [503, 503]
        traces = list(served.traces().values())

    by_stage = {tuple(span.name for span in stages(spans)): spans for spans in traces}
    # The first waited in its model call, the second in the queue behind it
    in_model = stages(by_stage[("receive", "decode", "queue", "model")])
    in_queue = stages(by_stage[("receive", "decode", "queue")])
    for span in (in_model[3], in_queue[2]):
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "HTTP 503 overloaded"
    assert in_model[2].status.status_code is StatusCode.UNSET  # it did leave the queue
    for spans in traces:  # no stage outlives its request, even once the batch is done
        server = request_span(spans)
        assert server.status.status_code is StatusCode.ERROR
        assert all(span.end_time <= server.end_time for span in stages(spans))  # type: ignore[operator]


# ------------------------------------------------------------------ off


async def test_off_nothing_is_installed_and_no_span_is_made(
    tiny_model_dir: Path, runtime_cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Even with an SDK provider installed globally (as `opentelemetry-instrument` would),
    # the service makes no span: FastAPI's telemetry is told off.
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(opentelemetry.trace, "get_tracer_provider", lambda: provider)

    def no_trace(*args: object, **kwargs: object) -> None:
        raise AssertionError("a request trace was made with tracing off")

    monkeypatch.setattr(tracing.RequestTrace, "__init__", no_trace)
    app = create_app(Settings(model_dir=tiny_model_dir, runtime_cache_dir=runtime_cache_dir))
    assert app.state.tracing is None
    assert not any(m.cls is StageTracingMiddleware for m in app.user_middleware)
    async with app.router.lifespan_context(app):
        await app.state.dataplane.repository.loaded.wait()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.post(PREDICT, files={"files": ("a.png", png())})
            assert response.status_code == 200
    assert exporter.get_finished_spans() == ()
    provider.shutdown()


def test_off_the_sdk_is_never_imported() -> None:
    """In a fresh interpreter: build the app and serve an API request with tracing off."""
    script = (
        "import sys, httpx, asyncio\n"
        "from app.main import create_app\n"
        "app = create_app()\n"
        "async def main():\n"
        "    transport = httpx.ASGITransport(app=app)\n"
        "    async with httpx.AsyncClient(transport=transport, base_url='http://t') as c:\n"
        "        assert (await c.get('/v2')).status_code == 200\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk')\n"
        "      or m.startswith('opentelemetry.exporter')))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISION_SERVING_")}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_span_exporter_without_tracing_on_is_refused(tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="needs tracing on"):
        create_app(Settings(model_dir=tiny_model_dir), span_exporter=InMemorySpanExporter())


# ------------------------------------------------------------------ settings


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTLP over HTTP"),
        ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}, "OTLP over HTTP"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "otel-collector:4318"}, "not an http"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://"}, "not an http"),
    ],
)
def test_otlp_settings_the_exporter_cannot_use_are_refused_with_the_fix(
    environ: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match=message):
        check_exporter_environment("otlp", environ)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        Settings(tracing="otlp")
    assert Settings(tracing="console").tracing == "console"  # only OTLP reads them


def test_usable_otlp_settings_pass() -> None:
    check_exporter_environment(
        "otlp",
        {
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "https://collector.example:4318",
        },
    )
    check_exporter_environment("otlp", {})  # the exporter's default, localhost:4318


async def test_shutdown_is_bounded_when_the_exporter_hangs(tiny_model_dir: Path) -> None:
    class Hanging(InMemorySpanExporter):
        def shutdown(self) -> None:
            import time

            time.sleep(5)

    app = create_app(Settings(model_dir=tiny_model_dir, tracing="console"), span_exporter=Hanging())
    loop = asyncio.get_running_loop()
    started = loop.time()
    await app.state.tracing.shutdown(timeout_seconds=0.2)
    assert loop.time() - started < 2
