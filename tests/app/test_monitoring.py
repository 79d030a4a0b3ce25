"""/metrics: the Prometheus families exist and move when requests are served."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.batching import MicroBatcher
from app.contract.drift import prediction_profile
from app.contract.model_card import InputSpec, ModelCard
from app.drift import PredictionMonitor
from app.monitoring import UNKNOWN_MODEL, ServingMetrics, api_family
from app.repository import ModelState, ServedModel
from tests.app.conftest import ServeFn
from tests.app.images import png
from tests.app.tiny_models import tiny_card

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
        mixed = [("files", ("a.png", png())), ("files", ("b.png", png()[:40]))]
        assert (await client.post(PREDICT, files=mixed)).status_code == 200
        after = await scrape(client)

    ok = {"model": "tiny-digits", "version": "1", "api": "native"}
    assert value(before, "vision_serving_requests_total", **ok, status="200") == 0
    assert value(after, "vision_serving_requests_total", **ok, status="200") == 4
    assert value(after, "vision_serving_requests_total", **ok, status="415") == 1
    unreadable = "vision_serving_unreadable_files_total"
    assert value(after, unreadable, model="tiny-digits", code="unsupported_media_type") == 1
    assert value(after, unreadable, model="tiny-digits", code="invalid_image") == 1
    unknown = {"model": UNKNOWN_MODEL, "version": "", "api": "native", "status": "404"}
    assert value(after, "vision_serving_requests_total", **unknown) == 1
    assert value(after, "vision_serving_request_duration_seconds_count", api="native") == 6
    for stage in ("preprocess", "queue", "inference"):
        count = value(
            after, "vision_serving_stage_duration_seconds_count", model="tiny-digits", stage=stage
        )
        assert count >= 3, stage
    assert value(after, "vision_serving_batch_size_count", model="tiny-digits") == 4
    assert value(after, "vision_serving_batch_size_sum", model="tiny-digits") == 4
    assert value(after, "vision_serving_model_versions_loaded", model="tiny-digits") == 1
    info = {"model": "tiny-xray", "version": "1", "state": "ready", "device": "cpu"}
    assert value(after, "vision_serving_model_version_info", **info) == 1


async def test_the_runtime_of_each_loaded_version_is_exported(
    serve: ServeFn, model_dir_copy: Path
) -> None:
    (model_dir_copy / "tiny-xray" / "1" / "model.tflite").unlink()  # as an older export
    async with serve(model_dir=model_dir_copy) as client:
        litert = await scrape(client)
    async with serve(runtime="savedmodel") as client:
        savedmodel = await scrape(client)
    family = "vision_serving_model_runtime_info"
    digits = {"model": "tiny-digits", "version": "1"}
    xray = {"model": "tiny-xray", "version": "1"}
    assert value(litert, family, **digits, runtime="litert", source="export") == 1
    assert value(litert, family, **xray, runtime="litert", source="converted at load") == 1
    assert value(savedmodel, family, **digits, runtime="savedmodel", source="") == 1
    assert sum(v for (name, _), v in savedmodel.items() if name == family) == 2


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
    refused = {"model": "tiny-digits", "version": "", "api": "native", "status": "413"}
    assert value(samples, "vision_serving_requests_total", **refused) == 1


async def test_every_answer_on_a_model_url_is_counted_under_the_model_it_names(
    serve: ServeFn,
) -> None:
    upload = {"files": ("d.png", png())}
    async with serve(max_body_bytes=100_000, max_queued_images=1) as client:
        app = client._transport.app  # type: ignore[attr-defined]
        await client.get("/api/v1/models/tiny-digits")  # 200, no version resolved
        await client.post("/api/v1/models/tiny-digits/versions/9/predict", files=upload)  # 404
        await client.post("/api/v1/models/tiny-digits/versions/1/predict?top_k=0", files=upload)
        await client.post(PREDICT, files={"files": ("big.png", b"\0" * 200_000)})  # 413
        await client.post("/v1/models/tiny-digits/versions/1:predict", content=b"{not json")
        await client.post("/v2/models/tiny-digits/infer", json={})  # no inputs
        await client.post("/api/v1/models/nope-1/predict", files=upload)
        await client.post("/v1/models/nope-2:predict", json={"instances": [[0]]})
        await client.get("/v2/models/nope-3/ready")
        served = app.state.dataplane.repository.served("tiny-digits")
        served.images_in_flight = 1  # full: early admission refuses before reading the body
        await client.post(PREDICT, files=upload)
        served.images_in_flight = 0
        samples = await scrape(client)
    async with serve(api_key="secret") as client:
        await client.post(PREDICT, files=upload)  # no key
        keyed = await scrape(client)

    def count(model: str, version: str, api: str, status: str) -> float:
        labels = {"model": model, "version": version, "api": api, "status": status}
        return value(samples, "vision_serving_requests_total", **labels)

    assert count("tiny-digits", "", "native", "200") == 1
    assert count("tiny-digits", "", "native", "404") == 1  # a version it does not know
    assert count("tiny-digits", "1", "native", "422") == 1
    assert count("tiny-digits", "", "native", "413") == 1
    assert count("tiny-digits", "1", "tfserving", "400") == 1
    assert count("tiny-digits", "", "v2", "400") == 1
    assert count("tiny-digits", "1", "native", "503") == 1
    assert count(UNKNOWN_MODEL, "", "native", "404") == 1
    assert count(UNKNOWN_MODEL, "", "tfserving", "404") == 1
    assert count(UNKNOWN_MODEL, "", "v2", "404") == 1
    named = {dict(labels)["model"] for name, labels in samples if name.endswith("requests_total")}
    assert named == {"tiny-digits", UNKNOWN_MODEL}, "no series per made-up name, none unnamed"
    unauthorized = {"model": "tiny-digits", "version": "", "api": "native", "status": "401"}
    assert value(keyed, "vision_serving_requests_total", **unauthorized) == 1


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


async def test_prediction_gauges_summarise_each_loaded_version(
    serve: ServeFn, model_dir_copy: Path
) -> None:
    """Window gauges for every version; drift scores only where the card has a profile."""
    version_dir = model_dir_copy / "tiny-xray" / "1"
    card = ModelCard.read(version_dir)
    sure = [[0.99, 0.01]] * 50 + [[0.01, 0.99]] * 50
    reference = prediction_profile(sure, card.class_names)
    card.model_copy(update={"prediction_profile": reference}).write(version_dir)
    files = [("files", (f"{i}.png", png(seed=i, size=32))) for i in range(50)]
    async with serve(model_dir=model_dir_copy, drift_window=100) as client:
        before = await scrape(client)
        answers = []
        for _ in range(3):  # 150 predictions: the window keeps the last 100
            response = await client.post("/api/v1/models/tiny-xray/probabilities", files=files)
            answers += [r["probabilities"] for r in response.json()["results"]]
        await client.post(PREDICT, files={"files": ("d.png", png())})
        after = await scrape(client)

    xray = {"model": "tiny-xray", "version": "1"}
    digits = {"model": "tiny-digits", "version": "1"}
    assert value(before, "vision_serving_prediction_window_size", **xray) == 0
    assert value(after, "vision_serving_prediction_window_size", **xray) == 100
    assert value(after, "vision_serving_prediction_window_size", **digits) == 1
    window = np.array([[a[c] for c in card.class_names] for a in answers[-100:]])
    top = window.argmax(axis=1)
    for index, name in enumerate(card.class_names):
        share = value(after, "vision_serving_prediction_class_share", **xray, **{"class": name})
        assert share == pytest.approx(np.mean(top == index))
    confidence = window.max(axis=1)
    assert value(after, "vision_serving_prediction_mean_confidence", **xray) == pytest.approx(
        confidence.mean(), abs=1e-5
    )
    low = value(after, "vision_serving_prediction_low_confidence_share", **xray)
    assert low == pytest.approx(np.mean(confidence < 0.75))
    entropy = -(window * np.log(window)).sum(axis=1).mean()
    mean_entropy = value(after, "vision_serving_prediction_mean_entropy", **xray)
    assert mean_entropy == pytest.approx(entropy, abs=1e-4)
    scores = {
        kind: value(after, "vision_serving_prediction_drift_score", **xray, kind=kind)
        for kind in ("confidence", "class_mix", "combined")
    }
    # The untrained tiny model is never as sure as the reference.
    assert scores["combined"] == max(scores["confidence"], scores["class_mix"]) > 1
    exported = {
        (name, dict(labels)["model"]) for name, labels in after if dict(labels).get("model")
    }
    assert ("vision_serving_prediction_drift_score", "tiny-digits") not in exported  # no profile
    assert ("vision_serving_prediction_no_digit_share", "tiny-digits") in exported
    assert ("vision_serving_prediction_no_digit_share", "tiny-xray") not in exported


class Versions:
    """The two calls the prediction collector makes of a repository."""

    def __init__(self, *models: ServedModel) -> None:
        self.models = models

    def names(self) -> list[str]:
        return sorted({model.name for model in self.models})

    def versions(self, name: str) -> list[ServedModel]:
        return [model for model in self.models if model.name == name]


def scraped(metrics: ServingMetrics) -> dict[tuple[str, tuple], float]:
    text = metrics.exposition()[0].decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_version_whose_window_cannot_be_summarised_leaves_the_scrape_working(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """NaN rows are skipped and counted; a window that still cannot be summarised (here
    outputs that are not probabilities) costs only its own version's gauges, logged once."""
    spec = InputSpec(height=28, width=28, channels=1, color_mode="grayscale")
    card = tiny_card("xray", 1, ["NORMAL", "PNEUMONIA"], spec, "resize")
    good, broken = (
        ServedModel("xray", version, Path("."), ModelState.READY, card=card) for version in (1, 2)
    )
    monitor = PredictionMonitor(window_size=10)
    metrics = ServingMetrics()
    metrics.watch_predictions(Versions(good, broken), monitor)  # type: ignore[arg-type]
    monitor.record(good, np.array([[0.9, 0.1], [np.nan, 0.5]], dtype=np.float32), None)
    monitor.record(broken, np.array([[1.5, -0.5]], dtype=np.float32), None)

    with caplog.at_level(logging.ERROR, logger="app.monitoring"):
        first, second = scraped(metrics), scraped(metrics)

    assert first == second
    one = {"model": "xray", "version": "1"}
    assert value(first, "vision_serving_prediction_window_size", **one) == 1
    assert value(first, "vision_serving_prediction_mean_confidence", **one) == pytest.approx(0.9)
    assert value(first, "vision_serving_prediction_non_finite_total", **one) == 1
    assert not [labels for _, labels in first if ("version", "2") in labels]
    failures = [r for r in caplog.records if r.name == "app.monitoring"]
    assert len(failures) == 1 and "xray v2 cannot be summarised" in failures[0].getMessage()
    assert failures[0].exc_info is not None  # with the traceback that says why


async def test_queue_time_averages_how_long_requests_waited_for_their_batch() -> None:
    """The autoscaler's figure (deploy/prometheus-adapter: the queue stage's sum over its
    count) is the mean time a request waited for its model call to start."""
    metrics = ServingMetrics()
    started: list[float] = []  # when each model call began, on the inference thread

    def model(pixels: np.ndarray) -> np.ndarray:
        started.append(time.perf_counter())
        time.sleep(0.2 if len(started) == 1 else 0)  # the first batch keeps the others waiting
        return pixels.reshape(len(pixels), -1)[:, :1].copy()

    batcher = MicroBatcher(
        model,
        max_batch_size=32,
        max_wait_seconds=0,
        name="m",
        observer=metrics.batch_observer("m"),
    )
    batcher.start()
    sent: dict[int, float] = {}

    async def send(index: int) -> None:
        sent[index] = time.perf_counter()
        await batcher.submit(np.full((1, 1, 1, 1), index, dtype=np.float32))

    first = asyncio.create_task(send(0))
    await asyncio.sleep(0.05)  # the first batch is running: the next three queue behind it
    await asyncio.gather(first, *(send(index) for index in (1, 2, 3)))
    await batcher.stop()

    waits = [started[0] - sent[0]] + [started[1] - sent[index] for index in (1, 2, 3)]
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(metrics.exposition()[0].decode())
        for sample in family.samples
        if sample.labels.get("stage") == "queue"
    }
    count = samples["vision_serving_stage_duration_seconds_count"]
    total = samples["vision_serving_stage_duration_seconds_sum"]
    assert count == 4
    # the batcher times the dispatch just before the hop to the inference thread
    assert total / count == pytest.approx(np.mean(waits), abs=0.01)
    assert np.mean(waits) > 0.1  # three of the four waited out most of the first batch
