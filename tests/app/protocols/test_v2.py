"""Open Inference Protocol V2 (/v2): health, metadata, infer, binary data, classification."""

from __future__ import annotations

import base64
import gzip
import json
import struct
import zlib
from typing import Any

import httpx
import numpy as np
import pytest

from tests.app.conftest import ServeFn
from tests.app.images import encode, png
from tests.app.protocols.conftest import THRESHOLDED_XRAY, XRAY_THRESHOLD, Served
from tests.app.tiny_models import XRAY_SIZE

pytestmark = pytest.mark.anyio

DIGITS = "/v2/models/tiny-digits"
INFER = f"{DIGITS}/infer"
HEADER = "Inference-Header-Content-Length"


def pixels(n: int, seed: int = 0, size: int = 28) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 1)).astype(np.float32)


def fp32(batch: np.ndarray, **extra: Any) -> dict[str, Any]:
    return {"name": "pixels", "shape": list(batch.shape), "datatype": "FP32", **extra}


def bytes_input(shape: list[int], **extra: Any) -> dict[str, Any]:
    return {"name": "pixels", "datatype": "BYTES", "shape": shape, **extra}


def length_prefixed(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def with_binary(header: dict[str, Any], tail: bytes) -> tuple[bytes, dict[str, str]]:
    text = json.dumps(header).encode()
    return text + tail, {HEADER: str(len(text))}


def read_response(response: httpx.Response) -> dict[str, np.ndarray]:
    """Every output as an array, from JSON data or the binary tail."""
    length = response.headers.get(HEADER)
    header = json.loads(response.content[: int(length)] if length else response.content)
    tail = response.content[int(length) :] if length else b""
    arrays = {}
    for output in header["outputs"]:
        size = (output.get("parameters") or {}).get("binary_data_size")
        if size is None:
            values = np.array(output["data"])
        elif output["datatype"] == "BYTES":
            values = np.array(_split_length_prefixed(tail[:size]))
        elif output["datatype"] == "BOOL":
            values = np.frombuffer(tail[:size], dtype=bool)
        else:
            values = np.frombuffer(tail[:size], dtype="<f4")
        tail = tail[size or 0 :]
        arrays[output["name"]] = values.reshape(output["shape"])
    return arrays


def _split_length_prefixed(data: bytes) -> list[str]:
    items = []
    while data:
        (n,) = struct.unpack_from("<I", data)
        items.append(data[4 : 4 + n].decode())
        data = data[4 + n :]
    return items


async def core_probabilities(served: Served, batch: np.ndarray, version: int | None = None):
    return (await served.dataplane.classify_pixels("tiny-digits", version, batch)).probabilities


async def native_probabilities(served: Served, images: list[bytes]) -> np.ndarray:
    files = [("files", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
    body = (await served.client.post(f"/api/v1{DIGITS[3:]}/probabilities", files=files)).json()
    return np.array([[r["probabilities"][c] for c in body["class_names"]] for r in body["results"]])


# Server and model metadata, health -------------------------------------------------


async def test_server_metadata_and_health(served: Served) -> None:
    metadata = (await served.client.get("/v2")).json()
    live = await served.client.get("/v2/health/live")
    ready = await served.client.get("/v2/health/ready")
    assert metadata == {
        "name": "vision-serving",
        "version": "0.1.0",
        "extensions": ["binary_tensor_data", "classification"],
    }
    assert (live.status_code, live.json()) == (200, {"live": True})
    assert (ready.status_code, ready.json()) == (200, {"ready": True})


async def test_server_not_ready_is_503_with_the_reason(mixed: Served) -> None:
    ready = await mixed.client.get("/v2/health/ready")
    assert ready.status_code == 503
    assert ready.json()["ready"] is False
    assert "empty-model" in ready.json()["error"]


async def test_model_metadata(served: Served, mixed: Served) -> None:
    digits = (await served.client.get(DIGITS)).json()
    xray = (await served.client.get("/v2/models/tiny-xray/versions/1")).json()
    parameters = digits.pop("parameters")  # not the protocol's; clients ignore it
    assert (parameters["runtime"], parameters["runtime_source"]) == ("litert", "export")
    assert parameters["runtime_reason"].startswith("model.tflite from the export agrees")
    assert digits == {
        "name": "tiny-digits",
        "versions": ["1"],
        "platform": "litert_tflite",
        "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [-1, 28, 28, 1]}],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
            {"name": "digit_found", "datatype": "BOOL", "shape": [-1]},
        ],
    }
    assert xray["inputs"][0]["shape"] == [-1, 32, 32, 1]
    assert xray["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}]
    assert (await mixed.client.get(f"{DIGITS}/versions/2")).json()["versions"] == ["1", "2"]


async def test_model_metadata_names_the_saved_model_platform_when_it_serves(
    serve: ServeFn,
) -> None:
    async with serve(runtime="savedmodel") as client:
        metadata = (await client.get(DIGITS)).json()
    assert metadata["platform"] == "tensorflow_savedmodel"
    assert metadata["parameters"] == {
        "runtime": "savedmodel",
        "runtime_reason": "VISION_SERVING_RUNTIME=savedmodel",
    }


@pytest.mark.parametrize(
    ("path", "status", "ready"),
    [
        (f"{DIGITS}/ready", 200, True),
        (f"{DIGITS}/versions/1/ready", 200, True),
        (f"{DIGITS}/versions/3/ready", 503, False),  # failed to load
        ("/v2/models/empty-model/ready", 503, False),  # no version folders
    ],
)
async def test_model_readiness(mixed: Served, path: str, status: int, ready: bool) -> None:
    response = await mixed.client.get(path)
    assert response.status_code == status
    assert response.json()["ready"] is ready


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/nope",
        "/v2/models/nope/ready",
        f"{DIGITS}/versions/9",
        f"{DIGITS}/versions/9/ready",
    ],
)
async def test_unknown_model_or_version_is_404(served: Served, path: str) -> None:
    response = await served.client.get(path)
    assert response.status_code == 404
    assert isinstance(response.json()["error"], str)


# Infer -----------------------------------------------------------------------------


async def test_infer_fp32_json_equals_the_core(served: Served) -> None:
    batch = pixels(3)
    expected = await core_probabilities(served, batch)
    for label, tensor in {
        "nested [N, H, W, C]": fp32(batch, data=batch.tolist()),
        "flat": fp32(batch, data=batch.ravel().tolist()),
        "[N, H, W]": fp32(batch[..., 0], data=batch[..., 0].tolist()),
    }.items():
        response = await served.client.post(INFER, json={"id": "req-7", "inputs": [tensor]})
        assert response.status_code == 200, (label, response.text)
        body = response.json()
        assert (body["model_name"], body["model_version"], body["id"]) == (
            "tiny-digits",
            "1",
            "req-7",
        )
        [output] = body["outputs"]
        assert (output["name"], output["datatype"], output["shape"]) == (
            "probabilities",
            "FP32",
            [3, 10],
        )
        assert output["data"] == expected.ravel().tolist(), label


async def test_infer_without_id_leaves_it_out(served: Served) -> None:
    batch = pixels(1)
    body = {"inputs": [fp32(batch, data=batch.ravel().tolist())]}
    response = await served.client.post(INFER, json=body)
    assert "id" not in response.json()


@pytest.mark.parametrize("binary_input", [True, False])
@pytest.mark.parametrize("binary_output", [True, False, "request-wide"])
async def test_binary_tensor_data_in_and_out(
    served: Served, binary_input: bool, binary_output: bool | str
) -> None:
    batch = pixels(2, seed=3)
    raw = batch.astype("<f4").tobytes()
    if binary_input:
        tensor = fp32(batch, parameters={"binary_data_size": len(raw)})
    else:
        tensor = fp32(batch, data=batch.ravel().tolist())
    header: dict[str, Any] = {"inputs": [tensor]}
    if binary_output == "request-wide":
        header["parameters"] = {"binary_data_output": True}
    else:
        header["outputs"] = [
            {"name": "probabilities", "parameters": {"binary_data": binary_output}}
        ]
    content, headers = with_binary(header, raw if binary_input else b"")
    response = await served.client.post(INFER, content=content, headers=headers)
    assert response.status_code == 200, response.text
    as_binary = binary_output is not False
    assert (HEADER in response.headers) is as_binary
    assert response.headers["content-type"].startswith(
        "application/octet-stream" if as_binary else "application/json"
    )
    probabilities = read_response(response)["probabilities"]
    np.testing.assert_array_equal(probabilities, await core_probabilities(served, batch))


async def test_bytes_images_match_the_native_probabilities(served: Served) -> None:
    images = [png(1), png(2)]
    expected = await native_probabilities(served, images)
    encoded = [base64.b64encode(i).decode() for i in images]
    raw = length_prefixed(images)
    bodies = {
        "JSON base64 [N]": ({"inputs": [bytes_input([2], data=encoded)]}, b""),
        "JSON base64 [N, 1]": ({"inputs": [bytes_input([2, 1], data=[[e] for e in encoded])]}, b""),
        "binary [N]": (
            {"inputs": [bytes_input([2], parameters={"binary_data_size": len(raw)})]},
            raw,
        ),
    }
    for label, (header, tail) in bodies.items():
        content, headers = with_binary(header, tail)
        response = await served.client.post(INFER, content=content, headers=headers)
        assert response.status_code == 200, (label, response.text)
        np.testing.assert_allclose(read_response(response)["probabilities"], expected, rtol=1e-6)


BLANK_PAGE = encode(np.full((60, 40), 230, dtype=np.uint8))


async def test_bytes_images_to_a_digit_model_say_whether_a_digit_was_found(
    served: Served,
) -> None:
    images = [png(1), BLANK_PAGE]
    raw = length_prefixed(images)
    as_json = {"inputs": [bytes_input([2], data=[base64.b64encode(i).decode() for i in images])]}
    as_binary = {
        "inputs": [bytes_input([2], parameters={"binary_data_size": len(raw)})],
        "parameters": {"binary_data_output": True},
    }
    for header, tail in ((as_json, b""), (as_binary, raw)):
        content, headers = with_binary(header, tail)
        response = await served.client.post(INFER, content=content, headers=headers)
        assert response.status_code == 200, response.text
        outputs = read_response(response)
        assert outputs["digit_found"].tolist() == [True, False]
        assert outputs["probabilities"].shape == (2, 10)
    only_probabilities = {**as_json, "outputs": [{"name": "probabilities"}]}
    response = await served.client.post(INFER, json=only_probabilities)
    assert [o["name"] for o in response.json()["outputs"]] == ["probabilities"]


async def test_fp32_pixels_get_no_digit_found_and_asking_for_it_is_400(served: Served) -> None:
    plain = await served.client.post(INFER, json={"inputs": [fp32(ONE, data=ONE_DATA)]})
    assert [o["name"] for o in plain.json()["outputs"]] == ["probabilities"]
    asked = await served.client.post(
        INFER,
        json={"inputs": [fp32(ONE, data=ONE_DATA)], "outputs": [{"name": "digit_found"}]},
    )
    assert asked.status_code == 400
    assert "BYTES images only" in asked.json()["error"]
    xray = await served.client.post(
        "/v2/models/tiny-xray/infer",
        json={
            "inputs": [bytes_input([1], data=[base64.b64encode(png(1)).decode()])],
            "outputs": [{"name": "digit_found"}],
        },
    )
    assert xray.status_code == 400
    assert "unknown output 'digit_found'" in xray.json()["error"]


async def test_classification_returns_top_k_score_index_label(served: Served) -> None:
    batch = pixels(2, seed=11)
    probabilities = await core_probabilities(served, batch)
    for binary in (False, True):
        output = {
            "name": "probabilities",
            "parameters": {"classification": 3, "binary_data": binary},
        }
        body = {"inputs": [fp32(batch, data=batch.tolist())], "outputs": [output]}
        response = await served.client.post(INFER, json=body)
        assert response.status_code == 200, response.text
        header = response.json() if not binary else None
        if header is not None:
            assert header["outputs"][0]["datatype"] == "BYTES"
        top = read_response(response)["probabilities"]
        assert top.shape == (2, 3)
        for row, expected in zip(top, probabilities, strict=True):
            parsed = [item.split(":") for item in row]
            ranked = np.argsort(-expected, kind="stable")[:3]
            assert [int(index) for _, index, _ in parsed] == ranked.tolist()
            assert [label for _, _, label in parsed] == [str(i) for i in ranked]
            assert [float(score) for score, _, _ in parsed] == pytest.approx(
                expected[ranked].tolist(), abs=1e-6
            )


async def test_classification_puts_the_operating_point_label_first(
    thresholded: Served,
) -> None:
    batch = np.stack([np.full((XRAY_SIZE, XRAY_SIZE, 1), shade) for shade in (150.0, 230.0)])
    inputs = [fp32(batch, data=batch.ravel().tolist())]

    async def infer(model: str, classification: int | None = None) -> list[Any]:
        output: dict[str, Any] = {"name": "probabilities"}
        if classification is not None:
            output["parameters"] = {"classification": classification}
        body = {"inputs": inputs, "outputs": [output]}
        response = await thresholded.client.post(f"/v2/models/{model}/infer", json=body)
        assert response.status_code == 200, response.text
        return response.json()["outputs"][0]["data"]

    flat = await infer(THRESHOLDED_XRAY)
    rows = [flat[0:2], flat[2:4]]  # [N, classes], row-major
    assert await infer("tiny-xray") == flat  # probabilities unchanged by the threshold
    top1 = await infer(THRESHOLDED_XRAY, classification=1)
    top2 = await infer(THRESHOLDED_XRAY, classification=2)
    plain = await infer("tiny-xray", classification=1)
    for i, (normal, pneumonia) in enumerate(rows):
        assert XRAY_THRESHOLD <= pneumonia < 0.5, "the premise: argmax and threshold disagree"
        assert plain[i] == f"{normal:.6f}:0:NORMAL"
        assert top1[i] == f"{pneumonia:.6f}:1:PNEUMONIA"
        assert top2[2 * i : 2 * i + 2] == [f"{pneumonia:.6f}:1:PNEUMONIA", f"{normal:.6f}:0:NORMAL"]


async def test_classification_count_is_capped_at_the_classes(served: Served) -> None:
    image = base64.b64encode(png(size=40)).decode()
    body = {
        "inputs": [bytes_input([1], data=[image])],
        "outputs": [{"name": "probabilities", "parameters": {"classification": 5}}],
    }
    response = await served.client.post("/v2/models/tiny-xray/infer", json=body)
    [output] = response.json()["outputs"]
    assert output["shape"] == [1, 2]
    assert {item.rsplit(":", 1)[1] for item in output["data"]} == {"NORMAL", "PNEUMONIA"}


async def test_infer_pinned_version(mixed: Served) -> None:
    batch = pixels(1, seed=2)
    for version in (1, 2):
        body = {"inputs": [fp32(batch, data=batch.ravel().tolist())]}
        response = await mixed.client.post(f"{DIGITS}/versions/{version}/infer", json=body)
        assert response.json()["model_version"] == str(version)
        expected = await core_probabilities(mixed, batch, version)
        assert response.json()["outputs"][0]["data"] == expected.ravel().tolist()


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_compressed_request_body(served: Served, encoding: str) -> None:
    batch = pixels(1)
    raw = batch.astype("<f4").tobytes()
    content, headers = with_binary(
        {"inputs": [fp32(batch, parameters={"binary_data_size": len(raw)})]}, raw
    )
    compressed = gzip.compress(content) if encoding == "gzip" else zlib.compress(content)
    response = await served.client.post(
        INFER, content=compressed, headers={**headers, "Content-Encoding": encoding}
    )
    assert response.status_code == 200, response.text
    np.testing.assert_array_equal(
        read_response(response)["probabilities"], await core_probabilities(served, batch)
    )


# Errors ----------------------------------------------------------------------------

ONE = pixels(1)
ONE_DATA = ONE.ravel().tolist()
RAW = ONE.astype("<f4").tobytes()


@pytest.mark.parametrize(
    ("header", "tail", "message"),
    [
        ({"inputs": [fp32(ONE, datatype="INT32", data=ONE_DATA)]}, b"", "datatype INT32"),
        ({"inputs": [fp32(ONE, datatype="FP64", data=ONE_DATA)]}, b"", "datatype FP64"),
        ({"inputs": [fp32(ONE, shape=[1, 27, 28], data=ONE_DATA[:756])]}, b"", "[N, 28, 28, 1]"),
        ({"inputs": [fp32(ONE, shape=[1, 28, 28, 3], data=ONE_DATA * 3)]}, b"", "[N, 28, 28, 1]"),
        ({"inputs": [fp32(ONE, data=ONE_DATA[:-1])]}, b"", "has 783 values, but shape"),
        ({"inputs": [fp32(ONE, data=["a"] * 784)]}, b"", "holds strings"),
        ({"inputs": [fp32(ONE, data=[[0] * 783, [0]])]}, b"", "not a regular"),
        ({"inputs": [fp32(ONE, data=[1e39] * 784)]}, b"", "NaN or infinite"),
        ({"inputs": [fp32(ONE, shape=[0, 28, 28, 1], data=[])]}, b"", "holds no images"),
        ({"inputs": [fp32(ONE, shape=[-1, 28, 28, 1], data=ONE_DATA)]}, b"", "cannot be negative"),
        ({"inputs": [fp32(ONE)]}, b"", "no 'data'"),
        ({"inputs": [fp32(ONE, name="image", data=ONE_DATA)]}, b"", "one input, 'pixels'"),
        ({"inputs": [fp32(ONE, data=ONE_DATA)] * 2}, b"", "one input, 'pixels'"),
        ({"inputs": []}, b"", "invalid request body: inputs"),
        ({"input": []}, b"", "invalid request body: inputs"),
        (
            {"inputs": [fp32(ONE, data=ONE_DATA)], "outputs": [{"name": "logits"}]},
            b"",
            "unknown output 'logits'",
        ),
        (
            {
                "inputs": [fp32(ONE, data=ONE_DATA)],
                "outputs": [{"name": "probabilities", "parameters": {"classification": 0}}],
            },
            b"",
            "classification must be a positive integer",
        ),
        (
            {"inputs": [fp32(ONE, data=ONE_DATA)], "parameters": {"binary_data_output": "yes"}},
            b"",
            "binary_data_output must be true or false",
        ),
        (
            {"inputs": [fp32(ONE, parameters={"binary_data_size": len(RAW) - 4})]},
            RAW[:-4],
            "needs 3136",
        ),
        ({"inputs": [fp32(ONE, parameters={"binary_data_size": len(RAW)})]}, RAW[:-4], "only 3132"),
        (
            {"inputs": [fp32(ONE, parameters={"binary_data_size": len(RAW)})]},
            RAW + b"xx",
            "belong to no input",
        ),
        ({"inputs": [fp32(ONE, parameters={"binary_data_size": -1})]}, b"", "must be a byte count"),
        ({"inputs": [fp32(ONE, data=ONE_DATA, parameters={"binary_data_size": 0})]}, b"", "both"),
        (
            {"inputs": [fp32(ONE, parameters={"binary_data_size": len(RAW)})]},
            np.full(784, np.nan, dtype="<f4").tobytes(),
            "NaN or infinite",
        ),
    ],
)
async def test_bad_fp32_input_is_400(
    served: Served, header: dict[str, Any], tail: bytes, message: str
) -> None:
    content, headers = with_binary(header, tail)
    response = await served.client.post(INFER, content=content, headers=headers)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert isinstance(error, str) and message in error


@pytest.mark.parametrize(
    ("tensor", "tail", "message"),
    [
        (bytes_input([1, 2], data=["", ""]), b"", "[N] or [N, 1]"),
        (bytes_input([2], data=["aGk="]), b"", "has 1 elements, but shape [2]"),
        (bytes_input([1], data=["not base64!"]), b"", "not valid base64"),
        (bytes_input([1], data=["aGVsbG8="]), b"", "not a PNG, JPEG"),
        (
            bytes_input([1], parameters={"binary_data_size": 6}),
            struct.pack("<I", 9) + b"ab",
            "runs past the end",
        ),
        (
            bytes_input([1], parameters={"binary_data_size": 2}),
            b"ab",
            "ends inside an element's length",
        ),
    ],
)
async def test_bad_bytes_input_is_400(
    served: Served, tensor: dict[str, Any], tail: bytes, message: str
) -> None:
    content, headers = with_binary({"inputs": [tensor]}, tail)
    response = await served.client.post(INFER, content=content, headers=headers)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


@pytest.mark.parametrize(
    ("content", "headers", "message"),
    [
        (b'{"inputs": [', {}, "malformed JSON"),
        (b'{"inputs": []}', {HEADER: "99"}, "must be a byte count"),
        (b'{"inputs": []}', {HEADER: "ten"}, "must be a byte count"),
        (b"not gzip", {"Content-Encoding": "gzip"}, "cannot be decompressed"),
    ],
)
async def test_malformed_body_is_400(
    served: Served, content: bytes, headers: dict[str, str], message: str
) -> None:
    response = await served.client.post(INFER, content=content, headers=headers)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


async def test_unknown_content_encoding_is_415(served: Served) -> None:
    response = await served.client.post(INFER, content=b"{}", headers={"Content-Encoding": "br"})
    assert response.status_code == 415


@pytest.mark.parametrize("path", ["/v2/models/nope/infer", f"{DIGITS}/versions/9/infer"])
async def test_infer_on_unknown_model_or_version_is_404(served: Served, path: str) -> None:
    response = await served.client.post(path, json={"inputs": [fp32(ONE, data=ONE_DATA)]})
    assert response.status_code == 404
    assert isinstance(response.json()["error"], str)


# OpenAPI ---------------------------------------------------------------------------


async def test_openapi_groups_each_protocol_under_its_tag(served: Served) -> None:
    spec = (await served.client.get("/openapi.json")).json()
    tags = {tag["name"]: tag["description"] for tag in spec["tags"]}
    assert "TensorFlow Serving REST API (/v1)" in tags
    assert "Open Inference Protocol V2 (/v2)" in tags
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            if path.startswith("/v1/"):
                assert operation["tags"] == ["TensorFlow Serving REST API (/v1)"], path
            if path == "/v2" or path.startswith("/v2/"):
                assert operation["tags"] == ["Open Inference Protocol V2 (/v2)"], path
            if path.startswith(("/v1/", "/v2")):
                assert operation["summary"], path
    infer = spec["paths"]["/v2/models/{name}/infer"]["post"]
    schema = infer["requestBody"]["content"]["application/json"]["schema"]
    assert {"id", "inputs", "outputs", "parameters"} <= set(schema["properties"])
    assert "$ref" not in json.dumps(schema)  # stands alone on the page
    predict = spec["paths"]["/v1/models/{name}:predict"]["post"]
    assert (
        "instances" in predict["requestBody"]["content"]["application/json"]["schema"]["properties"]
    )


async def test_api_key_guards_model_endpoints_of_both_protocols_but_not_probes(
    serve: ServeFn,
) -> None:
    async with serve(api_key="sesame") as client:
        probes = [await client.get(path) for path in ("/v2", "/v2/health/live", "/v2/health/ready")]
        guarded = [
            await client.get(DIGITS),
            await client.post(INFER, json={}),
            await client.get("/v1/models/tiny-digits"),
            await client.post("/v1/models/tiny-digits:predict", json={}),
        ]
        allowed = await client.get(DIGITS, headers={"Authorization": "Bearer sesame"})
    assert [r.status_code for r in probes] == [200, 200, 200]
    assert [r.status_code for r in guarded] == [401] * 4
    assert allowed.status_code == 200
