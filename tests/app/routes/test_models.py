"""Model listing, model cards and recorded evaluations."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.contract.model_card import LITERT_MODEL_FILENAME, ModelCard
from tests.app.conftest import ServeFn
from tests.app.images import png
from tests.app.tiny_models import TINY_DIGITS, give_foreign_litert_model, mark_as_imported

pytestmark = pytest.mark.anyio


async def test_list_models_shows_status_device_classes_and_input(serve: ServeFn) -> None:
    async with serve() as client:
        response = await client.get("/api/v1/models")
    assert response.status_code == 200
    models = {m["name"]: m for m in response.json()["models"]}
    assert set(models) == {"tiny-digits", "tiny-xray"}
    digits = models["tiny-digits"]
    assert digits["status"] == "ready"
    assert digits["version"] == 1
    assert [(v["version"], v["status"]) for v in digits["versions"]] == [(1, "ready")]
    assert digits["versions"][0]["ready_seconds"] > 0
    recorded = digits["versions"][0]
    assert (recorded["card_name"], recorded["card_version"]) == ("tiny-digits", 1)
    assert digits["device"] == "cpu"
    assert digits["runtime"] == digits["versions"][0]["runtime"]
    assert (digits["runtime"]["name"], digits["runtime"]["source"]) == ("litert", "export")
    assert digits["class_names"] == [str(d) for d in range(10)]
    assert digits["input"]["height"] == 28 and digits["input"]["channels"] == 1


async def test_model_detail_carries_the_whole_card(serve: ServeFn, tiny_model_dir: Path) -> None:
    async with serve() as client:
        response = await client.get("/api/v1/models/tiny-xray")
    assert response.status_code == 200
    served = ModelCard.model_validate(response.json()["card"])
    assert served == ModelCard.read(tiny_model_dir / "tiny-xray" / "1")
    assert response.json()["status"] == "ready"


async def test_evaluation_is_the_one_in_the_card(serve: ServeFn, tiny_model_dir: Path) -> None:
    async with serve() as client:
        response = await client.get("/api/v1/models/tiny-digits/evaluation")
    card = ModelCard.read(tiny_model_dir / "tiny-digits" / "1")
    assert response.json() == card.evaluation.model_dump(mode="json")


async def test_unknown_model_is_404_naming_the_served_ones(serve: ServeFn) -> None:
    async with serve() as client:
        for path in ("/api/v1/models/nope", "/api/v1/models/nope/evaluation"):
            response = await client.get(path)
            assert response.status_code == 404
            body = response.json()
            assert body["code"] == "model_not_found"
            assert "tiny-digits" in body["error"]


async def test_a_failed_model_is_listed_with_its_error(
    serve: ServeFn, model_dir_copy: Path
) -> None:
    (model_dir_copy / "tiny-xray" / "1" / "model_card.json").write_text("{not json")
    async with serve(model_dir=model_dir_copy) as client:
        models = {m["name"]: m for m in (await client.get("/api/v1/models")).json()["models"]}
        evaluation = await client.get("/api/v1/models/tiny-xray/evaluation")
    assert models["tiny-xray"]["status"] == "failed"
    assert "model_card" in models["tiny-xray"]["error"] or "JSON" in models["tiny-xray"]["error"]
    assert models["tiny-digits"]["status"] == "ready"
    assert evaluation.status_code == 503


async def test_an_empty_model_list_says_why(serve: ServeFn, tiny_model_dir: Path) -> None:
    one_model = tiny_model_dir / "tiny-digits"  # one level too deep
    async with serve(model_dir=one_model) as client:
        listed = (await client.get("/api/v1/models")).json()
        ready = await client.get("/readyz")
    assert listed["models"] == []
    assert listed["error"].startswith(f"{one_model} looks like one model's folder")
    assert ready.status_code == 503 and ready.json()["reasons"] == [listed["error"]]


async def test_status_says_which_runtime_serves_each_version_and_why(
    serve: ServeFn, model_dir_copy: Path, tmp_path: Path
) -> None:
    give_foreign_litert_model(model_dir_copy / TINY_DIGITS / "1")
    (model_dir_copy / "tiny-xray" / "1" / LITERT_MODEL_FILENAME).unlink()
    cache = tmp_path / "cache"
    async with serve(model_dir=model_dir_copy, runtime_cache_dir=cache) as client:
        models = {m["name"]: m for m in (await client.get("/api/v1/models")).json()["models"]}
        detail = (await client.get(f"/api/v1/models/{TINY_DIGITS}")).json()
    digits, xray = models[TINY_DIGITS]["runtime"], models["tiny-xray"]["runtime"]
    assert detail["runtime"] == digits == models[TINY_DIGITS]["versions"][0]["runtime"]
    assert (digits["name"], digits["source"]) == ("litert", "converted at load")
    assert digits["reason"].startswith(
        "model.tflite from the export is not used: LiteRT output differs from the SavedModel's"
    )
    assert (xray["name"], xray["source"]) == ("litert", "converted at load")
    assert xray["reason"].startswith("model.tflite missing")
    assert str(cache) in digits["reason"] and str(cache) in xray["reason"]
    assert len(list(cache.iterdir())) == 2


async def test_status_shows_the_saved_model_serving_when_litert_cannot(
    serve: ServeFn, model_dir_copy: Path, tmp_path: Path
) -> None:
    (model_dir_copy / TINY_DIGITS / "1" / LITERT_MODEL_FILENAME).unlink()
    unwritable = tmp_path / "a-file"
    unwritable.write_text("not a folder")
    async with serve(model_dir=model_dir_copy, runtime_cache_dir=unwritable) as client:
        status = (await client.get(f"/api/v1/models/{TINY_DIGITS}")).json()
        answer = await client.post(
            f"/api/v1/models/{TINY_DIGITS}/predict", files={"files": ("d.png", png())}
        )
    assert status["status"] == "ready" and answer.status_code == 200
    assert status["runtime"]["name"] == "savedmodel" and status["runtime"]["source"] is None
    assert "cannot write a conversion into the cache folder" in status["runtime"]["reason"]
    assert status["runtime"]["reason"].endswith("serving the SavedModel")


async def test_status_says_how_large_a_batch_runs_inline(serve: ServeFn) -> None:
    # The tiny model on LiteRT costs microseconds a batch: warm-up finds it cheaper than
    # the thread hop. With the limit at 0 nothing runs inline.
    async with serve() as client:
        default = (await client.get(f"/api/v1/models/{TINY_DIGITS}")).json()["runtime"]
    async with serve(inline_max_us=0) as client:
        never = (await client.get(f"/api/v1/models/{TINY_DIGITS}")).json()["runtime"]
    assert default["inline_max_images"] >= 1
    assert never["inline_max_images"] == 0


async def test_detail_shows_the_served_versions_recent_predictions(serve: ServeFn) -> None:
    async with serve() as client:
        picture = {"files": ("d.png", png())}
        assert (
            await client.post(f"/api/v1/models/{TINY_DIGITS}/predict", files=picture)
        ).is_success
        detail = (await client.get(f"/api/v1/models/{TINY_DIGITS}")).json()
        listed = (await client.get("/api/v1/models")).json()["models"]
    recent = detail["recent_predictions"]
    assert (recent["count"], recent["window_size"]) == (1, 1000)
    assert recent["status"] == "no_reference" and recent["scores"] is None
    assert recent["window"]["class_mix"].keys() == set(detail["class_names"])
    assert all("recent_predictions" not in model for model in listed)  # the detail API's alone


async def test_an_imported_model_without_evaluation_is_served_and_says_so(
    serve: ServeFn, model_dir_copy: Path
) -> None:
    version_dir = model_dir_copy / TINY_DIGITS / "1"
    mark_as_imported(version_dir)
    ModelCard.read(version_dir)  # what was written is a valid card
    async with serve(model_dir=model_dir_copy) as client:
        detail = (await client.get(f"/api/v1/models/{TINY_DIGITS}")).json()
        evaluation = await client.get(f"/api/v1/models/{TINY_DIGITS}/evaluation")
        answer = await client.post(
            f"/api/v1/models/{TINY_DIGITS}/predict", files={"files": ("d.png", png())}
        )
    assert detail["status"] == "ready" and answer.status_code == 200
    assert detail["card"]["training"] is None and detail["card"]["evaluation"] is None
    assert detail["card"]["imported"]["source"] == "digits.keras"
    assert evaluation.status_code == 404
    assert evaluation.json()["code"] == "artifact_not_found"
    assert evaluation.json()["error"] == (
        f"model '{TINY_DIGITS}' version 1 has no recorded evaluation: it was imported from "
        "digits.keras without labelled data; import it again with --evaluate-on DIR (one "
        "folder of images per class) to record one"
    )
