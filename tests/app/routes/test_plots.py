"""Training plots served from the served version's folder, and nothing outside it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.contract.model_card import ModelCard
from tests.app.conftest import ServeFn
from tests.app.images import encode

pytestmark = pytest.mark.anyio

PLOTS = "/api/v1/models/tiny-digits/plots"
VERSIONED = "/api/v1/models/tiny-digits/versions/1/plots"


def png_bytes(value: int) -> bytes:
    return encode(np.full((4, 6), value, dtype=np.uint8))


def set_artifacts(version_dir: Path, artifacts: dict[str, str]) -> None:
    card = ModelCard.read(version_dir)
    card.model_copy(update={"artifacts": artifacts}).write(version_dir)


@pytest.fixture
def with_plots(model_dir_copy: Path) -> Path:
    """tiny-digits/1 with a training, a confusion and a reliability plot named in its card."""
    version_dir = model_dir_copy / "tiny-digits" / "1"
    (version_dir / "training.png").write_bytes(png_bytes(10))
    (version_dir / "confusion.png").write_bytes(png_bytes(20))
    (version_dir / "reliability.png").write_bytes(png_bytes(30))
    set_artifacts(
        version_dir,
        {
            "training_plot": "training.png",
            "confusion_plot": "confusion.png",
            "reliability_plot": "reliability.png",
        },
    )
    return model_dir_copy


@pytest.mark.parametrize("plot, value", [("training", 10), ("confusion", 20), ("reliability", 30)])
async def test_plots_are_served_as_png(
    serve: ServeFn, with_plots: Path, plot: str, value: int
) -> None:
    async with serve(model_dir=with_plots) as client:
        latest = await client.get(f"{PLOTS}/{plot}.png")
        pinned = await client.get(f"{VERSIONED}/{plot}.png")
    for response in (latest, pinned):
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"
        assert response.content == png_bytes(value)


async def test_tiny_models_have_no_plots_and_say_so(serve: ServeFn) -> None:
    async with serve() as client:
        response = await client.get(f"{PLOTS}/training.png")
    assert response.status_code == 404
    body = response.json()
    assert body["code"] == "artifact_not_found"
    assert "training plot" in body["error"]


async def test_a_plot_named_in_the_card_but_missing_on_disk_is_404(
    serve: ServeFn, with_plots: Path
) -> None:
    (with_plots / "tiny-digits" / "1" / "confusion.png").unlink()
    async with serve(model_dir=with_plots) as client:
        response = await client.get(f"{PLOTS}/confusion.png")
    assert response.status_code == 404
    assert response.json()["code"] == "artifact_not_found"


@pytest.mark.parametrize(
    "path, code",
    [
        ("/api/v1/models/nope/plots/training.png", "model_not_found"),
        ("/api/v1/models/tiny-digits/versions/9/plots/training.png", "model_not_found"),
        (f"{PLOTS}/weights.png", "artifact_not_found"),
        (f"{PLOTS}/training_plot.png", "artifact_not_found"),
        (f"{PLOTS}/training.jpg", "not_found"),
        (f"{PLOTS}/..%2F..%2Fmodel_card.json", "not_found"),
    ],
)
async def test_unknown_models_versions_and_plots_are_404(
    serve: ServeFn, with_plots: Path, path: str, code: str
) -> None:
    async with serve(model_dir=with_plots) as client:
        response = await client.get(path)
    assert response.status_code == 404
    assert response.json()["code"] == code


@pytest.mark.parametrize(
    "entry",
    ["../../secret.png", "{secret}", "link.png", "card.png", "model_card.json", "variables"],
)
async def test_card_entries_pointing_outside_the_version_folder_are_not_served(
    serve: ServeFn, model_dir_copy: Path, tmp_path: Path, entry: str
) -> None:
    version_dir = model_dir_copy / "tiny-digits" / "1"
    secret = model_dir_copy / "secret.png"
    secret.write_bytes(png_bytes(99))
    elsewhere = tmp_path / "elsewhere.png"
    elsewhere.write_bytes(png_bytes(98))
    (version_dir / "link.png").symlink_to(elsewhere)  # a symlink out of the folder
    (version_dir / "card.png").symlink_to(version_dir / "model_card.json")  # not a PNG
    set_artifacts(version_dir, {"training_plot": entry.format(secret=secret)})
    async with serve(model_dir=model_dir_copy) as client:
        response = await client.get(f"{PLOTS}/training.png")
    assert response.status_code == 404
    assert response.json()["code"] == "artifact_not_found"


async def test_plots_need_the_api_key_when_one_is_set(serve: ServeFn, with_plots: Path) -> None:
    async with serve(model_dir=with_plots, api_key="secret") as client:
        without = await client.get(f"{PLOTS}/training.png")
        with_key = await client.get(
            f"{PLOTS}/training.png", headers={"Authorization": "Bearer secret"}
        )
    assert without.status_code == 401
    assert with_key.status_code == 200


async def test_plot_endpoints_are_documented_as_png(serve: ServeFn) -> None:
    async with serve() as client:
        paths = (await client.get("/openapi.json")).json()["paths"]
    for path in (
        "/api/v1/models/{name}/plots/{plot}.png",
        "/api/v1/models/{name}/versions/{version}/plots/{plot}.png",
    ):
        operation = paths[path]["get"]
        assert operation["tags"] == ["models"]
        assert operation["summary"]
        assert "image/png" in operation["responses"]["200"]["content"]
        assert "404" in operation["responses"]
