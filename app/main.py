"""Build the service: `create_app(settings)` wires settings, models, routes and errors.

Models load in the background once the server is up, so `/healthz` answers at once and
`/readyz` turns 200 when every model is loaded and warmed up.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app.admission import EarlyAdmission
from app.dataplane import DataPlane
from app.devices import configure_devices
from app.docs import install_offline_docs
from app.drift import PredictionMonitor
from app.errors import install_error_handlers
from app.limits import BodySizeLimit
from app.monitoring import RequestMetricsMiddleware, ServingMetrics
from app.payload_log import DROP_REASONS, PayloadLog, PayloadLogMiddleware
from app.protocols import tfserving, v2
from app.repository import ModelRepository
from app.request_ids import HEADER as REQUEST_ID_HEADER
from app.request_ids import RequestIdMiddleware
from app.routes import admin, health, inference, models, monitoring, plots, ui
from app.security import require_admin, require_api_key
from app.settings import Settings
from app.tasks import cancel_and_wait
from app.tracing import TELEMETRY_OFF, StageTracingMiddleware, Tracing, hint_when_off

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

logger = logging.getLogger(__name__)

API_DESCRIPTION = """
Serves every image classifier in its model repository: the shipped **mnist-mlp** and
**mnist-lenet5** read handwritten digits, **pneumonia-cnn** tells a pneumonia chest
X-ray from a normal one (a teaching model, not a diagnostic tool), and models imported
with `python -m training import` are served the same way.

Upload images to `predict` or `probabilities`; upload labelled images to `evaluate`.
Every error is JSON: `{"error": "<message>", "code": "<code>", "request_id": "<id>"}`;
every answer carries its request id in the `X-Request-ID` header (send your own to use it).
"""


def create_app(
    settings: Settings | None = None, *, span_exporter: SpanExporter | None = None
) -> FastAPI:
    """Build the FastAPI app for `settings` (default: from `VISION_SERVING_*` variables).

    `span_exporter` receives the spans instead of the exporter `settings.tracing` names
    (tests: an in-memory one); tracing must be on for it.
    """
    settings = settings or Settings()
    if span_exporter is not None and settings.tracing == "off":
        raise ValueError("a span exporter needs tracing on: Settings(tracing='console')")
    tracing = Tracing(settings, span_exporter) if settings.tracing != "off" else None
    hint_when_off(settings, os.environ)
    # With several workers `python -m app` gives them a private folder in prometheus_client's
    # own variable, through which they share their counts.
    multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") if settings.workers > 1 else None
    metrics = ServingMetrics(multiprocess_dir=multiprocess_dir)
    payload_log = PayloadLog.from_settings(settings, metrics.count_payload_log_drop)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The outer try closes the payload log and tracing even when the start-up fails
        # (a destination that cannot be opened, devices, the repository): no writer
        # thread or open file outlives a failed start.
        try:
            if payload_log is not None:
                payload_log.start()  # first: a destination it cannot open stops the start-up
                metrics.watch_payload_log(DROP_REASONS)
            device = configure_devices(settings.device)
            repository = ModelRepository(settings, device, batch_observer=metrics.batch_observer)
            metrics.watch_repository(repository)
            drift_window = settings.drift_window
            predictions = PredictionMonitor(drift_window) if drift_window else None
            if predictions is not None:
                metrics.watch_predictions(repository, predictions)
            app.state.dataplane = DataPlane(repository, settings, metrics, predictions)
            keeping_in_sync = asyncio.create_task(
                _load_and_watch(repository, settings), name="keep-models-in-sync"
            )
            try:
                yield
            finally:
                await cancel_and_wait(keeping_in_sync)
                await repository.close()
                app.state.dataplane.close()
        finally:
            if payload_log is not None:  # time-bounded; joins the writer off the event loop
                await asyncio.to_thread(payload_log.close)
            if tracing is not None:  # last, so the spans of the drain go out too; time-bounded
                await tracing.shutdown()

    app = FastAPI(
        title="Vision model serving",
        version="0.1.0",
        description=API_DESCRIPTION,
        lifespan=lifespan,
        # FastAPI's own OpenTelemetry support makes the request spans (app.tracing)
        telemetry=tracing.fastapi_telemetry() if tracing is not None else TELEMETRY_OFF,
        docs_url=None,
        redoc_url=None,
        openapi_tags=[
            {"name": "inference", "description": "Upload images for predictions"},
            {"name": "models", "description": "What is served, model cards, recorded metrics"},
            {"name": "health", "description": "Liveness, readiness and Prometheus metrics"},
            {"name": "admin", "description": "Operator actions; need the API key"},
            tfserving.OPENAPI_TAG,
            v2.OPENAPI_TAG,
        ],
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.tracing = tracing
    app.state.payload_log = payload_log
    if payload_log is not None:  # not installed at all when off
        app.add_middleware(PayloadLogMiddleware, payload_log=payload_log)
    app.add_middleware(EarlyAdmission, settings=settings)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Inference-Header-Content-Length"],
            expose_headers=["Inference-Header-Content-Length", "Retry-After", REQUEST_ID_HEADER],
        )
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)  # counts 413s
    if tracing is not None:  # not installed at all when off; inside the request id's
        app.add_middleware(StageTracingMiddleware, tracing=tracing)
    app.add_middleware(RequestIdMiddleware)  # outermost: every answer and log line has the id
    install_error_handlers(app)
    install_offline_docs(app)
    protected = [Depends(require_api_key)]
    app.include_router(inference.router, dependencies=protected)
    app.include_router(models.router, dependencies=protected)
    app.include_router(plots.router, dependencies=protected)
    app.include_router(tfserving.router, dependencies=protected)
    app.include_router(v2.health_router)  # server metadata and probes stay open
    app.include_router(v2.router, dependencies=protected)
    app.include_router(admin.router, dependencies=[Depends(require_admin)])
    app.include_router(health.router)
    app.include_router(ui.router)
    app.include_router(monitoring.router)
    return app


async def _load_and_watch(repository: ModelRepository, settings: Settings) -> None:
    try:
        await repository.sync()
    except Exception:  # as on every later tick: the watch goes on and retries
        logger.exception("loading the model directory failed; it is read again at each rescan")
    # TensorFlow and the models leave ~360k long-lived objects that every full garbage
    # collection would walk (~0.3-0.6 s with the GIL held, a latency spike under load);
    # frozen, the collector skips them. Objects made later are collected as usual.
    gc.freeze()
    if settings.poll_interval_seconds > 0:
        await repository.watch(settings.poll_interval_seconds)
