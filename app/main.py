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

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app.admission import EarlyAdmission
from app.dataplane import DataPlane
from app.devices import configure_devices
from app.docs import install_offline_docs
from app.errors import install_error_handlers
from app.limits import BodySizeLimit
from app.monitoring import RequestMetricsMiddleware, ServingMetrics
from app.protocols import tfserving, v2
from app.repository import ModelRepository
from app.routes import admin, health, inference, models, monitoring, plots, ui
from app.security import require_admin, require_api_key
from app.settings import Settings
from app.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

API_DESCRIPTION = """
Serves two TensorFlow vision models from a model repository:
**mnist-mlp** reads handwritten digits, **pneumonia-cnn** tells a pneumonia chest
X-ray from a normal one (a teaching model, not a diagnostic tool).

Upload images to `predict` or `probabilities`; upload labelled images to `evaluate`.
Every error is JSON: `{"error": "<message>", "code": "<code>"}`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the FastAPI app for `settings` (default: from `VISION_SERVING_*` variables)."""
    settings = settings or Settings()
    # With several workers `python -m app` gives them a private folder in prometheus_client's
    # own variable, through which they share their counts.
    multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") if settings.workers > 1 else None
    metrics = ServingMetrics(multiprocess_dir=multiprocess_dir)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        device = configure_devices(settings.device)
        repository = ModelRepository(settings, device, batch_observer=metrics.batch_observer)
        metrics.watch_repository(repository)
        app.state.dataplane = DataPlane(repository, settings, metrics)
        keeping_in_sync = asyncio.create_task(
            _load_and_watch(repository, settings), name="keep-models-in-sync"
        )
        try:
            yield
        finally:
            await cancel_and_wait(keeping_in_sync)
            await repository.close()
            app.state.dataplane.close()

    app = FastAPI(
        title="Vision model serving",
        version="0.1.0",
        description=API_DESCRIPTION,
        lifespan=lifespan,
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
    app.add_middleware(EarlyAdmission, settings=settings)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Inference-Header-Content-Length"],
            expose_headers=["Inference-Header-Content-Length", "Retry-After"],
        )
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)  # outermost: counts 413s
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
