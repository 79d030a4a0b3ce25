"""Model repository: version policy, hot reload under traffic, failed versions."""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

import httpx
import pytest

from app.devices import CPU
from app.repository import ModelRepository
from app.settings import Settings
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
                # In-process, a request the model answers inline never suspends; a real
                # client waits on its socket here and lets the reload run.
                await asyncio.sleep(0)

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


# Operator messages -----------------------------------------------------------------


def repository_for(model_dir: Path) -> ModelRepository:
    """A repository without the app around it, for what a scan of `model_dir` finds."""
    return ModelRepository(Settings(model_dir=model_dir, poll_interval_seconds=0), CPU)


def logged(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


async def test_an_empty_model_directory_is_explained_once_per_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    empty = tmp_path / "models"
    empty.mkdir()
    repository = repository_for(empty)
    with caplog.at_level(logging.WARNING, logger="app.repository"):
        for _ in range(3):  # start-up, then two watch ticks
            await repository.sync()
        once = logged(caplog, "no models found")
        (empty / "not-a-model-yet").mkdir()  # the state changes, and changes back
        await repository.sync()
        (empty / "not-a-model-yet").rmdir()
        await repository.sync()
        twice = logged(caplog, "no models found")
    assert len(once) == 1
    assert f"{empty}/<name>/<version>/saved_model.pb and model_card.json" in once[0]
    assert "VISION_SERVING_MODEL_DIR" in once[0] and "--model-dir" in once[0]
    assert repository.not_ready_reasons() == once  # /readyz says the same
    assert len(twice) == 2


@pytest.mark.parametrize(
    ("too_deep", "says"),
    [
        (TINY_DIGITS, "looks like one model's folder (it holds version folders 1); "),
        (f"{TINY_DIGITS}/1", "looks like a version folder (it holds saved_model.pb); "),
    ],
)
async def test_a_model_directory_too_deep_names_the_folder_to_use(
    tiny_model_dir: Path, too_deep: str, says: str, caplog: pytest.LogCaptureFixture
) -> None:
    repository = repository_for(tiny_model_dir / too_deep)
    with caplog.at_level(logging.WARNING, logger="app.repository"):
        await repository.sync()
    assert repository.names() == []  # no bogus model named "1" (or "variables")
    [reason] = repository.not_ready_reasons()
    assert reason.startswith(f"{tiny_model_dir / too_deep} {says}")
    assert reason.endswith(f", {tiny_model_dir}")
    assert logged(caplog, says) == [reason]


async def test_a_model_directory_holding_a_saved_model_itself_says_where_it_goes(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    export = tmp_path / "export"  # an unversioned export, not named like a version
    shutil.copytree(tiny_model_dir / TINY_DIGITS / "1", export)
    repository = repository_for(export)
    await repository.sync()
    assert repository.names() == []
    [reason] = repository.not_ready_reasons()
    assert reason.startswith(f"{export} holds saved_model.pb itself, not model folders: ")
    assert f"move its files into {export}/<name>/1/" in reason


async def test_version_folders_beside_model_folders_are_not_served_as_models(
    model_dir_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shutil.copytree(model_dir_copy / TINY_DIGITS / "1", model_dir_copy / "1")
    repository = repository_for(model_dir_copy)
    with caplog.at_level(logging.WARNING, logger="app.repository"):
        await repository.sync()
    names = repository.names()
    await repository.close()
    assert names == [TINY_DIGITS, "tiny-xray"]
    [warning] = logged(caplog, "version folders 1 lie directly in the model directory")
    assert warning.endswith(f"move them into a model folder, {model_dir_copy}/<name>/")


async def test_a_version_folder_copied_to_a_new_number_serves_as_that_number(
    serve: ServeFn, model_dir_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # TF Serving's roll-out: copy a version folder to the next number; its card says 1.
    shutil.copytree(model_dir_copy / TINY_DIGITS / "1", model_dir_copy / TINY_DIGITS / "3")
    with caplog.at_level(logging.INFO, logger="app.repository"):
        async with serve(model_dir=model_dir_copy) as client:
            predicted = await client.post(PREDICT, files={"files": ("d.png", png())})
            status = await status_of(client)
            tfserving = (await client.get(f"/v1/models/{TINY_DIGITS}/metadata")).json()
            v2 = (await client.get(f"/v2/models/{TINY_DIGITS}")).json()
            metrics = (await client.get("/metrics")).text
    assert predicted.status_code == 200 and predicted.json()["version"] == 3
    assert status["version"] == 3 and status["card"]["version"] == 3
    versions = [(v["version"], v["status"], v["card_version"]) for v in status["versions"]]
    assert versions == [(3, "ready", 1)]
    assert tfserving["model_spec"]["version"] == "3"
    assert v2["versions"] == ["3"]
    assert 'api="native",model="tiny-digits",status="200",version="3"' in metrics
    assert logged(caplog, "its model card records tiny-digits version 1")


async def test_a_copied_model_folder_serves_under_its_own_name(
    serve: ServeFn, model_dir_copy: Path
) -> None:
    shutil.copytree(model_dir_copy / TINY_DIGITS, model_dir_copy / "copied-digits")
    async with serve(model_dir=model_dir_copy) as client:
        predicted = await client.post(
            "/api/v1/models/copied-digits/predict", files={"files": ("d.png", png())}
        )
        status = (await client.get("/api/v1/models/copied-digits")).json()
    assert predicted.status_code == 200 and predicted.json()["model"] == "copied-digits"
    assert status["card"]["name"] == "copied-digits"
    assert [(v["version"], v["card_name"]) for v in status["versions"]] == [(1, TINY_DIGITS)]


async def test_a_version_on_disk_but_not_served_names_the_policy_and_the_fix(
    serve: ServeFn, model_dir_copy: Path
) -> None:
    add_version(model_dir_copy, 2)
    pixels = {"name": "pixels", "shape": [1, 28, 28, 1], "datatype": "FP32", "data": [0] * 784}
    async with serve(model_dir=model_dir_copy) as client:
        answers = {
            "native": await client.post(
                f"/api/v1/models/{TINY_DIGITS}/versions/1/predict",
                files={"files": ("d.png", png())},
            ),
            "tfserving": await client.post(
                f"/v1/models/{TINY_DIGITS}/versions/1:predict", json={"instances": [[0]]}
            ),
            "v2": await client.post(
                f"/v2/models/{TINY_DIGITS}/versions/1/infer", json={"inputs": [pixels]}
            ),
        }
        absent = await client.post(
            f"/api/v1/models/{TINY_DIGITS}/versions/7/predict", files={"files": ("d.png", png())}
        )
    for api, answer in answers.items():
        assert answer.status_code == 404, api
        message = answer.json()["error"]
        assert f"model '{TINY_DIGITS}' version 1 is on disk but not served: " in message, api
        assert "the version policy is 'latest', which serves only the newest" in message, api
        assert "(2)" in message, api
        assert """VISION_SERVING_PINNED_VERSIONS='{"tiny-digits": [1]}'""" in message, api
        assert "VISION_SERVING_VERSION_POLICY=all" in message, api
    assert answers["native"].json()["code"] == "model_not_found"
    assert absent.status_code == 404
    assert f"{model_dir_copy / TINY_DIGITS / '7'}" in absent.json()["error"]
    assert "versions on disk: 1, 2" in absent.json()["error"]


async def test_load_errors_name_files_as_text_and_say_what_to_do(
    serve: ServeFn, model_dir_copy: Path
) -> None:
    add_version(model_dir_copy, 2)
    corrupt = model_dir_copy / TINY_DIGITS / "2" / "saved_model.pb"
    corrupt.write_bytes(b"not a SavedModel")
    missing = model_dir_copy / "tiny-xray" / "1" / "variables" / "variables.index"
    missing.unlink()
    async with serve(model_dir=model_dir_copy, version_policy="all") as client:
        listed = (await client.get("/api/v1/models")).json()["models"]
    errors = {(m["name"], v["version"]): v["error"] for m in listed for v in m["versions"]}
    corrupt_error = errors[(TINY_DIGITS, 2)]
    assert "b'" not in corrupt_error and str(corrupt) in corrupt_error
    assert "re-export it" in corrupt_error
    missing_error = errors[("tiny-xray", 1)]
    assert missing_error.startswith(f"missing file: {missing}; the SavedModel is incomplete")
    assert "re-export it" in missing_error


async def test_an_unreadable_model_directory_is_reported_and_read_again_later(
    serve: ServeFn, model_dir_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first sync that fails (permissions, a share gone away) used to end the watcher
    silently: /readyz said "still loading" for ever and nothing was read again."""
    real_iterdir = Path.iterdir
    readable = asyncio.Event()

    def iterdir(path: Path):  # type: ignore[no-untyped-def]
        if path == model_dir_copy and not readable.is_set():
            raise PermissionError(13, "Permission denied", str(path))
        return real_iterdir(path)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    async with serve(model_dir=model_dir_copy, poll_interval_seconds=0.05) as client:
        ready = await client.get("/readyz")
        readable.set()
        for _ in range(200):
            if (await client.get("/readyz")).status_code == 200:
                break
            await asyncio.sleep(0.05)
        recovered = await client.get("/readyz")
    assert ready.status_code == 503
    assert "cannot be read (Permission denied)" in ready.text
    assert "read access" in ready.text
    assert recovered.status_code == 200, recovered.text


async def test_a_version_found_but_not_loaded_yet_is_a_503_to_retry(
    serve: ServeFn, model_dir_copy: Path
) -> None:
    """Clients retry 503s, not 404s: a version a sync has found but not loaded yet (it is
    loading another first) must not look gone."""
    async with serve(model_dir=model_dir_copy, poll_interval_seconds=0) as client:
        add_version(model_dir_copy, 2)
        repository_of(client)._scan()  # what a sync sees before it loads version 2
        response = await client.post(
            f"/api/v1/models/{TINY_DIGITS}/versions/2/predict", files={"files": ("d.png", png())}
        )
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "model_not_ready"
    assert "not loaded yet" in response.json()["error"]


async def test_a_new_model_being_staged_does_not_make_the_server_unready(
    model_dir_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`training` stages a new model's first version in `<name>/.tmp-*`: while it does, the
    model is not there yet, not a broken model; an empty model folder is still reported."""
    (model_dir_copy / "new-model" / ".tmp-0123").mkdir(parents=True)
    (model_dir_copy / "new-model" / ".tmp-0123" / "saved_model.pb").write_bytes(b"half")
    (model_dir_copy / "empty-model").mkdir()
    repository = repository_for(model_dir_copy)
    with caplog.at_level(logging.WARNING, logger="app.repository"):
        await repository.sync()
    reasons = repository.not_ready_reasons()
    names = repository.names()
    await repository.close()
    assert "new-model" not in names and "empty-model" in names
    assert not [reason for reason in reasons if "new-model" in reason]
    assert [reason for reason in reasons if "empty-model" in reason]
    assert not logged(caplog, "new-model")
