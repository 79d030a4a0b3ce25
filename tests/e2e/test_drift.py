"""The drift score on real data: MNIST digits keep it low, X-rays and noise push it over.

The shipped digit model behind a real server whose window holds the last `WINDOW`
predictions. Digits the reference never saw keep the score under 1 at every check, from
the first scored window on; chest X-rays sent to the digit model, then noise pictures,
each take it over 1, and new digits bring it back. Far from luck: sampling noise alone
gives about (bins - 1) / n PSI, a score of ~0.35 at the first 100 predictions and ~0.1
at `WINDOW`, while X-rays or noise filling half the window score ~7.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from app.contract.drift import MIN_SCORED_PREDICTIONS
from tests.app.images import encode
from tests.conftest import require_data
from tests.e2e.conftest import LiveServer, start_server, stop_server
from tests.e2e.reference_profile import (
    DIGIT_MODEL,
    FILES_PER_REQUEST,
    Picture,
    digit_model_with_reference,
    png_pictures,
)

pytestmark = pytest.mark.e2e

WINDOW = 400
# Disjoint random draws from the whole test split, which is not uniform: its first 5,000
# digits are neater than its last 5,000 (two groups of writers); those alone score ~0.5.
_DRAW = np.random.default_rng(0).permutation(10_000)
REFERENCE_DIGITS = _DRAW[:2000]
FIRST_DIGITS = _DRAW[2000 : 2000 + WINDOW]  # digits the reference did not see
LATER_DIGITS = _DRAW[3000 : 3000 + WINDOW]
XRAYS = WINDOW // 2  # half the window: drift must show before the window is all X-rays
NOISE = WINDOW // 2


@pytest.fixture(scope="module")
def mnist_test() -> np.ndarray:
    with np.load(require_data("mnist.npz")) as arrays:
        return np.asarray(arrays["x_test"])


@pytest.fixture(scope="module")
def drift_server(
    live_server: LiveServer, mnist_test: np.ndarray, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """The digit model, with a reference profile, behind a server of its own."""
    folder = tmp_path_factory.mktemp("drift")
    with httpx.Client(base_url=live_server.url, timeout=60) as shipped:
        model_dir = digit_model_with_reference(
            shipped, mnist_test[REFERENCE_DIGITS], folder / "models"
        )
    server = start_server(
        model_dir,
        folder / "server.log",
        VISION_SERVING_DRIFT_WINDOW=str(WINDOW),
        VISION_SERVING_RUNTIME_CACHE_DIR=str(folder / "runtime-cache"),
    )
    yield server
    stop_server(server)


def send(client: httpx.Client, pictures: list[Picture]) -> list[dict[str, Any]]:
    """Predict `pictures` in requests of 50; the window summary after each request."""
    summaries = []
    for start in range(0, len(pictures), FILES_PER_REQUEST):
        chunk = [("files", p) for p in pictures[start : start + FILES_PER_REQUEST]]
        response = client.post(f"/api/v1/models/{DIGIT_MODEL}/predict", files=chunk)
        assert response.status_code == 200, response.text
        summaries.append(recent(client))
    return summaries


def recent(client: httpx.Client) -> dict[str, Any]:
    summary: dict[str, Any] = client.get(f"/api/v1/models/{DIGIT_MODEL}").json()[
        "recent_predictions"
    ]
    return summary


def score(summary: dict[str, Any]) -> float:
    return float(summary["scores"]["drift_score"])


def chest_xrays(count: int) -> list[Picture]:
    files = sorted(require_data("chest_xray/test").glob("*/*.jpeg"))
    chosen = np.random.default_rng(0).choice(len(files), size=count, replace=False)
    return [(files[i].name, files[i].read_bytes(), "image/jpeg") for i in chosen]


def noise_pictures(count: int) -> list[Picture]:
    """Half pixel noise (read as a blank page), half smooth blotches (read as digits)."""
    rng = np.random.default_rng(1)
    pictures = []
    for i in range(count):
        if i % 2:
            pixels = rng.integers(0, 256, size=(64, 64))
        else:
            blotches = Image.fromarray(rng.integers(0, 256, size=(4, 4), dtype=np.uint8))
            pixels = np.asarray(blotches.resize((64, 64), Image.Resampling.BICUBIC))
        pictures.append((f"noise-{i}.png", encode(pixels), "image/png"))
    return pictures


def test_digits_stay_under_the_threshold_and_xrays_and_noise_cross_it(
    drift_server: LiveServer, mnist_test: np.ndarray
) -> None:
    with httpx.Client(base_url=drift_server.url, timeout=120) as client:
        assert recent(client)["status"] == "warming_up"
        digits = send(client, png_pictures(mnist_test[FIRST_DIGITS], "digit"))
        xrays = send(client, chest_xrays(XRAYS))
        digits_again = send(client, png_pictures(mnist_test[LATER_DIGITS], "again"))
        noise = send(client, noise_pictures(NOISE))
        metrics = client.get("/metrics").text

    scored = [s for s in digits if s["count"] >= MIN_SCORED_PREDICTIONS]
    assert all(s["status"] == "warming_up" for s in digits if s not in scored)
    print("digits:", [round(score(s), 3) for s in scored])
    assert len(scored) >= 6 and all(s["status"] == "ok" for s in scored)  # score < 1
    assert score(scored[-1]) < 0.3  # a full window of digits: sampling noise only
    print("x-rays:", [round(score(s), 2) for s in xrays], xrays[-1]["scores"])
    assert xrays[-1]["status"] == "drift" and score(xrays[-1]) > 2
    # The X-rays leave the window as new digits come in; the last digit window is clean.
    print("digits again:", [round(score(s), 2) for s in digits_again])
    assert digits_again[-1]["status"] == "ok" and score(digits_again[-1]) < 0.3
    print("noise:", [round(score(s), 2) for s in noise], noise[-1]["scores"])
    assert noise[-1]["status"] == "drift" and score(noise[-1]) > 2
    window, reference = noise[-1]["window"], noise[-1]["reference"]
    assert window["no_digit_share"] > 0.15  # the pixel noise reads as blank pages
    assert window["mean_confidence"] < reference["mean_confidence"] - 0.1
    # The same verdict on /metrics, which Prometheus alerts on.
    exported = {
        sample.labels["kind"]: sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "vision_serving_prediction_drift_score"
    }
    assert exported["combined"] == pytest.approx(score(noise[-1]))
