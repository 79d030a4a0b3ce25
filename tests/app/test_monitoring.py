"""/metrics: the Prometheus families exist and move when requests are served."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.monitoring import api_family
from tests.app.conftest import ServeFn
from tests.app.images import png

pytestmark = pytest.mark.anyio

PREDICT = "/api/v1/models/tiny-digits/predict"


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_families_move_when_requests_are_served(serve: ServeFn) -> None:
    async with serve() as client:
        before = await scrape(client)
        for _ in range(3):
            await client.post(PREDICT, files={"files": ("d.png", png())})
        await client.post(PREDICT, files={"files": ("d.png", b"not an image", "text/plain")})
        await client.get("/api/v1/models/nope")
        after = await scrape(client)

    ok = {"model": "tiny-digits", "version": "1", "api": "native"}
    assert value(before, "vision_serving_requests_total", **ok, status="200") == 0
    assert value(after, "vision_serving_requests_total", **ok, status="200") == 3
    assert value(after, "vision_serving_requests_total", **ok, status="415") == 1
    unknown = {"model": "", "version": "", "api": "native", "status": "404"}
    assert value(after, "vision_serving_requests_total", **unknown) == 1
    assert value(after, "vision_serving_request_duration_seconds_count", api="native") == 5
    for stage in ("preprocess", "queue", "inference"):
        count = value(
            after, "vision_serving_stage_duration_seconds_count", model="tiny-digits", stage=stage
        )
        assert count >= 3, stage
    assert value(after, "vision_serving_batch_size_count", model="tiny-digits") == 3
    assert value(after, "vision_serving_batch_size_sum", model="tiny-digits") == 3
    assert value(after, "vision_serving_model_versions_loaded", model="tiny-digits") == 1
    info = {"model": "tiny-xray", "version": "1", "state": "ready", "device": "cpu"}
    assert value(after, "vision_serving_model_version_info", **info) == 1


async def test_load_failures_are_counted(serve: ServeFn, model_dir_copy: Path) -> None:
    (model_dir_copy / "tiny-xray" / "1" / "saved_model.pb").write_bytes(b"corrupt")
    async with serve(model_dir=model_dir_copy) as client:
        samples = await scrape(client)
    assert value(samples, "vision_serving_model_load_failures_total", model="tiny-xray") == 1
    assert value(samples, "vision_serving_model_versions_loaded", model="tiny-xray") == 0


async def test_body_size_refusals_are_counted(serve: ServeFn) -> None:
    async with serve(max_body_bytes=1000) as client:
        await client.post(PREDICT, files={"files": ("big.png", b"\0" * 5000)})
        samples = await scrape(client)
    refused = {"model": "", "version": "", "api": "native", "status": "413"}
    assert value(samples, "vision_serving_requests_total", **refused) == 1


@pytest.mark.parametrize(
    ("path", "family"),
    [
        ("/api/v1/models/x/predict", "native"),
        ("/v1/models/x:predict", "tfserving"),
        ("/v2/models/x/infer", "v2"),
        ("/v2", "v2"),
        ("/healthz", "other"),
        ("/v2x", "other"),
    ],
)
def test_api_family(path: str, family: str) -> None:
    assert api_family(path) == family
