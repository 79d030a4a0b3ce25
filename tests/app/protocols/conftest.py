"""Apps shared by a whole test module: protocol tests send many small requests each."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.dataplane import DataPlane
from app.main import create_app
from app.settings import Settings
from tests.app.tiny_models import TINY_DIGITS, copy_with_operating_point, export_tiny_digits


@dataclass
class Served:
    """An in-process client, and the data plane behind it to compare answers with."""

    client: httpx.AsyncClient
    dataplane: DataPlane


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[Served]:
    app: FastAPI = create_app(settings)
    async with app.router.lifespan_context(app):
        dataplane: DataPlane = app.state.dataplane
        await dataplane.repository.loaded.wait()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Served(client, dataplane)


@pytest.fixture(scope="module")
async def served(tiny_model_dir: Path) -> AsyncIterator[Served]:
    """`tiny-digits/1` and `tiny-xray/1`, all ready."""
    async with serving(Settings(model_dir=tiny_model_dir)) as app:
        yield app


@pytest.fixture(scope="module")
async def mixed(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Served]:
    """Every version served: `tiny-digits` 1 and 2 ready and 3 failed (no files), plus a
    model folder with no versions, so the server is not ready."""
    model_dir = tmp_path_factory.mktemp("mixed") / "models"
    shutil.copytree(tiny_model_dir, model_dir)
    export_tiny_digits(model_dir, version=2, seed=3)
    (model_dir / TINY_DIGITS / "3").mkdir()
    (model_dir / "empty-model").mkdir()
    async with serving(Settings(model_dir=model_dir, version_policy="all")) as app:
        yield app


THRESHOLDED_XRAY = "tiny-xray-threshold"
XRAY_THRESHOLD = 0.2
"""`THRESHOLDED_XRAY` labels PNEUMONIA from P(PNEUMONIA) >= 0.2; the untrained tiny X-ray
model gives flat gray pictures 0.3..0.45, so argmax says NORMAL where the threshold does not."""


@pytest.fixture(scope="module")
async def thresholded(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Served]:
    """`tiny-xray` (argmax) and `tiny-xray-threshold`, the same model with an operating point."""
    model_dir = tmp_path_factory.mktemp("thresholded") / "models"
    shutil.copytree(tiny_model_dir, model_dir)
    copy_with_operating_point(model_dir, "tiny-xray", THRESHOLDED_XRAY, XRAY_THRESHOLD, "PNEUMONIA")
    async with serving(Settings(model_dir=model_dir)) as app:
        yield app
