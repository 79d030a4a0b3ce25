"""TensorFlow Serving REST API (/v1): status, metadata, predict, classify and their errors."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pytest

from tests.app.images import encode, png
from tests.app.protocols.conftest import THRESHOLDED_XRAY, XRAY_THRESHOLD, Served
from tests.app.tiny_models import XRAY_SIZE

pytestmark = pytest.mark.anyio

DIGITS = "/v1/models/tiny-digits"


def pixels(n: int, seed: int = 0, size: int = 28) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 1)).astype(np.float32)


def b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode("ascii")}


async def native_probabilities(served: Served, images: list[bytes]) -> list[list[float]]:
    files = [("files", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
    response = await served.client.post("/api/v1/models/tiny-digits/probabilities", files=files)
    body = response.json()
    return [[r["probabilities"][c] for c in body["class_names"]] for r in body["results"]]


async def core_probabilities(served: Served, batch: np.ndarray, version: int | None = None):
    result = await served.dataplane.classify_pixels("tiny-digits", version, batch)
    return result.probabilities.tolist()


# Status and metadata ---------------------------------------------------------------


async def test_status_lists_each_version_with_its_state(mixed: Served) -> None:
    response = await mixed.client.get(DIGITS)
    assert response.status_code == 200
    statuses = response.json()["model_version_status"]
    assert [(s["version"], s["state"]) for s in statuses] == [
        ("1", "AVAILABLE"),
        ("2", "AVAILABLE"),
        ("3", "END"),
    ]
    assert statuses[0]["status"] == {"error_code": "OK", "error_message": ""}
    assert statuses[2]["status"]["error_code"] == "UNKNOWN"
    assert "model_card.json" in statuses[2]["status"]["error_message"]


async def test_version_status(mixed: Served) -> None:
    ready = await mixed.client.get(f"{DIGITS}/versions/2")
    failed = await mixed.client.get(f"{DIGITS}/versions/3")
    missing = await mixed.client.get(f"{DIGITS}/versions/9")
    [status] = ready.json()["model_version_status"]
    runtime = status.pop("runtime")  # not TF Serving's: an extra field, as clients allow
    assert status == {
        "version": "2",
        "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""},
    }
    assert (runtime["name"], runtime["source"]) == ("litert", "export")
    assert runtime["reason"].startswith("model.tflite from the export agrees with the SavedModel")
    assert failed.json()["model_version_status"][0]["state"] == "END"
    assert failed.json()["model_version_status"][0]["runtime"] is None
    assert missing.status_code == 404
    assert missing.json()["error"].startswith("Could not find version 9 of model tiny-digits")


async def test_status_of_unknown_or_empty_model_is_404(mixed: Served) -> None:
    unknown = await mixed.client.get("/v1/models/nope")
    empty = await mixed.client.get("/v1/models/empty-model")
    assert unknown.status_code == empty.status_code == 404
    assert unknown.json()["error"].startswith("Could not find any versions of model nope")
    assert "no version folders" in empty.json()["error"]


async def test_metadata_mirrors_tf_serving_signature_def(served: Served) -> None:
    response = await served.client.get(f"{DIGITS}/metadata")
    assert response.status_code == 200

    def shape(*sizes: int) -> dict[str, Any]:
        return {"dim": [{"size": str(s), "name": ""} for s in sizes], "unknown_rank": False}

    body = response.json()
    runtime = body["metadata"].pop("runtime")  # not TF Serving's: an extra metadata field
    assert (runtime["name"], runtime["source"]) == ("litert", "export")
    assert body == {
        "model_spec": {"name": "tiny-digits", "signature_name": "", "version": "1"},
        "metadata": {
            "signature_def": {
                "signature_def": {
                    "serving_default": {
                        "inputs": {
                            "pixels": {
                                "dtype": "DT_FLOAT",
                                "tensor_shape": shape(-1, 28, 28, 1),
                                "name": "serving_default_pixels:0",
                            }
                        },
                        "outputs": {
                            "probabilities": {
                                "dtype": "DT_FLOAT",
                                "tensor_shape": shape(-1, 10),
                                "name": "StatefulPartitionedCall:0",
                            }
                        },
                        "method_name": "tensorflow/serving/predict",
                    }
                }
            }
        },
    }


async def test_version_metadata(mixed: Served, served: Served) -> None:
    pinned = (await mixed.client.get(f"{DIGITS}/versions/2/metadata")).json()
    xray = (await served.client.get("/v1/models/tiny-xray/versions/1/metadata")).json()
    assert pinned["model_spec"]["version"] == "2"
    signature = xray["metadata"]["signature_def"]["signature_def"]["serving_default"]
    dims = signature["inputs"]["pixels"]["tensor_shape"]["dim"]
    assert [d["size"] for d in dims] == ["-1", "32", "32", "1"]
    dims = signature["outputs"]["probabilities"]["tensor_shape"]["dim"]
    assert [d["size"] for d in dims] == ["-1", "2"]
    failed = await mixed.client.get(f"{DIGITS}/versions/3/metadata")
    assert failed.status_code == 503


# Predict ---------------------------------------------------------------------------


async def test_row_and_columnar_tensors_go_to_the_model_as_they_are(served: Served) -> None:
    batch = pixels(3)
    expected = await core_probabilities(served, batch)
    requests: dict[str, dict[str, Any]] = {
        "instances": {"instances": batch.tolist()},
        "instances [H, W]": {"instances": batch[..., 0].tolist()},
        "named instances": {"instances": [{"pixels": p.tolist()} for p in batch]},
        "inputs": {"inputs": batch.tolist()},
        "named inputs": {"inputs": {"pixels": batch[..., 0].tolist()}},
        "signature": {"signature_name": "serving_default", "instances": batch.tolist()},
    }
    for label, body in requests.items():
        response = await served.client.post(f"{DIGITS}:predict", json=body)
        assert response.status_code == 200, (label, response.text)
        key = "predictions" if "instances" in body else "outputs"
        assert response.json() == {key: expected}, label


async def test_b64_images_match_the_native_probabilities(served: Served) -> None:
    images = [png(1), png(2)]
    expected = await native_probabilities(served, images)
    requests: dict[str, dict[str, Any]] = {
        "instances": {"instances": [b64(i) for i in images]},
        "named instances": {"instances": [{"pixels": b64(i)} for i in images]},
        "inputs": {"inputs": [b64(i) for i in images]},
        "named inputs": {"inputs": {"pixels": [b64(i) for i in images]}},
    }
    for label, body in requests.items():
        response = await served.client.post(f"{DIGITS}:predict", json=body)
        assert response.status_code == 200, (label, response.text)
        key = "predictions" if "instances" in body else "outputs"
        assert response.json()[key] == expected, label


BLANK_PAGE = encode(np.full((60, 40), 230, dtype=np.uint8))


async def test_b64_images_to_a_digit_model_say_whether_a_digit_was_found(served: Served) -> None:
    images = [b64(png(1)), b64(BLANK_PAGE)]
    predicted = await served.client.post(f"{DIGITS}:predict", json={"instances": images})
    columnar = await served.client.post(f"{DIGITS}:predict", json={"inputs": images})
    classified = await served.client.post(f"{DIGITS}:classify", json={"instances": images})
    for response in (predicted, columnar, classified):
        assert response.status_code == 200, response.text
        assert response.json()["digit_found"] == [True, False]
    assert len(predicted.json()["predictions"]) == 2  # the shape clients read is unchanged
    tensors = await served.client.post(f"{DIGITS}:predict", json={"instances": pixels(2).tolist()})
    xray = await served.client.post(
        "/v1/models/tiny-xray:predict", json={"instances": [b64(png())]}
    )
    assert "digit_found" not in tensors.json()
    assert "digit_found" not in xray.json()


async def test_b64_accepts_url_safe_and_unpadded(served: Served) -> None:
    image = png(3)
    url_safe = base64.urlsafe_b64encode(image).decode().rstrip("=")
    standard = await served.client.post(f"{DIGITS}:predict", json={"instances": [b64(image)]})
    loose = await served.client.post(f"{DIGITS}:predict", json={"instances": [{"b64": url_safe}]})
    assert loose.status_code == 200
    assert loose.json() == standard.json()


async def test_pinned_version_serves_that_version(mixed: Served) -> None:
    batch = pixels(2, seed=5)
    for version in (1, 2):
        response = await mixed.client.post(
            f"{DIGITS}/versions/{version}:predict", json={"instances": batch.tolist()}
        )
        assert response.json()["predictions"] == await core_probabilities(mixed, batch, version)
    latest = await mixed.client.post(f"{DIGITS}:predict", json={"instances": batch.tolist()})
    assert latest.json()["predictions"] == await core_probabilities(mixed, batch, 2)


# Classify --------------------------------------------------------------------------


async def test_classify_ranks_every_class_by_score(served: Served) -> None:
    batch = pixels(2, seed=7)
    response = await served.client.post(f"{DIGITS}:classify", json={"instances": batch.tolist()})
    assert response.status_code == 200
    results = response.json()["results"]
    for result, row in zip(results, await core_probabilities(served, batch), strict=True):
        assert sorted(label for label, _ in result) == [str(d) for d in range(10)]
        assert [score for _, score in result] == sorted(row, reverse=True)
        assert result[0][0] == str(int(np.argmax(row)))


async def test_classify_reads_examples_images_and_versions(served: Served) -> None:
    image = png(4)
    expected = (await native_probabilities(served, [image]))[0]
    examples = await served.client.post(
        f"{DIGITS}/versions/1:classify", json={"examples": [{"pixels": b64(image)}]}
    )
    [result] = examples.json()["results"]
    assert dict(result) == {str(d): p for d, p in enumerate(expected)}
    xray = await served.client.post(
        "/v1/models/tiny-xray:classify", json={"inputs": [b64(png(size=40))]}
    )
    assert {label for label, _ in xray.json()["results"][0]} == {"NORMAL", "PNEUMONIA"}


async def test_classify_puts_the_operating_point_label_first_and_keeps_the_scores(
    thresholded: Served,
) -> None:
    batch = np.stack([np.full((XRAY_SIZE, XRAY_SIZE, 1), shade) for shade in (150.0, 230.0)])
    body = {"instances": batch.tolist()}
    argmax = await thresholded.client.post("/v1/models/tiny-xray:classify", json=body)
    at_point = await thresholded.client.post(f"/v1/models/{THRESHOLDED_XRAY}:classify", json=body)
    probabilities = await thresholded.client.post(
        f"/v1/models/{THRESHOLDED_XRAY}:predict", json=body
    )
    for plain, decided, row in zip(
        argmax.json()["results"],
        at_point.json()["results"],
        probabilities.json()["predictions"],
        strict=True,
    ):
        normal, pneumonia = row
        assert XRAY_THRESHOLD <= pneumonia < 0.5, "the premise: argmax and threshold disagree"
        assert plain == [["NORMAL", normal], ["PNEUMONIA", pneumonia]]
        # The label first, though its score is the lower; scores are the probabilities.
        assert decided == [["PNEUMONIA", pneumonia], ["NORMAL", normal]]


# Errors ----------------------------------------------------------------------------

NAN_BODY = '{"instances": [[' + ",".join(["[" + ",".join(["NaN"] * 28) + "]"] * 28) + "]]}"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"instances": pixels(1, size=27).tolist()}, "[N, 28, 28, 1] or [N, 28, 28]"),
        ({"instances": np.zeros((1, 28, 28, 3)).tolist()}, "has shape [1, 28, 28, 3]"),
        ({"instances": [[[0] * 28] * 28, [[0] * 27] * 28]}, "not a regular tensor"),
        ({"instances": [[["a"] * 28] * 28]}, "must hold numbers"),
        ({"instances": [[[True] * 28] * 28]}, "must hold numbers"),
        ({"instances": [1e39 * np.ones((28, 28))]}, "NaN or infinite"),
        ({"instances": [], "signature_name": "serving_default"}, '"instances" is empty'),
        ({"instances": [[0]], "inputs": [[0]]}, "not both"),
        ({"signature_name": "serving_default"}, 'missing "instances" or "inputs"'),
        ({"instances": [[0]], "signature_name": "predict"}, "not found in signature def"),
        ({"instances": [{"b64": "not base64!"}]}, "is not valid base64"),
        ({"instances": [b64(b"plain text, not an image")]}, "not a PNG, JPEG"),
        # A tensor is answered whole or not at all: one bad image fails the request.
        ({"instances": [b64(png()), b64(b"plain text")]}, "instances[1]: not a PNG, JPEG"),
        ({"instances": [b64(png()), np.zeros((28, 28)).tolist()]}, "mixes"),
        ({"instances": [{"image": b64(png())}]}, "the signature has one input, 'pixels'"),
        ({"inputs": {"pixels": b64(png())}}, '"inputs" must be a list'),
        ({"instances": "pixels"}, "invalid request body: instances"),
        ({"examples": [[0]]}, "missing"),  # examples are for :classify only
    ],
)
async def test_bad_input_is_400_with_an_error_string(
    served: Served, body: dict[str, Any], message: str
) -> None:
    response = await served.client.post(f"{DIGITS}:predict", json=_jsonable(body))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert isinstance(error, str) and message in error


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (NAN_BODY, "NaN or infinite"),
        (NAN_BODY.replace("NaN", "Infinity"), "NaN or infinite"),
        ('{"instances": [', "malformed JSON"),
        ("", "malformed JSON"),
    ],
)
async def test_bad_json_is_400(served: Served, content: str, message: str) -> None:
    response = await served.client.post(f"{DIGITS}:predict", content=content)
    assert response.status_code == 400
    assert message in response.json()["error"]


async def test_classify_refuses_examples_with_instances(served: Served) -> None:
    body = {"examples": [[0]], "instances": [[0]]}
    response = await served.client.post(f"{DIGITS}:classify", json=body)
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/v1/models/nope:predict", "Servable not found for request: Latest(nope)"),
        (
            f"{DIGITS}/versions/9:predict",
            "Servable not found for request: Specific(tiny-digits, 9)",
        ),
        ("/v1/models/nope:classify", "Servable not found for request: Latest(nope)"),
        ("/v1/models/nope/metadata", "Servable not found for request: Latest(nope)"),
    ],
)
async def test_unknown_model_or_version_is_404(served: Served, path: str, message: str) -> None:
    response = await served.client.post(path, json={"instances": pixels(1).tolist()})
    if path.endswith("metadata"):
        response = await served.client.get(path)
    assert response.status_code == 404
    assert response.json()["error"].startswith(message)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value
