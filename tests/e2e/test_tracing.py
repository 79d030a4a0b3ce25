"""Traces leave a real server over OTLP/HTTP, as a collector receives them.

A small OTLP receiver in the test (an HTTP server decoding the protobuf the exporter
sends) stands in for the collector; the server is `python -m app` with only the
standard `OTEL_*` variables and `VISION_SERVING_TRACING=otlp` set.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.app.images import png
from tests.app.tiny_models import export_tiny_digits
from tests.e2e.conftest import start_server, stop_server

pytestmark = pytest.mark.e2e

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID = "00f067aa0ba902b7"


class Collector:
    """What an OTLP/HTTP trace receiver got: spans with their service's name."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, Span]] = []
        self.lock = threading.Lock()

    def received(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        with self.lock:
            for resource_spans in request.resource_spans:
                attributes = {
                    a.key: a.value.string_value for a in resource_spans.resource.attributes
                }
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append((attributes.get("service.name", ""), span))

    def trace(self, trace_id: str) -> list[tuple[str, Span]]:
        with self.lock:
            return [
                (service, span) for service, span in self.spans if span.trace_id.hex() == trace_id
            ]


@pytest.fixture
def collector() -> Iterator[tuple[Collector, str]]:
    received = Collector()

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/v1/traces":
                received.received(body)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200 if self.path == "/v1/traces" else 404)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield received, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_spans_reach_the_collector_by_shutdown_at_the_latest(
    tmp_path: Path, collector: tuple[Collector, str]
) -> None:
    received, endpoint = collector
    export_tiny_digits(tmp_path / "models")
    server = start_server(
        tmp_path / "models",
        tmp_path / "server.log",
        VISION_SERVING_TRACING="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_SERVICE_NAME="vision-serving-e2e",
        # Nothing is exported on the way: every span must leave at shutdown, which the
        # lifespan bounds and flushes.
        OTEL_BSP_SCHEDULE_DELAY="600000",
    )
    try:
        response = httpx.post(
            f"{server.url}/api/v1/models/tiny-digits/predict",
            files={"files": ("d.png", png())},
            headers={"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN_ID}-01"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        assert received.trace(TRACE_ID) == []  # still queued in the server
    finally:
        assert stop_server(server) == 0, server.log()

    spans = received.trace(TRACE_ID)
    assert {service for service, _ in spans} == {"vision-serving-e2e"}
    by_name = {span.name: span for _, span in spans}
    assert set(by_name) == {
        "POST /api/v1/models/{name}/predict",
        "receive",
        "decode",
        "queue",
        "model",
        "respond",
    }
    request = by_name["POST /api/v1/models/{name}/predict"]
    assert request.kind == Span.SPAN_KIND_SERVER
    assert request.parent_span_id.hex() == CALLER_SPAN_ID
    for name in ("receive", "decode", "queue", "model", "respond"):
        assert by_name[name].parent_span_id == request.span_id, name
    attributes = {a.key: a.value for a in request.attributes}
    assert attributes["vision_serving.model"].string_value == "tiny-digits"
    assert attributes["http.response.status_code"].int_value == 200
    assert attributes["vision_serving.request_id"].string_value == response.headers["X-Request-ID"]
