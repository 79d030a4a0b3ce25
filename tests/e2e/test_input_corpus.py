"""The bad-input corpus against the real server: every case is a clear 4xx, the
server stays healthy and its memory bounded; valid but unusual images get the right
answer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.app.images import encode
from tests.conftest import require_data
from tests.e2e import corpus
from tests.e2e.conftest import LiveServer

DIGIT = "/api/v1/models/mnist-mlp"
XRAY = "/api/v1/models/pneumonia-cnn"


@dataclass
class Case:
    """One request and the 4xx it must get."""

    name: str
    method: str
    path: str
    status: int
    says: str = ""  # a fragment the error message must contain
    kwargs: dict[str, Any] = field(default_factory=dict)


def image_file(name: str, data: bytes, content_type: str = "image/png") -> dict[str, Any]:
    return {"files": {"files": (name, data, content_type)}}


def archive(data: bytes) -> dict[str, Any]:
    return {"files": {"archive": ("labelled.zip", data, "application/zip")}}


def native_cases() -> list[Case]:
    png = encode(np.full((28, 28), 255, dtype=np.uint8))
    noise = encode(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    jpeg = encode(np.full((64, 64), 128, dtype=np.uint8), "JPEG")
    zipped = corpus.zip_bytes({"7/a.png": png})
    predict = f"{DIGIT}/predict"
    evaluate = f"{DIGIT}/evaluate"
    return [
        Case("empty file", "POST", predict, 422, "empty", image_file("e.png", b"")),
        Case("text named .png", "POST", predict, 415, "a.png", image_file("a.png", b"hello")),
        Case("PDF named .png", "POST", predict, 415, "PDF", image_file("a.png", b"%PDF-1.7\n")),
        Case("zip named .png", "POST", predict, 415, "zip", image_file("a.png", zipped)),
        Case(
            "truncated PNG",
            "POST",
            predict,
            422,
            "truncated",
            image_file("t.png", noise[: len(noise) // 2]),
        ),
        Case(
            "truncated JPEG",
            "POST",
            predict,
            422,
            "truncated",
            image_file("t.jpg", jpeg[: len(jpeg) // 2], "image/jpeg"),
        ),
        Case(
            "text sent as text/plain",
            "POST",
            predict,
            415,
            "text/plain",
            image_file("notes.txt", b"just some notes", "text/plain"),
        ),
        Case(
            "decompression bomb",
            "POST",
            predict,
            422,
            "pixels",
            image_file("b.png", corpus.png_bomb()),
        ),
        Case(
            "too many files",
            "POST",
            predict,
            413,
            "limit of 64",
            {"files": [("files", (f"{i}.png", png, "image/png")) for i in range(65)]},
        ),
        Case(
            "body over the limit",
            "POST",
            predict,
            413,
            "over the limit",
            {
                "content": b"\0" * (33 * 1024 * 1024),
                "headers": {"Content-Type": "multipart/form-data; boundary=x"},
            },
        ),
        Case(
            "no files field",
            "POST",
            predict,
            422,
            "no field 'files' in the upload (found 'other')",
            {"files": {"other": (None, b"x")}},
        ),
        Case(
            "not multipart at all",
            "POST",
            predict,
            400,
            "not multipart form data",
            {"content": b'{"files": []}', "headers": {"Content-Type": "application/json"}},
        ),
        Case(
            "malformed multipart",
            "POST",
            predict,
            400,
            "",
            {
                "content": b"--x\r\nnot a header\r\n\r\n",
                "headers": {"Content-Type": "multipart/form-data; boundary=x"},
            },
        ),
        Case(
            "unknown model",
            "POST",
            "/api/v1/models/nope/predict",
            404,
            "nope",
            image_file("a.png", png),
        ),
        Case(
            "unknown version",
            "POST",
            f"{DIGIT}/versions/99/predict",
            404,
            "99",
            image_file("a.png", png),
        ),
        Case(
            "version not a number",
            "POST",
            f"{DIGIT}/versions/x/predict",
            422,
            "version",
            image_file("a.png", png),
        ),
        Case(
            "version zero",
            "POST",
            f"{DIGIT}/versions/0/predict",
            422,
            "version",
            image_file("a.png", png),
        ),
        Case("top_k zero", "POST", predict + "?top_k=0", 422, "top_k", image_file("a.png", png)),
        Case(
            "top_k not a number",
            "POST",
            predict + "?top_k=lots",
            422,
            "top_k",
            image_file("a.png", png),
        ),
        Case(
            "include_predictions not a bool",
            "POST",
            evaluate + "?include_predictions=maybe",
            422,
            "include_predictions",
            archive(zipped),
        ),
        Case(
            "archive path traversal",
            "POST",
            evaluate,
            422,
            "unsafe path",
            archive(corpus.zip_bytes({"../7/a.png": png})),
        ),
        Case(
            "archive absolute path",
            "POST",
            evaluate,
            422,
            "unsafe path",
            archive(corpus.zip_bytes({"/etc/7/a.png": png})),
        ),
        Case(
            "archive symlink",
            "POST",
            evaluate,
            422,
            "symbolic link",
            archive(corpus.zip_bytes({"7/a.png": b"/etc/passwd"}, symlinks=("7/a.png",))),
        ),
        Case(
            "zip bomb",
            "POST",
            evaluate,
            413,
            "uncompressed",
            archive(corpus.zip_bytes({"7/bomb.png": b"\0" * (260 * 1024 * 1024)})),
        ),
        Case(
            "too many archive entries",
            "POST",
            evaluate,
            413,
            "entries",
            archive(corpus.zip_bytes({f"7/{i}.png": b"" for i in range(5001)})),
        ),
        Case(
            "unknown class folder",
            "POST",
            evaluate,
            422,
            "not class names",
            archive(corpus.zip_bytes({"eleven/a.png": png})),
        ),
        Case(
            "archive with no images",
            "POST",
            evaluate,
            422,
            "no images",
            archive(corpus.zip_bytes({"7/": b""})),
        ),
        Case(
            "archive that is not a zip", "POST", evaluate, 422, "zip", archive(b"PK\x03\x04broken")
        ),
        Case(
            "labels do not match the files",
            "POST",
            evaluate,
            422,
            "2 labels for 1 files",
            {"files": {"files": ("a.png", png, "image/png")}, "data": {"labels": "7,1"}},
        ),
        Case(
            "labels that are not classes",
            "POST",
            evaluate,
            422,
            "seven",
            {"files": {"files": ("a.png", png, "image/png")}, "data": {"labels": "seven"}},
        ),
        Case(
            "archive and files together",
            "POST",
            evaluate,
            400,
            "not both",
            {
                "files": [
                    ("archive", ("a.zip", zipped, "application/zip")),
                    ("files", ("a.png", png, "image/png")),
                ],
                "data": {"labels": "7"},
            },
        ),
        Case(
            "X-ray model given a text file",
            "POST",
            f"{XRAY}/predict",
            415,
            "x.jpeg",
            image_file("x.jpeg", b"abc", "image/jpeg"),
        ),
        Case("wrong method", "GET", predict, 405, ""),
        Case("unknown path", "GET", "/api/v1/nothing", 404, ""),
    ]


def protocol_cases() -> list[Case]:
    tfs = "/v1/models/mnist-mlp:predict"
    v2 = "/v2/models/mnist-mlp/infer"
    zeros = [[[0.0]] * 28] * 28

    def v2_input(**overrides: Any) -> dict[str, Any]:
        tensor = {"name": "pixels", "shape": [1, 28, 28, 1], "datatype": "FP32"}
        tensor["data"] = [0.0] * 784
        return {"json": {"inputs": [{**tensor, **overrides}]}}

    def raw(body: bytes, **headers: str) -> dict[str, Any]:
        return {"content": body, "headers": {"Content-Type": "application/json", **headers}}

    nested = b"[" * 150_000 + b"]" * 150_000
    return [
        Case("TFS malformed JSON", "POST", tfs, 400, "", raw(b'{"instances": [1,')),
        Case(
            "TFS 150,000 nested levels",
            "POST",
            tfs,
            400,
            "",
            raw(b'{"instances": ' + nested + b"}"),
        ),
        Case(
            "TFS instances and inputs",
            "POST",
            tfs,
            400,
            "",
            {"json": {"instances": [zeros], "inputs": [zeros]}},
        ),
        Case("TFS neither instances nor inputs", "POST", tfs, 400, "", {"json": {"signature": 1}}),
        Case(
            "TFS wrong tensor shape",
            "POST",
            tfs,
            400,
            "shape",
            {"json": {"instances": [[[0.0] * 27] * 28]}},
        ),
        Case("TFS NaN", "POST", tfs, 400, "", raw(b'{"instances": [[[NaN]]]}')),
        Case("TFS Infinity", "POST", tfs, 400, "", raw(b'{"instances": [[[Infinity]]]}')),
        Case(
            "TFS non-numeric values",
            "POST",
            tfs,
            400,
            "",
            {"json": {"instances": [[["a"] * 28] * 28]}},
        ),
        Case(
            "TFS unknown signature",
            "POST",
            tfs,
            400,
            "signature",
            {"json": {"instances": [zeros], "signature_name": "other"}},
        ),
        Case(
            "TFS bad b64", "POST", tfs, 400, "", {"json": {"instances": [{"b64": "%%%not base64"}]}}
        ),
        Case(
            "TFS b64 of a PDF",
            "POST",
            tfs,
            400,
            "PDF",
            {"json": {"instances": [{"b64": "JVBERi0xLjcK"}]}},
        ),
        Case(
            "TFS unknown model",
            "POST",
            "/v1/models/nope:predict",
            404,
            "nope",
            {"json": {"instances": [zeros]}},
        ),
        Case("TFS unknown version", "GET", "/v1/models/mnist-mlp/versions/99", 404, "99"),
        Case("V2 malformed JSON", "POST", v2, 400, "", raw(b'{"inputs": [')),
        Case("V2 150,000 nested levels", "POST", v2, 400, "", raw(b'{"inputs": ' + nested + b"}")),
        Case("V2 wrong datatype", "POST", v2, 400, "FP32", v2_input(datatype="INT8")),
        Case("V2 unknown datatype", "POST", v2, 400, "", v2_input(datatype="FP128")),
        Case(
            "V2 wrong shape",
            "POST",
            v2,
            400,
            "shape",
            v2_input(shape=[1, 27, 28, 1], data=[0.0] * 756),
        ),
        Case("V2 data size does not match shape", "POST", v2, 400, "", v2_input(data=[0.0] * 700)),
        Case("V2 negative dimension", "POST", v2, 400, "", v2_input(shape=[-1, 28, 28, 1])),
        Case(
            "V2 NaN",
            "POST",
            v2,
            400,
            "",
            raw(
                b'{"inputs": [{"name": "pixels", "shape": [1, 1], '
                b'"datatype": "FP32", "data": [NaN]}]}'
            ),
        ),
        Case("V2 no inputs", "POST", v2, 400, "", {"json": {"inputs": []}}),
        Case(
            "V2 classification not a number",
            "POST",
            v2,
            400,
            "",
            {
                "json": {
                    **v2_input()["json"],
                    "outputs": [
                        {"name": "probabilities", "parameters": {"classification": "many"}}
                    ],
                }
            },
        ),
        Case(
            "V2 classification out of range",
            "POST",
            v2,
            400,
            "",
            {
                "json": {
                    **v2_input()["json"],
                    "outputs": [{"name": "probabilities", "parameters": {"classification": -3}}],
                }
            },
        ),
        Case(
            "V2 unknown output",
            "POST",
            v2,
            400,
            "",
            {"json": {**v2_input()["json"], "outputs": [{"name": "logits"}]}},
        ),
        Case(
            "V2 binary header longer than the body",
            "POST",
            v2,
            400,
            "",
            {"content": b'{"inputs": []}', "headers": {"Inference-Header-Content-Length": "9999"}},
        ),
        Case("V2 unknown model", "POST", "/v2/models/nope/infer", 404, "nope", v2_input()),
        Case("V2 unknown version", "GET", "/v2/models/mnist-mlp/versions/99", 404, "99"),
    ]


CASES = native_cases() + protocol_cases()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30
    families = {
        ("v1" if c.path.startswith("/v1") else "v2" if c.path.startswith("/v2") else "native")
        for c in CASES
    }
    assert families == {"native", "v1", "v2"}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gets_a_clear_4xx(case: Case, client: httpx.Client) -> None:
    response = client.request(case.method, case.path, **case.kwargs)
    assert response.status_code == case.status, response.text
    body = response.json()
    assert isinstance(body["error"], str) and body["error"]
    assert case.says in body["error"], body["error"]
    assert client.get("/healthz").status_code == 200


def test_the_corpus_leaves_memory_bounded(live_server: LiveServer, client: httpx.Client) -> None:
    before = rss_kib(live_server.process.pid)
    for _ in range(3):
        for case in CASES:
            client.request(case.method, case.path, **case.kwargs)
    after = rss_kib(live_server.process.pid)
    print(f"server RSS {before / 1024:.0f} MiB -> {after / 1024:.0f} MiB over 3 corpus passes")
    assert after - before < 300 * 1024
    assert client.get("/readyz").status_code == 200


@pytest.fixture(scope="module")
def mnist_digits() -> list[tuple[np.ndarray, int]]:
    with np.load(require_data("mnist.npz")) as arrays:
        images, labels = arrays["x_test"], arrays["y_test"]
    # well-formed examples of several classes that the model reads right as plain PNGs
    return [(images[i], int(labels[i])) for i in (0, 1, 2, 3, 4, 7, 8, 11)]


UNUSUAL: dict[str, tuple[Callable[[np.ndarray], bytes], str]] = {
    "animated GIF (first frame)": (corpus.animated_gif, "image/gif"),
    "16-bit PNG": (corpus.sixteen_bit_png, "image/png"),
    "CMYK JPEG": (corpus.cmyk_jpeg, "image/jpeg"),
    "palette PNG with transparency": (corpus.palette_png_with_transparency, "image/png"),
    "RGBA PNG": (corpus.rgba_png, "image/png"),
    "EXIF-rotated JPEG": (corpus.exif_rotated_jpeg, "image/jpeg"),
    "very large JPEG (12 MP)": (corpus.very_large, "image/jpeg"),
    "WebP": (corpus.webp, "image/webp"),
    "TIFF": (corpus.tiff, "image/tiff"),
    "BMP": (corpus.bmp, "image/bmp"),
    "PNG sent as image/jpeg": (lambda d: encode(d), "image/jpeg"),
    "PNG sent as octet-stream": (lambda d: encode(d), "application/octet-stream"),
}


@pytest.mark.parametrize("kind", list(UNUSUAL))
def test_valid_unusual_images_get_the_right_answer(
    kind: str, client: httpx.Client, mnist_digits: list[tuple[np.ndarray, int]]
) -> None:
    render, content_type = UNUSUAL[kind]
    files = [("files", (f"{i}", render(d), content_type)) for i, (d, _) in enumerate(mnist_digits)]
    response = client.post(f"{DIGIT}/predict", files=files)
    assert response.status_code == 200, response.text
    predicted = [int(p["label"]) for p in response.json()["predictions"]]
    expected = [label for _, label in mnist_digits]
    right = sum(p == e for p, e in zip(predicted, expected, strict=True))
    assert right >= len(expected) - 1, f"{kind}: predicted {predicted}, expected {expected}"


@pytest.mark.parametrize(
    ("kind", "size"), [("1x1", (1, 1)), ("very thin", (2000, 3)), ("very tall", (3, 2000))]
)
def test_degenerate_sizes_are_served(
    kind: str, size: tuple[int, int], client: httpx.Client
) -> None:
    pixels = np.zeros((size[1], size[0]), dtype=np.uint8)
    pixels[size[1] // 2, size[0] // 2] = 255
    for model in (DIGIT, XRAY):
        response = client.post(
            f"{model}/predict", files={"files": (kind, encode(pixels), "image/png")}
        )
        assert response.status_code == 200, (model, response.text)
