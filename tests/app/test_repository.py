"""Model repository: version policy, hot reload under traffic, failed versions."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx
import pytest

from app.repository import ModelRepository
from tests.app.conftest import ServeFn
from tests.app.images import png
from tests.app.tiny_models import TINY_DIGITS, export_tiny_digits

pytestmark = pytest.mark.anyio

PREDICT = f"/api/v1/models/{TINY_DIGITS}/predict"


def repository_of(client: httpx.AsyncClient) -> ModelRepository:
    return client._transport.app.state.dataplane.repository  # type: ignore[attr-defined]


def add_version(model_dir: Path, version: int) -> None:
    """Export a version aside and rename it in, as training's atomic export does."""
    staging = model_dir / ".staging"
    export_tiny_digits(staging, version=version, seed=version)
    (staging / TINY_DIGITS / str(version)).rename(model_dir / TINY_DIGITS / str(version))
    shutil.rmtree(staging)


async def status_of(client: httpx.AsyncClient) -> dict:
    return (await client.get(f"/api/v1/models/{TINY_DIGITS}")).json()


async def test_hot_reload_under_traffic_drops_no_request(
    serve: ServeFn, model_dir_copy: Path
) -> None:
    async with serve(model_dir=model_dir_copy, poll_interval_seconds=0) as client:
        repository = repository_of(client)
        versions_seen: list[tuple[bool, int]] = []  # (sent after v2 took over, version)
        failures: list[str] = []
        stop = asyncio.Event()
        switched = asyncio.Event()

        async def steady_traffic() -> None:
            while not stop.is_set():
                after_switch = switched.is_set()
                response = await client.post(PREDICT, files={"files": ("d.png", png())})
                if response.status_code == 200:
                    versions_seen.append((after_switch, response.json()["version"]))
                else:
                    failures.append(response.text)

        streams = [asyncio.create_task(steady_traffic()) for _ in range(4)]
        await asyncio.sleep(0.3)
        add_version(model_dir_copy, 2)
        await repository.sync()
        switched.set()
        assert [v["version"] for v in (await status_of(client))["versions"]] == [2]
        await asyncio.sleep(0.3)
        shutil.rmtree(model_dir_copy / TINY_DIGITS / "1")
        await repository.sync()
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.gather(*streams)

    assert failures == []
    before = {version for after, version in versions_seen if not after}
    after = {version for after, version in versions_seen if after}
    assert 1 in before, "traffic was flowing to version 1 before the reload"
    assert after == {2}, "every request sent after the reload went to version 2"


async def test_a_corrupt_new_version_leaves_the_serving_one_in_place(
    serve: ServeFn, model_dir_copy: Path
) -> None:
    async with serve(model_dir=model_dir_copy, poll_interval_seconds=0) as client:
        corrupt = model_dir_copy / TINY_DIGITS / "3"
        shutil.copytree(model_dir_copy / TINY_DIGITS / "1", corrupt)
        (corrupt / "saved_model.pb").write_bytes(b"not a SavedModel")
        await repository_of(client).sync()
        served = await client.post(PREDICT, files={"files": ("d.png", png())})
        status = await status_of(client)
        ready = await client.get("/readyz")
    assert served.status_code == 200 and served.json()["version"] == 1
    assert status["version"] == 1 and status["status"] == "ready"
    by_version = {v["version"]: v for v in status["versions"]}
    assert by_version[3]["status"] == "failed"
    assert "saved_model" in by_version[3]["error"].lower() or by_version[3]["error"]
    assert ready.status_code == 200  # every model still has a version serving


async def test_a_fixed_failed_version_is_retried_when_its_files_change(
    serve: ServeFn, model_dir_copy: Path
) -> None:
    async with serve(model_dir=model_dir_copy, poll_interval_seconds=0) as client:
        broken = model_dir_copy / TINY_DIGITS / "2"
        broken.mkdir()
        (broken / "model_card.json").write_text("{}")
        await repository_of(client).sync()
        assert (await status_of(client))["version"] == 1
        shutil.rmtree(broken)
        add_version(model_dir_copy, 2)
        await repository_of(client).sync()
        assert (await status_of(client))["version"] == 2


async def test_startup_walks_back_from_a_corrupt_newest_version(
    serve: ServeFn, model_dir_copy: Path
) -> None:
    corrupt = model_dir_copy / TINY_DIGITS / "2"
    corrupt.mkdir()
    (corrupt / "model_card.json").write_text("{}")
    async with serve(model_dir=model_dir_copy) as client:
        status = await status_of(client)
    assert status["version"] == 1
    assert {v["version"]: v["status"] for v in status["versions"]} == {1: "ready", 2: "failed"}


async def test_policy_all_and_pinned_versions(serve: ServeFn, model_dir_copy: Path) -> None:
    add_version(model_dir_copy, 2)
    add_version(model_dir_copy, 3)
    async with serve(model_dir=model_dir_copy, version_policy="all") as client:
        everything = await status_of(client)
        pinned_v1 = await client.post(
            f"/api/v1/models/{TINY_DIGITS}/versions/1/predict", files={"files": ("d.png", png())}
        )
    async with serve(model_dir=model_dir_copy, pinned_versions={TINY_DIGITS: [1]}) as client:
        latest_plus_pinned = await status_of(client)
        latest = await client.post(PREDICT, files={"files": ("d.png", png())})
        missing = await client.post(
            f"/api/v1/models/{TINY_DIGITS}/versions/2/predict", files={"files": ("d.png", png())}
        )
    assert [v["version"] for v in everything["versions"]] == [1, 2, 3]
    assert pinned_v1.json()["version"] == 1
    assert [v["version"] for v in latest_plus_pinned["versions"]] == [1, 3]
    assert latest.json()["version"] == 3
    assert missing.status_code == 404


async def test_the_watcher_picks_up_a_new_version_by_itself(
    serve: ServeFn, model_dir_copy: Path
) -> None:
    async with serve(model_dir=model_dir_copy, poll_interval_seconds=0.05) as client:
        add_version(model_dir_copy, 2)
        for _ in range(200):
            if (await status_of(client))["version"] == 2:
                break
            await asyncio.sleep(0.05)
        assert (await status_of(client))["version"] == 2


async def test_a_removed_model_disappears(serve: ServeFn, model_dir_copy: Path) -> None:
    async with serve(model_dir=model_dir_copy, poll_interval_seconds=0) as client:
        shutil.rmtree(model_dir_copy / TINY_DIGITS)
        await repository_of(client).sync()
        response = await client.get(f"/api/v1/models/{TINY_DIGITS}")
        names = [m["name"] for m in (await client.get("/api/v1/models")).json()["models"]]
    assert response.status_code == 404
    assert names == ["tiny-xray"]
