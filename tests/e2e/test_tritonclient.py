"""Real protocol clients against one live server of tiny models.

Triton's own Python client (`tritonclient.http`) speaks the Open Inference Protocol V2
with binary tensor data by default, so it is the drop-in test: health, metadata, infer
with JSON and binary tensors both ways, BYTES images and classification, checked against
the native API for the same images. TF Serving has no maintained Python REST client, so
its REST API is exercised here with plain httpx, as `curl` users and TF Serving's own
docs do (the server is shared to keep the e2e run short).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.app.images import png
from tests.app.tiny_models import export_tiny_digits, export_tiny_xray
from tests.e2e.conftest import LiveServer, start_server, stop_server

pytestmark = pytest.mark.e2e

DIGITS = "tiny-digits"
TF_DIGITS = f"/v1/models/{DIGITS}"
IMAGES = [png(1), png(2), png(3)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    model_dir = tmp_path_factory.mktemp("triton-models")
    export_tiny_digits(model_dir)
    export_tiny_xray(model_dir)
    live = start_server(model_dir, model_dir.parent / "server.log")
    yield live
    stop_server(live)


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[triton.InferenceServerClient]:
    triton_client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    yield triton_client
    triton_client.close()


@pytest.fixture(scope="module")
def native(server: LiveServer) -> dict[str, np.ndarray]:
    """The native API's probabilities and labels for `IMAGES`."""
    files = [("files", (f"{i}.png", data, "image/png")) for i, data in enumerate(IMAGES)]
    with httpx.Client(base_url=server.url, timeout=30) as http:
        body = http.post(f"/api/v1/models/{DIGITS}/probabilities", files=files).json()
        labels = http.post(f"/api/v1/models/{DIGITS}/predict", files=files).json()
    probabilities = [[r["probabilities"][c] for c in body["class_names"]] for r in body["results"]]
    return {
        "probabilities": np.array(probabilities),
        "labels": np.array([p["label"] for p in labels["predictions"]]),
    }


def pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, 28, 28, 1)).astype(np.float32)


def test_server_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata()
    assert {"binary_tensor_data", "classification"} <= set(metadata["extensions"])


@pytest.mark.parametrize("version", ["", "1"])
def test_model_metadata_and_readiness(client: triton.InferenceServerClient, version: str) -> None:
    assert client.is_model_ready(DIGITS, version)
    metadata = client.get_model_metadata(DIGITS, version)
    assert metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 28, 28, 1]}]
    assert metadata["outputs"][0]["shape"] == [-1, 10]


def test_unknown_model_or_version_is_not_ready(client: triton.InferenceServerClient) -> None:
    assert not client.is_model_ready("nope")
    assert not client.is_model_ready(DIGITS, "9")
    with pytest.raises(InferenceServerException) as raised:
        client.get_model_metadata("nope")
    assert raised.value.status() == "404"


@pytest.mark.parametrize("binary_input", [True, False])
@pytest.mark.parametrize("binary_output", [True, False])
def test_infer_pixels(
    client: triton.InferenceServerClient,
    server: LiveServer,
    binary_input: bool,
    binary_output: bool,
) -> None:
    batch = pixels(3)
    tensor = triton.InferInput("pixels", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=binary_input)
    output = triton.InferRequestedOutput("probabilities", binary_data=binary_output)
    result = client.infer(DIGITS, [tensor], outputs=[output], request_id="r1")
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (3, 10)
    assert result.get_response()["id"] == "r1"
    assert result.get_response()["model_version"] == "1"
    # The TF Serving front-end sends the same pixels to the same core call.
    predict = httpx.post(
        f"{server.url}/v1/models/{DIGITS}:predict", json={"instances": batch.tolist()}, timeout=30
    )
    np.testing.assert_array_equal(probabilities, np.array(predict.json()["predictions"]))


def test_infer_without_outputs_returns_all_as_binary(client: triton.InferenceServerClient) -> None:
    batch = pixels(1, seed=4)[..., 0]  # [N, H, W] suits a one-channel model
    tensor = triton.InferInput("pixels", list(batch.shape), "FP32").set_data_from_numpy(batch)
    result = client.infer(DIGITS, [tensor], model_version="1")
    output = result.get_output("probabilities")
    assert output is not None and "binary_data_size" in output["parameters"]
    assert result.as_numpy("probabilities").sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("binary_input", [True, False])
def test_bytes_images_match_the_native_api(
    client: triton.InferenceServerClient, native: dict[str, np.ndarray], binary_input: bool
) -> None:
    # JSON cannot hold raw bytes, so JSON BYTES elements are base64 images.
    elements = IMAGES if binary_input else [base64.b64encode(i) for i in IMAGES]
    tensor = triton.InferInput("pixels", [len(IMAGES)], "BYTES")
    tensor.set_data_from_numpy(np.array(elements, dtype=np.object_), binary_data=binary_input)
    result = client.infer(DIGITS, [tensor])
    probabilities = result.as_numpy("probabilities")
    np.testing.assert_allclose(probabilities, native["probabilities"], rtol=1e-6)
    predicted = [str(i) for i in probabilities.argmax(axis=1)]
    assert predicted == native["labels"].tolist()


@pytest.mark.parametrize("binary_output", [True, False])
def test_classification_top_classes_match_the_native_api(
    client: triton.InferenceServerClient, native: dict[str, np.ndarray], binary_output: bool
) -> None:
    tensor = triton.InferInput("pixels", [len(IMAGES), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[i] for i in IMAGES], dtype=np.object_))
    output = triton.InferRequestedOutput("probabilities", binary_data=binary_output, class_count=3)
    result = client.infer(DIGITS, [tensor], outputs=[output])
    top = result.as_numpy("probabilities")
    assert top.shape == (len(IMAGES), 3)
    for row, probabilities, label in zip(
        top, native["probabilities"], native["labels"], strict=True
    ):
        entries = [_text(item).split(":") for item in row]
        assert entries[0][2] == label
        scores = [float(score) for score, _, _ in entries]
        assert scores == sorted(scores, reverse=True)
        assert scores[0] == pytest.approx(probabilities.max(), abs=1e-6)
        assert [int(index) for _, index, _ in entries] == [int(name) for _, _, name in entries]


def test_bad_input_raises_with_the_servers_message(client: triton.InferenceServerClient) -> None:
    batch = np.zeros((1, 27, 28), dtype=np.float32)
    tensor = triton.InferInput("pixels", list(batch.shape), "FP32").set_data_from_numpy(batch)
    with pytest.raises(InferenceServerException) as raised:
        client.infer(DIGITS, [tensor])
    assert raised.value.status() == "400"
    assert "[N, 28, 28, 1]" in raised.value.message()
    with pytest.raises(InferenceServerException) as raised:
        client.infer("nope", [tensor])
    assert raised.value.status() == "404"


# TF Serving REST, with plain httpx ------------------------------------------------------


@pytest.fixture(scope="module")
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def test_tf_serving_status_and_metadata(http: httpx.Client) -> None:
    status = http.get(TF_DIGITS).json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    metadata = http.get(f"{TF_DIGITS}/versions/1/metadata").json()
    assert metadata["model_spec"]["version"] == "1"


def test_tf_serving_row_and_columnar_tensors(
    http: httpx.Client, client: triton.InferenceServerClient
) -> None:
    batch = pixels(2, seed=9)
    row = http.post(f"{TF_DIGITS}:predict", json={"instances": batch.tolist()})
    columnar = http.post(
        f"{TF_DIGITS}/versions/1:predict", json={"inputs": {"pixels": batch.tolist()}}
    )
    assert row.status_code == columnar.status_code == 200
    assert row.json()["predictions"] == columnar.json()["outputs"]
    tensor = triton.InferInput("pixels", list(batch.shape), "FP32").set_data_from_numpy(batch)
    v2 = client.infer(DIGITS, [tensor]).as_numpy("probabilities")
    np.testing.assert_array_equal(np.array(row.json()["predictions"]), v2)


def test_tf_serving_b64_images_match_the_native_api(
    http: httpx.Client, native: dict[str, np.ndarray]
) -> None:
    instances = [{"b64": base64.b64encode(image).decode()} for image in IMAGES]
    predict = http.post(
        f"{TF_DIGITS}:predict", json={"signature_name": "serving_default", "instances": instances}
    )
    classify = http.post(f"{TF_DIGITS}:classify", json={"instances": instances})
    np.testing.assert_allclose(predict.json()["predictions"], native["probabilities"], rtol=1e-6)
    assert [result[0][0] for result in classify.json()["results"]] == native["labels"].tolist()


def test_tf_serving_errors(http: httpx.Client) -> None:
    unknown = http.post("/v1/models/nope:predict", json={"instances": [[0]]})
    both = http.post(f"{TF_DIGITS}:predict", json={"instances": [[0]], "inputs": [[0]]})
    assert unknown.status_code == 404
    assert unknown.json()["error"].startswith("Servable not found for request: Latest(nope)")
    assert both.status_code == 400


def _text(item: bytes | str) -> str:
    return item.decode() if isinstance(item, bytes) else item
