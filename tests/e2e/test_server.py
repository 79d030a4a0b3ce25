"""Every native endpoint against the real server (uvicorn subprocess, shipped models)."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.app.images import encode
from tests.app.tiny_models import export_tiny_digits
from tests.conftest import SHIPPED_MODEL_NAMES
from tests.e2e.conftest import LiveServer, start_server, stop_server

DIGIT = "/api/v1/models/mnist-mlp"
XRAY = "/api/v1/models/pneumonia-cnn"


def seven() -> bytes:
    """A hand-drawn-looking 7: a bar and a diagonal, white on black."""
    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[6:9, 7:21] = 255
    for row in range(9, 23):
        col = 20 - (row - 9) // 2
        pixels[row, col - 1 : col + 2] = 255
    return encode(pixels)


def test_health_and_readiness(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"ready": True, "reasons": []}


def test_models_are_listed_ready_on_cpu(client: httpx.Client) -> None:
    models = {m["name"]: m for m in client.get("/api/v1/models").json()["models"]}
    assert set(models) == set(SHIPPED_MODEL_NAMES)
    for model in models.values():
        assert model["status"] == "ready"
        assert model["device"] == "cpu"
        assert model["version"] >= 1
    assert models["pneumonia-cnn"]["class_names"] == ["NORMAL", "PNEUMONIA"]


def test_model_detail_and_recorded_evaluation(client: httpx.Client) -> None:
    detail = client.get(XRAY).json()
    assert detail["card"]["name"] == "pneumonia-cnn"
    assert "not a diagnostic tool" in detail["card"]["limitations"]
    evaluation = client.get(f"{XRAY}/evaluation").json()
    assert evaluation == detail["card"]["evaluation"]
    assert evaluation["roc_auc"] is not None


def test_predict_probabilities_and_pinned_version(client: httpx.Client) -> None:
    upload = {"files": ("seven.png", seven(), "image/png")}
    predicted = client.post(f"{DIGIT}/predict", files=upload, params={"top_k": 3}).json()
    assert predicted["predictions"][0]["label"] == "7"
    assert len(predicted["predictions"][0]["top_k"]) == 3
    version = predicted["version"]
    pinned = client.post(f"{DIGIT}/versions/{version}/probabilities", files=upload).json()
    probabilities = pinned["results"][0]["probabilities"]
    assert max(probabilities, key=probabilities.__getitem__) == "7"
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_evaluate_with_an_archive_and_with_labels(client: httpx.Client) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("digits/7/a.png", seven())
        archive.writestr("digits/7/b.png", seven())
    by_archive = client.post(
        f"{DIGIT}/evaluate", files={"archive": ("d.zip", buffer.getvalue(), "application/zip")}
    ).json()
    assert by_archive["count"] == 2
    assert by_archive["accuracy"] == 1.0
    by_labels = client.post(
        f"{DIGIT}/evaluate",
        files=[("files", ("a.png", seven(), "image/png"))],
        data={"labels": "7"},
        params={"include_predictions": "true"},
    ).json()
    assert by_labels["predictions"][0]["correct"] is True


def test_errors_have_the_documented_shape(client: httpx.Client) -> None:
    cases = [
        (client.get("/api/v1/models/nope"), 404, "model_not_found"),
        (
            client.post(f"{DIGIT}/versions/999/predict", files={"files": ("a.png", seven())}),
            404,
            "model_not_found",
        ),
        (
            client.post(
                f"{DIGIT}/predict", files={"files": ("a.png", b"plain text", "text/plain")}
            ),
            415,
            "unsupported_media_type",
        ),
        (
            client.post(f"{DIGIT}/predict", files={"files": ("a.png", seven()[:50], "image/png")}),
            422,
            "invalid_image",
        ),
        (
            client.post(
                f"{DIGIT}/predict",
                content=b"\0" * 40_000_000,
                headers={"Content-Type": "multipart/form-data; boundary=x"},
            ),
            413,
            "payload_too_large",
        ),
    ]
    for response, status, code in cases:
        assert response.status_code == status, response.text
        assert response.json()["code"] == code
        assert response.json()["error"]
    assert client.get("/healthz").status_code == 200


def test_docs_pages_load_only_local_assets(client: httpx.Client) -> None:
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        urls = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert urls, page
        for url in urls:
            assert url.startswith("/"), f"{page} references {url}"
            if url.endswith((".js", ".css", ".png")):
                assert client.get(url).status_code == 200
    schema = client.get("/openapi.json").json()
    assert "/api/v1/models/{name}/predict" in schema["paths"]


def test_the_server_prints_its_url_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    model_dir = tmp_path / "models"
    export_tiny_digits(model_dir)
    server: LiveServer = start_server(model_dir, tmp_path / "server.log")
    try:
        assert httpx.get(f"{server.url}/readyz").status_code == 200
    finally:
        code = stop_server(server)
    assert code == 0, server.log()
    assert f"at {server.url}" in server.log()
    assert f"{server.url}/docs" in server.log()
