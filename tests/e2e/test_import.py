"""`python -m training import` as a user runs it, against a live server that is not restarted.

A small Keras classifier is trained here on real MNIST digits (scaled to 0..1, as most
user models are), saved as `.keras` and imported with an evaluation folder of real digit
PNGs, while a server watches the model directory. The server must start serving it by
itself, through the native API, TF Serving's REST API and the V2 inference protocol.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import keras
import numpy as np
import pytest

from app.contract.images import Upload
from app.contract.model_card import InputSpec
from app.contract.preprocessing import prepare_image
from tests.app.images import encode
from tests.conftest import REPO_ROOT, require_data, shipped_version
from tests.e2e.conftest import LiveServer, start_server, stop_server

pytestmark = pytest.mark.e2e

NAME = "my-digits"
DIGITS = [str(d) for d in range(10)]
TRAIN_IMAGES = 4000
EVALUATION_PER_CLASS = 10
PICKUP_TIMEOUT_SECONDS = 60


@pytest.fixture(scope="module")
def mnist() -> dict[str, np.ndarray]:
    with np.load(require_data("mnist.npz")) as arrays:
        return {key: arrays[key] for key in ("x_train", "y_train", "x_test", "y_test")}


@pytest.fixture(scope="module")
def trained_digits(mnist: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's own model: trained on 0..1 pixels, softmax head, saved as .keras."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    images = mnist["x_train"][:TRAIN_IMAGES, :, :, None].astype(np.float32) / 255.0
    model.fit(images, mnist["y_train"][:TRAIN_IMAGES], epochs=2, batch_size=64, verbose=0)
    path = tmp_path_factory.mktemp("user") / "digits.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def evaluation_folder(
    mnist: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Real MNIST test digits as PNG files, one folder per class."""
    root = tmp_path_factory.mktemp("labelled") / "mnist-test-pngs"
    for digit in range(10):
        (root / str(digit)).mkdir(parents=True)
        indices = np.flatnonzero(mnist["y_test"] == digit)[:EVALUATION_PER_CLASS]
        for index in indices:
            (root / str(digit) / f"{index}.png").write_bytes(encode(mnist["x_test"][index]))
    return root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder holding one shipped model (a server with no model is not ready)."""
    models = tmp_path_factory.mktemp("served") / "models"
    shipped = shipped_version("mnist-mlp")
    shutil.copytree(shipped, models / "mnist-mlp" / shipped.name)
    return models


@pytest.fixture(scope="module")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A live server on `model_dir`, rescanning it twice a second."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    live = start_server(model_dir, log, VISION_SERVING_POLL_INTERVAL_SECONDS="0.5")
    yield live
    stop_server(live)


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


def run_import(
    source: Path, name: str, model_dir: Path, *flags: str
) -> subprocess.CompletedProcess[str]:
    """`python -m training import` in a process of its own, as a user runs it."""
    command = [sys.executable, "-m", "training", "import", str(source), "--name", name]
    command += ["--classes", *DIGITS, "--preprocessing", "mnist-digit", "--input-range", "0-1"]
    command += ["--model-dir", str(model_dir), *flags]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def wait_until_served(client: httpx.Client, name: str) -> dict[str, Any]:
    deadline = time.monotonic() + PICKUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        response = client.get(f"/api/v1/models/{name}")
        if response.status_code == 200 and response.json()["status"] == "ready":
            return dict(response.json())
        time.sleep(0.25)
    raise AssertionError(f"{name} not served after {PICKUP_TIMEOUT_SECONDS} s")


def test_an_imported_keras_model_is_served_without_a_restart(
    server: LiveServer,
    client: httpx.Client,
    model_dir: Path,
    trained_digits: Path,
    evaluation_folder: Path,
    mnist: dict[str, np.ndarray],
) -> None:
    assert client.get(f"/api/v1/models/{NAME}").status_code == 404  # not there at start

    imported = run_import(trained_digits, NAME, model_dir, "--evaluate-on", str(evaluation_folder))

    assert imported.returncode == 0, imported.stderr
    summary = imported.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"imported digits.keras as {NAME} v1 to {model_dir / NAME / '1'}")
    card = wait_until_served(client, NAME)["card"]
    assert server.process.poll() is None  # the same server, never restarted
    assert card["training"] is None and card["imported"]["source"] == "digits.keras"
    assert card["imported"]["evaluated_on"]["counts"]["evaluation"] == {
        digit: EVALUATION_PER_CLASS for digit in DIGITS
    }
    evaluation = client.get(f"/api/v1/models/{NAME}/evaluation").json()
    assert evaluation["count"] == 10 * EVALUATION_PER_CLASS
    assert evaluation["accuracy"] > 0.8  # chance is 0.1; 2 epochs on 4,000 digits give ~0.9

    # Test digits the evaluation did not use, as PNG uploads. An upload goes through the
    # card's mnist-digit normalisation, which may move a pixel or two of an MNIST digit, so
    # the expected answer is the model's (trained on x / 255) on the normalised pixels.
    model = keras.models.load_model(trained_digits)
    spec = InputSpec(height=28, width=28, channels=1, color_mode="grayscale")
    images, truth = mnist["x_test"][-20:], mnist["y_test"][-20:]
    pngs = [encode(image) for image in images]
    prepared = np.stack(
        [prepare_image(Upload("digit.png", png), spec, "mnist-digit").pixels for png in pngs]
    )
    on_uploads = model.predict(prepared / 255.0, verbose=0)
    right = int(np.flatnonzero(on_uploads.argmax(axis=1) == truth)[0])

    native = client.post(
        f"/api/v1/models/{NAME}/predict", files={"files": ("digit.png", pngs[right])}
    ).json()
    assert (native["model"], native["version"]) == (NAME, 1)
    assert native["predictions"][0]["label"] == str(truth[right])
    assert native["predictions"][0]["confidence"] == pytest.approx(
        float(on_uploads[right].max()), abs=1e-4
    )

    # Tensors skip the upload preprocessing: raw 0..255 pixels, as the card's input says.
    expected = model.predict(images[right][None, :, :, None] / 255.0, verbose=0)[0]
    pixels = images[right][:, :, None].astype(np.float32)
    tf_serving = client.post(
        f"/v1/models/{NAME}:predict", json={"instances": [pixels.tolist()]}
    ).json()
    np.testing.assert_allclose(tf_serving["predictions"][0], expected, atol=1e-4)

    tensor = {"name": "pixels", "shape": [1, 28, 28, 1], "datatype": "FP32"}
    v2 = client.post(
        f"/v2/models/{NAME}/infer", json={"inputs": [{**tensor, "data": pixels.ravel().tolist()}]}
    ).json()
    probabilities = next(o for o in v2["outputs"] if o["name"] == "probabilities")
    np.testing.assert_allclose(probabilities["data"], expected, atol=1e-4)


def test_an_imported_saved_model_is_served_and_says_it_is_not_evaluated(
    server: LiveServer,
    client: httpx.Client,
    model_dir: Path,
    trained_digits: Path,
    mnist: dict[str, np.ndarray],
    tmp_path: Path,
) -> None:
    model = keras.models.load_model(trained_digits)
    model.export(str(tmp_path / "digits-savedmodel"), verbose=False)

    imported = run_import(tmp_path / "digits-savedmodel", "my-digits-sm", model_dir)

    assert imported.returncode == 0, imported.stderr
    card = wait_until_served(client, "my-digits-sm")["card"]
    assert card["imported"]["source_format"] == "saved_model"
    assert card["evaluation"] is None and card["limitations"].startswith("Not evaluated")
    no_evaluation = client.get("/api/v1/models/my-digits-sm/evaluation")
    assert no_evaluation.status_code == 404
    assert "--evaluate-on DIR" in no_evaluation.json()["error"]
    pixels = mnist["x_test"][:3, :, :, None].astype(np.float32)
    served = client.post("/v1/models/my-digits-sm:predict", json={"instances": pixels.tolist()})
    expected = model.predict(pixels / 255.0, verbose=0)
    np.testing.assert_allclose(served.json()["predictions"], expected, atol=1e-4)


def test_a_model_that_is_not_a_classifier_is_refused_with_the_reason(
    server: LiveServer, client: httpx.Client, model_dir: Path, tmp_path: Path
) -> None:
    logits = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10, name="scores")]
    )
    logits.save(tmp_path / "logits.keras")
    before = client.get("/api/v1/models").json()

    refused = run_import(tmp_path / "logits.keras", "my-logits", model_dir)

    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1] == (
        "error: logits.keras does not output probabilities (its last layer scores has a linear "
        "activation): outputs look like logits: add a softmax layer at the end "
        "(keras.layers.Softmax(), or activation='softmax' on the last layer) and save the "
        "model again"
    )
    assert not (model_dir / "my-logits").exists()
    assert client.get("/api/v1/models").json() == before
