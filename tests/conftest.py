"""Shared fixtures: the data folder, and the anyio backend for async tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Before pytest-timeout ends a hung test, print what its asyncio tasks were waiting for.
pytest_plugins = ["tests.hangdump"]

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_MODELS = REPO_ROOT / "models"
# Every model folder under models/: adding a model to the repository adds it to the tests.
SHIPPED_MODEL_NAMES = tuple(
    sorted(p.name for p in SHIPPED_MODELS.iterdir() if p.is_dir() and not p.name.startswith("."))
)


def shipped_version(model: str) -> Path:
    """The version folder of a shipped model that the service serves: the newest one."""
    versions = [p for p in (SHIPPED_MODELS / model).glob("*") if p.name.isdigit()]
    if not versions:
        pytest.fail(f"no shipped version of {model} under {SHIPPED_MODELS}")
    return max(versions, key=lambda p: int(p.name))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def data_dir() -> Path:
    """Real data for tests: $VISION_DATA_DIR, else ../shared/data beside the repo."""
    return Path(os.environ.get("VISION_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))


def require_data(relative: str) -> Path:
    """Path to a real data set; skip (fail in CI) when it is not on this machine."""
    path = data_dir() / relative
    if not path.exists():
        message = f"real data not found at {path}; set VISION_DATA_DIR to the data folder"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path
