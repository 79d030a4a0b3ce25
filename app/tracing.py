"""Optional OpenTelemetry traces: a span per request and one per stage of it.

`VISION_SERVING_TRACING` chooses: `off` (the default), `otlp` (OTLP over HTTP/protobuf
to `OTEL_EXPORTER_OTLP_ENDPOINT`, default http://localhost:4318) or `console` (one JSON
span a line on stdout). The standard `OTEL_*` variables apply: service name, resource
attributes, sampler, exporter headers and timeouts, batch processor sizes.

The request span is FastAPI's own (its native OpenTelemetry support, given this app's
tracer provider): an HTTP server span named after the route (`POST
/v1/models/{name}:predict`), continuing the caller's W3C `traceparent`, with the
method, route and status, ERROR for 5xx answers. Requests of the APIs are traced; health
probes, `/metrics`, the docs and the page are not. This module adds what it knows to
that span (`vision_serving.protocol`, `.model`, `.model.version`, `.images`,
`.request_id`) and records the stages as its children:

    receive   reading the body: from the app's first read to its last byte
    decode    from the end of the body until the images are handed to the model's batch
              queue: parsing the request, decoding and preprocessing the images
    queue     waiting in the model's batch queue (zero for a batch run inline)
    model     the model call of the batch that served the request
    respond   from the end of that model call until the answer's last byte is handed
              to the server: building and serialising the response

A batch serves several requests, and each belongs to its own trace, so each request
gets its own `model` span covering the shared call, with `vision_serving.batch.size`
(images in the batch), `.batch.requests` (requests sharing it), `.batch.id` (the same
for every request of the batch: search by it to see who shared a call) and
`.batch.inline`. (One span per batch, linked to the requests, would sit in no request's
trace, and a trace viewer shows a request's tree, not its links.) The batcher reports
its times after the fact (`app.batching.BatchTrace`), so no span is open across tasks or
threads: stage spans are made whole from the times measured.

Errors: a request refused after its body was read and before reaching a queue ends its
`decode` span in error; a failed model call its `model` span, with the exception; a
request whose deadline passed while it waited, its `queue` or `model` span (a stage never
outlives its request). The request span carries `vision_serving.error.code`, the `code` of
the error answer; FastAPI sets its status to ERROR for 5xx only, as the HTTP conventions
say.

Off, nothing of this runs: the SDK is not imported, FastAPI's telemetry is told off, the
stage middleware is not installed, and the data plane and the batcher see `None` where a
trace would be.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

# Only OpenTelemetry's API is imported here (FastAPI imports it anyway); the SDK and the
# exporters are imported when a `Tracing` is built, so with tracing off they never are.
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode, set_span_in_context
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.batching import BatchRun
from app.monitoring import api_family
from app.request_ids import current_request_id
from app.settings import ENV_PREFIX, Settings

if TYPE_CHECKING:
    from fastapi.telemetry import TelemetryConfig
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

logger = logging.getLogger(__name__)

SERVICE_NAME = "vision-serving"
"""`service.name` unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` says otherwise."""
SHUTDOWN_SECONDS = 5.0
"""Longest the lifespan waits at shutdown for queued spans to be exported."""
OTLP_PROTOCOL = "http/protobuf"

TELEMETRY_OFF: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
"""FastAPI's native telemetry when tracing is off: never on, even if something else set
a global tracer provider, and no provider look-ups per request."""

_current: contextvars.ContextVar[RequestTrace | None] = contextvars.ContextVar(
    "vision_serving_trace", default=None
)


def current_trace() -> RequestTrace | None:
    """The trace of the request being served; None when tracing is off or it is not traced."""
    return _current.get()


def check_exporter_environment(mode: str, environ: Mapping[str, str]) -> None:
    """Raise ValueError, saying how to fix it, for `OTEL_*` values the exporter cannot use."""
    if mode != "otlp":
        return
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = environ.get(name, "").strip()
        if protocol and protocol != OTLP_PROTOCOL:
            raise ValueError(
                f"{name}={protocol}: the service exports OTLP over HTTP ({OTLP_PROTOCOL}) "
                f"only; set {name}={OTLP_PROTOCOL} or unset it, and point "
                "OTEL_EXPORTER_OTLP_ENDPOINT at the collector's HTTP port (4318, not gRPC's "
                "4317)"
            )
        if protocol:
            break
    for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        endpoint = environ.get(name, "").strip()
        if not endpoint:
            continue
        url = urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(
                f"{name}={endpoint} is not an http(s) URL: set it to the collector's OTLP/HTTP "
                "address, e.g. http://otel-collector:4318"
            )


class Tracing:
    """One app's tracer provider: built by `create_app` when tracing is on, shut down by
    its lifespan."""

    def __init__(self, settings: Settings, exporter: SpanExporter | None = None) -> None:
        """Spans go to `exporter` if given (tests), else to what `settings.tracing` names."""
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        resource = Resource.create()
        if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
        # Not the global provider: every app has its own, as it has its own registry, and
        # the lifespan, not an atexit hook, shuts it down.
        self.provider: TracerProvider = TracerProvider(resource=resource, shutdown_on_exit=False)
        if exporter is not None:  # spans readable at once
            self.provider.add_span_processor(SimpleSpanProcessor(exporter))
        else:  # exported on the processor's thread, never on the request path
            self.provider.add_span_processor(BatchSpanProcessor(_exporter(settings)))
        self.tracer: Tracer = self.provider.get_tracer("app.tracing")
        logger.info(
            "tracing on: spans of service %s go to %s",
            resource.attributes["service.name"],
            "the test's exporter" if exporter is not None else _destination(settings),
        )

    def fastapi_telemetry(self) -> TelemetryConfig:
        """FastAPI's native telemetry: request spans from this provider, nothing else."""
        return {
            "tracer_provider": self.provider,
            "tracing": True,
            "metrics": False,  # Prometheus has them (app.monitoring)
            "logs": False,
            "operation_spans": False,  # dependencies, endpoint, serialisation: the stages say more
            "exclude": _untraced,
        }

    async def shutdown(self, timeout_seconds: float = SHUTDOWN_SECONDS) -> None:
        """Export the spans still queued and stop, waiting at most `timeout_seconds`.

        The SDK's own shutdown can wait 30 s for an unreachable collector, so it runs on a
        daemon thread that is left behind after the bound.
        """
        stopping = threading.Thread(
            target=self.provider.shutdown, name="tracing-shutdown", daemon=True
        )
        stopping.start()
        await asyncio.to_thread(stopping.join, timeout_seconds)
        if stopping.is_alive():
            logger.warning(
                "traces not exported within %g s of shutdown were dropped; check that the "
                "collector (OTEL_EXPORTER_OTLP_ENDPOINT) is reachable",
                timeout_seconds,
            )


def _exporter(settings: Settings) -> SpanExporter:
    if settings.tracing == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        # One span a line, so stdout stays one record a line (JSON logs included).
        return ConsoleSpanExporter(formatter=lambda span: span.to_json(indent=None) + "\n")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # endpoint, headers, timeout and compression from OTEL_*


def _destination(settings: Settings) -> str:
    if settings.tracing == "console":
        return "stdout"
    traces = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318")
    return traces or f"{base.rstrip('/')}/v1/traces"


def _untraced(scope: MutableMapping[str, Any]) -> bool:
    """Requests FastAPI makes no span for: all but the APIs, and the V2 health probes."""
    path = str(scope.get("path", ""))
    return api_family(path) == "other" or path.startswith("/v2/health")


class StageTracingMiddleware:
    """Opens a `RequestTrace` under FastAPI's span of each traced request, and times the
    receive and respond stages from the ASGI messages; installed only when tracing is on."""

    def __init__(self, app: ASGIApp, tracing: Tracing) -> None:
        self.app = app
        self.tracer = tracing.tracer
        self.clock = SpanClock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        span = trace.get_current_span()
        if scope["type"] != "http" or not span.is_recording():  # untraced, or not sampled
            await self.app(scope, receive, send)
            return
        request = RequestTrace(self.tracer, span, api_family(scope["path"]), self.clock)
        status = 500
        code = None

        async def receive_timed() -> Message:
            request.body_reading()
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                request.body_read()
            return message

        async def send_timed(message: Message) -> None:
            nonlocal status, code
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                if status >= 400:  # every error body is `{"error": ..., "code": ...}`
                    code = code or _error_code(message.get("body", b""))
                if not message.get("more_body"):
                    # Before passing it on: FastAPI ends the request span once it is sent.
                    request.answered(status, code)
            await send(message)

        token = _current.set(request)
        try:
            await self.app(scope, receive_timed, send_timed)
        finally:
            _current.reset(token)
            request.answered(status, code)  # no-op if the answer went out through send_timed


def _error_code(body: bytes) -> str | None:
    try:
        code = json.loads(body).get("code")
    except (ValueError, AttributeError):  # not JSON, or not an object
        return None
    return code if isinstance(code, str) else None


class SpanClock:
    """Turns `perf_counter` readings into the wall-clock nanoseconds spans carry.

    One reference pair of readings serves every request, so the spans of requests that
    shared a batch show the same times; it is renewed every `REFRESH_SECONDS`, so a
    wall clock adjusted meanwhile (NTP) is followed.
    """

    REFRESH_SECONDS = 10.0

    def __init__(self) -> None:
        self._renew()

    def _renew(self) -> None:
        self._wall_ns, self._perf = time.time_ns(), time.perf_counter()

    def reading(self) -> Callable[[float], int]:
        """The conversion for a request starting now (renewing the reference if old)."""
        if time.perf_counter() - self._perf > self.REFRESH_SECONDS:
            self._renew()
        wall_ns, perf = self._wall_ns, self._perf
        return lambda at: wall_ns + round((at - perf) * 1e9)


class RequestTrace:
    """The stages of one traced request, recorded as child spans of its request span.

    Times are `time.perf_counter()` readings, as the batcher and the middleware take
    them; spans carry wall-clock nanoseconds (`SpanClock`).
    """

    def __init__(self, tracer: Tracer, span: Span, protocol: str, clock: SpanClock) -> None:
        self._tracer = tracer
        self._span = span
        self._context: Context = set_span_in_context(span)
        self._ns = clock.reading()
        self._started = time.perf_counter()
        self._reading: float | None = None  # the first read of the body
        self._read: float | None = None  # its last byte
        self._calls: list[ModelCallTrace] = []  # model calls queued and not finished
        self._answered_from: float | None = None  # the end of the last model call
        self._images = 0
        self._model: dict[str, str | int] = {}
        self._done = False
        span.set_attribute("vision_serving.protocol", protocol)
        request_id = current_request_id()
        if request_id is not None:
            span.set_attribute("vision_serving.request_id", request_id)

    # Reported by the middleware, the data plane and the batcher, in request order -----

    def body_reading(self) -> None:
        if self._reading is None:
            self._reading = time.perf_counter()

    def body_read(self) -> None:
        self._read = time.perf_counter()
        if self._reading is not None:
            self._stage("receive", self._reading, self._read)

    def describe(self, model: str, version: int, images: int) -> None:
        """The model version a model call of this request goes to, with its image count."""
        self._images += images
        self._model = {"vision_serving.model": model, "vision_serving.model.version": version}
        self._span.set_attributes({**self._model, "vision_serving.images": self._images})

    def queued(self, at: float, images: int) -> ModelCallTrace:
        """`images` of this request entered a batch queue at `at` (the batcher says)."""
        call = ModelCallTrace(self, at, images)
        self._calls.append(call)
        return call

    def answered(self, status: int, error_code: str | None = None) -> None:
        """The last byte of the answer was handed to the server: close every stage.

        `error_code` is the `code` of an error answer (`invalid_image`, `overloaded`...).
        """
        if self._done:
            return
        self._done = True
        now = time.perf_counter()
        failed = None
        if status >= 400:
            failed = f"HTTP {status} {error_code}" if error_code else f"HTTP {status}"
            if error_code:
                self._span.set_attribute("vision_serving.error.code", error_code)
        # Model calls the request stopped waiting for (its deadline passed): they end here.
        unfinished = failed or "the request ended first"
        for call in self._calls:
            self._stage("decode", self._decode_start(), call.enqueued)
            if call.dispatched_at is None:
                self._stage("queue", call.enqueued, now, error=unfinished)
            else:
                self._stage("queue", call.enqueued, call.dispatched_at)
                self._stage("model", call.dispatched_at, now, self._model, error=unfinished)
        if self._answered_from is not None:
            self._stage("respond", self._answered_from, now)
        elif self._read is not None and not self._calls:
            # Refused after its body was read, before reaching a model: while decoding.
            self._stage("decode", self._read, now, error=failed)

    def _call_finished(self, call: ModelCallTrace, run: BatchRun) -> None:
        """A model call ran (or failed): its decode, queue and model stages."""
        self._calls.remove(call)
        if self._done:  # the request did not wait for it: `answered` closed its stages
            return
        self._stage("decode", self._decode_start(), call.enqueued)
        self._stage("queue", call.enqueued, run.dispatched)
        batch = {
            **self._model,
            "vision_serving.images": call.images,
            "vision_serving.batch.size": run.images,
            "vision_serving.batch.requests": run.requests,
            "vision_serving.batch.id": run.batch_id,
            "vision_serving.batch.inline": run.inline,
        }
        self._stage("model", run.dispatched, run.finished, batch, error=run.error)
        if self._answered_from is None or run.finished > self._answered_from:
            self._answered_from = run.finished

    # -------------------------------------------------------------------------------

    def _decode_start(self) -> float:
        return self._read if self._read is not None else self._started

    def _stage(
        self,
        name: str,
        start: float,
        end: float,
        attributes: dict[str, Any] | None = None,
        *,
        error: BaseException | str | None = None,
    ) -> None:
        span = self._tracer.start_span(
            name, context=self._context, start_time=self._ns(start), attributes=attributes
        )
        if isinstance(error, BaseException):
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        elif error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=self._ns(max(start, end)))


class ModelCallTrace:
    """One model call of a traced request, as the batcher reports it (`TracedCall`)."""

    def __init__(self, request: RequestTrace, enqueued: float, images: int) -> None:
        self.request = request
        self.enqueued = enqueued
        self.images = images
        self.dispatched_at: float | None = None

    def dispatched(self, at: float) -> None:
        self.dispatched_at = at

    def finished(self, run: BatchRun) -> None:
        self.request._call_finished(self, run)


def hint_when_off(settings: Settings, environ: Mapping[str, str]) -> None:
    """Log why no traces arrive when a collector is configured but tracing is off."""
    if settings.tracing == "off" and environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        logger.info(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but %sTRACING is off: no traces are sent "
            "(set %sTRACING=otlp to send them)",
            ENV_PREFIX,
            ENV_PREFIX,
        )
