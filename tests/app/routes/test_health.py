"""/healthz and /readyz."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.app.conftest import ServeFn

pytestmark = pytest.mark.anyio


async def test_healthz_and_readyz_when_every_model_serves(serve: ServeFn) -> None:
    async with serve() as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "reasons": []}


async def test_readyz_is_503_with_the_reason_when_a_model_failed(
    serve: ServeFn, model_dir_copy: Path
) -> None:
    (model_dir_copy / "tiny-xray" / "1" / "saved_model.pb").write_bytes(b"corrupt")
    async with serve(model_dir=model_dir_copy) as client:
        ready = await client.get("/readyz")
        assert (await client.get("/healthz")).status_code == 200
    assert ready.status_code == 503
    assert ready.json()["ready"] is False
    assert any("tiny-xray" in reason for reason in ready.json()["reasons"])


async def test_readyz_is_503_when_the_model_dir_is_empty(serve: ServeFn, tmp_path: Path) -> None:
    async with serve(model_dir=tmp_path) as client:
        ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert "no models found" in ready.json()["reasons"][0]
