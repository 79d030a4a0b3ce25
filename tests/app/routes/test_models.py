"""Model listing, model cards and recorded evaluations."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.contract.model_card import ModelCard
from tests.app.conftest import ServeFn

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
