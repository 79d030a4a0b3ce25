"""App fixtures: a model folder of tiny exported models and in-process clients."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.main import create_app
from app.settings import Settings
from tests.app.tiny_models import export_tiny_digits, export_tiny_xray
from tests.conftest import REPO_ROOT

SHIPPED_MODELS = REPO_ROOT / "models"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository with `tiny-digits/1` and `tiny-xray/1`; do not modify it."""
    model_dir = tmp_path_factory.mktemp("models")
    export_tiny_digits(model_dir)
    export_tiny_xray(model_dir)
    return model_dir


@pytest.fixture
def model_dir_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny repository that a test may change."""
    target = tmp_path / "models"
    shutil.copytree(tiny_model_dir, target)
    return target


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan, wait for model loading, and yield an in-process client."""
    app: FastAPI = create_app(settings)
    async with app.router.lifespan_context(app):
        await app.state.dataplane.repository.loaded.wait()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


ServeFn = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture(scope="session")
def runtime_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LiteRT conversions made at load go here, never into the user's own cache."""
    return tmp_path_factory.mktemp("runtime-cache")


@pytest.fixture
def serve(tiny_model_dir: Path, runtime_cache_dir: Path) -> ServeFn:
    """`async with serve(**setting_overrides) as client:`; tiny models by default."""

    def start(**overrides: object) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        values: dict[str, object] = {
            "model_dir": tiny_model_dir,
            "runtime_cache_dir": runtime_cache_dir,
            **overrides,
        }
        return serving(Settings(**values))  # type: ignore[arg-type]

    return start
