"""predict, probabilities and evaluate over tiny models, and their error paths."""

from __future__ import annotations

import asyncio
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.app.conftest import ServeFn
from tests.app.images import encode, gray_jpeg, png
from tests.app.tiny_models import copy_with_operating_point

pytestmark = pytest.mark.anyio

PREDICT = "/api/v1/models/tiny-digits/predict"
PROBABILITIES = "/api/v1/models/tiny-digits/probabilities"


def files(*items: tuple[str, bytes, str]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", item) for item in items]


async def test_predict_returns_one_prediction_per_file_in_order(serve: ServeFn) -> None:
    upload = files(*((f"d{i}.png", png(i), "image/png") for i in range(3)))
    async with serve() as client:
        response = await client.post(PREDICT, files=upload, params={"top_k": 4})
    assert response.status_code == 200
    body = response.json()
    assert (body["model"], body["version"]) == ("tiny-digits", 1)
    assert [p["filename"] for p in body["predictions"]] == ["d0.png", "d1.png", "d2.png"]
    for prediction in body["predictions"]:
        top = prediction["top_k"]
        assert len(top) == 4
        assert top[0]["label"] == prediction["label"] == str(prediction["class_index"])
        assert top[0]["probability"] == prediction["confidence"]
        assert [t["probability"] for t in top] == sorted(
            (t["probability"] for t in top), reverse=True
        )


async def test_top_k_defaults_to_the_setting_and_is_capped_at_the_class_count(
    serve: ServeFn,
) -> None:
    async with serve(default_top_k=2) as client:
        default = await client.post(PREDICT, files=files(("a.png", png(), "image/png")))
        capped = await client.post(
            "/api/v1/models/tiny-xray/predict",
            files=files(("x.jpeg", gray_jpeg(), "image/jpeg")),
            params={"top_k": 50},
        )
    assert len(default.json()["predictions"][0]["top_k"]) == 2
    assert len(capped.json()["predictions"][0]["top_k"]) == 2


async def test_probabilities_cover_every_class_and_sum_to_one(serve: ServeFn) -> None:
    upload = files(("a.png", png(1), "image/png"), ("b.png", png(2), "image/png"))
    async with serve() as client:
        response = await client.post(PROBABILITIES, files=upload)
        predicted = await client.post(PREDICT, files=upload)
    body = response.json()
    assert body["class_names"] == [str(d) for d in range(10)]
    for result, prediction in zip(body["results"], predicted.json()["predictions"], strict=True):
        probabilities = result["probabilities"]
        assert list(probabilities) == body["class_names"]
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert max(probabilities, key=probabilities.__getitem__) == prediction["label"]


async def test_version_pinned_routes(serve: ServeFn) -> None:
    upload = files(("a.png", png(), "image/png"))
    async with serve() as client:
        pinned = await client.post("/api/v1/models/tiny-digits/versions/1/predict", files=upload)
        probs = await client.post(
            "/api/v1/models/tiny-digits/versions/1/probabilities", files=upload
        )
        missing = await client.post("/api/v1/models/tiny-digits/versions/9/predict", files=upload)
    assert pinned.status_code == 200 and pinned.json()["version"] == 1
    assert probs.status_code == 200
    assert missing.status_code == 404
    assert "version 9" in missing.json()["error"]


async def test_concurrent_requests_share_one_model_call(serve: ServeFn) -> None:
    # inline_max_us=0: the tiny model is cheap enough to run inline on an idle batcher,
    # and in-process the first request would finish before the others arrive.
    async with serve(max_batch_wait_ms=500, max_batch_size=64, inline_max_us=0) as client:
        app_batcher = None
        responses = await asyncio.gather(
            *(
                client.post(PREDICT, files=files((f"{i}.png", png(i), "image/png")))
                for i in range(8)
            )
        )
        transport = client._transport
        app = transport.app  # type: ignore[attr-defined]
        app_batcher = app.state.dataplane.repository.get("tiny-digits").batcher
    assert all(r.status_code == 200 for r in responses)
    # warm-up runs on the runtime directly, so every recorded batch is a request batch
    assert app_batcher.stats.batch_sizes == [8]


async def evaluate_zip(serve: ServeFn, entries: dict[str, bytes], **params: object) -> dict:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    async with serve() as client:
        response = await client.post(
            "/api/v1/models/tiny-digits/evaluate",
            files={"archive": ("digits.zip", buffer.getvalue(), "application/zip")},
            params=params,
        )
    assert response.status_code == 200, response.text
    return response.json()


async def test_evaluate_a_zip_matches_the_predictions(serve: ServeFn) -> None:
    entries = {f"{i % 3}/{i}.png": png(i) for i in range(7)}
    body = await evaluate_zip(serve, entries, include_predictions="true")
    assert body["count"] == 7
    assert body["class_names"] == [str(d) for d in range(10)]
    matrix = body["confusion_matrix"]
    assert [sum(row) for row in matrix][:3] == [3, 2, 2]
    predictions = body["predictions"]
    assert len(predictions) == 7
    correct = sum(p["correct"] for p in predictions)
    assert body["accuracy"] == pytest.approx(correct / 7)
    assert set(body["per_class"]) == set(body["class_names"])
    for p in predictions:
        assert p["true_label"] == p["filename"].split("/")[0]


async def test_evaluate_files_with_labels(serve: ServeFn) -> None:
    upload = files(*((f"{i}.png", png(i), "image/png") for i in range(4)))
    async with serve() as client:
        response = await client.post(
            "/api/v1/models/tiny-digits/versions/1/evaluate",
            files=upload,
            data={"labels": "1,2,3,4"},
        )
    body = response.json()
    assert response.status_code == 200, body
    assert body["count"] == 4
    assert [sum(row) for row in body["confusion_matrix"]] == [0, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    assert body["predictions"] is None


@pytest.mark.parametrize(
    ("upload", "data", "status", "code"),
    [
        ([], {}, 422, "invalid_request"),
        ([("files", ("a.png", b"x", "image/png"))], {}, 422, "invalid_request"),
        ([("files", ("a.png", b"x", "image/png"))], {"labels": "1,2"}, 422, "invalid_labels"),
        ([("files", ("a.png", png(), "image/png"))], {"labels": "seven"}, 422, "invalid_labels"),
        ([("archive", ("a.zip", b"not a zip", "application/zip"))], {}, 422, "invalid_archive"),
    ],
)
async def test_evaluate_rejects_bad_input(
    serve: ServeFn, upload: list, data: dict, status: int, code: str
) -> None:
    async with serve() as client:
        response = await client.post(
            "/api/v1/models/tiny-digits/evaluate", files=upload or None, data=data or None
        )
    assert response.status_code == status, response.text
    assert response.json()["code"] == code


BAD_FILES = [
    (b"", "image/png", 422, "invalid_image", "empty"),
    (b"hello, I am text", "text/plain", 415, "unsupported_media_type", "text/plain"),
    (b"%PDF-1.4\n...", "image/png", 415, "unsupported_media_type", "PDF"),
    (png()[:40], "image/png", 422, "invalid_image", "truncated"),
    (gray_jpeg()[:300], "image/jpeg", 422, "invalid_image", "truncated"),
]


@pytest.mark.parametrize(("content", "content_type", "status", "code", "message"), BAD_FILES)
async def test_a_bad_file_alone_gets_a_4xx_naming_it(
    serve: ServeFn, content: bytes, content_type: str, status: int, code: str, message: str
) -> None:
    async with serve() as client:
        response = await client.post(PREDICT, files=files(("bad.png", content, content_type)))
        after = await client.post(PREDICT, files=files(("good.png", png(), "image/png")))
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code
    assert "bad.png" in body["error"] and message in body["error"]
    assert after.status_code == 200  # the server is still healthy


@pytest.mark.parametrize(("content", "content_type", "status", "code", "message"), BAD_FILES)
async def test_a_bad_file_among_good_ones_costs_only_its_own_answer(
    serve: ServeFn, content: bytes, content_type: str, status: int, code: str, message: str
) -> None:
    """The issue's case: two images and a README.md give two answers and one error."""
    upload = files(
        ("first.png", png(1), "image/png"),
        ("bad.png", content, content_type),
        ("last.png", png(2), "image/png"),
    )
    async with serve() as client:
        predicted = await client.post(PREDICT, files=upload)
        probabilities = await client.post(PROBABILITIES, files=upload)
        alone = [
            (await client.post(PREDICT, files=files(item))).json()["predictions"][0]
            for item in (("first.png", png(1), "image/png"), ("last.png", png(2), "image/png"))
        ]
    assert predicted.status_code == 200, predicted.text
    assert probabilities.status_code == 200, probabilities.text
    body = predicted.json()
    assert [(p["index"], p["filename"]) for p in body["predictions"]] == [
        (0, "first.png"),
        (2, "last.png"),
    ]
    for answer, single in zip(body["predictions"], alone, strict=True):
        assert answer["label"] == single["label"]
        assert answer["confidence"] == pytest.approx(single["confidence"], abs=1e-6)
    [error] = body["errors"]
    assert error["index"] == 1 and error["filename"] == "bad.png"
    assert (error["status"], error["code"]) == (status, code)
    assert message in error["error"]
    results = probabilities.json()
    assert [r["index"] for r in results["results"]] == [0, 2]
    assert results["errors"] == body["errors"]


async def test_when_every_file_is_bad_the_request_gets_the_first_files_error(
    serve: ServeFn,
) -> None:
    upload = files(
        ("notes.txt", b"hello, I am text", "text/plain"),
        ("broken.png", png()[:40], "image/png"),
    )
    async with serve() as client:
        response = await client.post(PREDICT, files=upload)
    assert response.status_code == 415, response.text
    body = response.json()
    assert body["code"] == "unsupported_media_type"
    assert "notes.txt" in body["error"] and "broken.png" in body["error"]


async def test_evaluate_leaves_a_bad_file_out_of_the_figures_and_names_it(
    serve: ServeFn,
) -> None:
    good = [("a.png", png(1), "image/png"), ("b.png", png(2), "image/png")]
    bad = ("README.md", b"# my digits\n", "text/markdown")
    async with serve() as client:
        with_bad = await client.post(
            "/api/v1/models/tiny-digits/evaluate?include_predictions=true",
            files=files(good[0], bad, good[1]),
            data={"labels": "1,2,2"},
        )
        without = await client.post(
            "/api/v1/models/tiny-digits/evaluate",
            files=files(*good),
            data={"labels": "1,2"},
        )
    assert with_bad.status_code == 200, with_bad.text
    body, reference = with_bad.json(), without.json()
    assert body["count"] == 2
    assert body["confusion_matrix"] == reference["confusion_matrix"]
    assert body["accuracy"] == reference["accuracy"]
    assert [p["index"] for p in body["predictions"]] == [0, 2]
    assert [p["digit_found"] for p in body["predictions"]] == [True, True]
    assert [(e["index"], e["filename"], e["code"]) for e in body["errors"]] == [
        (1, "README.md", "unsupported_media_type")
    ]
    assert reference["errors"] == []


async def test_unknown_model_is_404(serve: ServeFn) -> None:
    async with serve() as client:
        response = await client.post(
            "/api/v1/models/nope/predict", files=files(("a.png", png(), "image/png"))
        )
    assert response.status_code == 404
    assert response.json()["code"] == "model_not_found"


@pytest.mark.parametrize(
    ("path", "upload", "message"),
    [
        (
            PREDICT,
            [("file", ("x.png", png(), "image/png"))],
            "no field 'files' in the upload (found 'file'): send images in the form field "
            "'files', e.g. curl -F files=@digit.png",
        ),
        (
            PREDICT,
            [("files", (None, b"foo"))],
            "the field 'files' holds text, not a file: send the file itself, e.g. "
            "curl -F files=@digit.png (the @ sends the file's content)",
        ),
        (
            "/api/v1/models/tiny-digits/evaluate",
            [("file", ("x.png", png(), "image/png"))],
            "no field 'archive' or 'files' in the upload (found 'file'): send a zip in the "
            "field 'archive' (curl -F archive=@labelled.zip), or images in 'files' with their "
            "class names in 'labels'",
        ),
        (
            "/api/v1/models/tiny-digits/evaluate",
            [("archive", (None, b"foo"))],
            "the field 'archive' holds text, not a file: send the file itself, e.g. "
            "curl -F archive=@labelled.zip (the @ sends the file's content)",
        ),
    ],
    ids=[
        "predict -F file=@",
        "predict -F files=foo",
        "evaluate -F file=@",
        "evaluate -F archive=foo",
    ],
)
async def test_a_misnamed_field_or_text_for_a_file_is_a_422_saying_how_to_fix_it(
    serve: ServeFn, path: str, upload: list, message: str
) -> None:
    async with serve() as client:
        response = await client.post(path, files=upload)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "invalid_request"
    assert body["error"].endswith(f": {message}")


async def test_a_body_that_is_not_multipart_is_a_400(serve: ServeFn) -> None:
    async with serve() as client:
        response = await client.post(PREDICT, data={"files": "x.png"})  # url-encoded
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "bad_request"
    assert "'application/x-www-form-urlencoded' is not multipart form data" in body["error"]
    assert "curl -F files=@digit.png" in body["error"]


async def test_too_many_files_is_413(serve: ServeFn) -> None:
    upload = files(*((f"{i}.png", png(i), "image/png") for i in range(3)))
    async with serve(max_files_per_request=2) as client:
        response = await client.post(PREDICT, files=upload)
    assert response.status_code == 413
    assert "limit of 2" in response.json()["error"]


async def test_oversized_body_is_413_before_it_is_read(serve: ServeFn) -> None:
    async with serve(max_body_bytes=10_000) as client:
        declared = await client.post(PREDICT, files=files(("big.png", b"\0" * 20_000, "image/png")))

        async def chunks():  # no Content-Length: counted as it streams
            yield (
                b'--x\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
                b"Content-Type: image/png\r\n\r\n"
            )
            for _ in range(100):
                yield b"\0" * 1000

        streamed = await client.post(
            PREDICT,
            content=chunks(),
            headers={"Content-Type": "multipart/form-data; boundary=x"},
        )
    for response in (declared, streamed):
        assert response.status_code == 413, response.text
        assert response.json()["code"] == "payload_too_large"


async def test_too_many_pixels_is_422(serve: ServeFn) -> None:
    async with serve(max_image_pixels=100) as client:
        response = await client.post(PREDICT, files=files(("big.png", png(size=28), "image/png")))
    assert response.status_code == 422
    assert "28x28" in response.json()["error"]


async def test_a_failed_model_is_503_and_others_still_serve(serve: ServeFn, model_dir_copy) -> None:
    (model_dir_copy / "tiny-xray" / "1" / "saved_model.pb").write_bytes(b"corrupt")
    async with serve(model_dir=model_dir_copy) as client:
        failed = await client.post(
            "/api/v1/models/tiny-xray/predict", files=files(("x.jpeg", gray_jpeg(), "image/jpeg"))
        )
        working = await client.post(PREDICT, files=files(("a.png", png(), "image/png")))
    assert failed.status_code == 503
    assert failed.json()["code"] == "model_not_ready"
    assert working.status_code == 200


async def test_unknown_route_and_wrong_method_use_the_error_shape(serve: ServeFn) -> None:
    async with serve() as client:
        missing = await client.get("/api/v1/nothing")
        wrong = await client.get(PREDICT)
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    assert wrong.status_code == 405 and wrong.json()["code"] == "method_not_allowed"


async def test_include_preprocessed_returns_the_model_input_as_png(serve: ServeFn) -> None:
    import base64
    import io

    import numpy as np
    from PIL import Image

    from tests.app.images import encode

    # dark digit on light paper, off-centre on a larger canvas
    canvas = np.full((100, 80), 230, dtype=np.uint8)
    canvas[10:50, 50:60] = 20
    upload = files(("photo.png", encode(canvas), "image/png"))
    async with serve() as client:
        plain = await client.post(PREDICT, files=upload)
        shown = await client.post(PREDICT, files=upload, params={"include_preprocessed": "true"})
    assert plain.json()["predictions"][0]["preprocessed_png"] is None
    data = base64.b64decode(shown.json()["predictions"][0]["preprocessed_png"])
    seen = np.asarray(Image.open(io.BytesIO(data)))
    assert seen.shape == (28, 28)
    assert seen[0, 0] == 0 and seen.max() > 200  # inverted to white on black
    rows, cols = np.nonzero(seen > 50)
    assert abs(rows.mean() - 13.5) < 3 and abs(cols.mean() - 13.5) < 3  # centred


async def test_the_upload_routes_document_their_body_parameters_and_answers(
    serve: ServeFn,
) -> None:
    """They read their body themselves, so the multipart body is declared by hand."""
    async with serve() as client:
        paths = (await client.get("/openapi.json")).json()["paths"]
    answers = {"predict": "PredictResponse", "probabilities": "ProbabilitiesResponse"}
    for endpoint, answer in answers.items():
        for prefix, parameters in (("", ["name"]), ("/versions/{version}", ["name", "version"])):
            operation = paths[f"/api/v1/models/{{name}}{prefix}/{endpoint}"]["post"]
            body = operation["requestBody"]
            schema = body["content"]["multipart/form-data"]["schema"]
            assert body["required"] and schema["required"] == ["files"]
            files = schema["properties"]["files"]
            assert files["type"] == "array"
            assert files["items"] == {
                "type": "string",
                "contentMediaType": "application/octet-stream",
            }
            if endpoint == "predict":
                parameters = [*parameters, "top_k", "include_preprocessed"]
            assert [p["name"] for p in operation["parameters"]] == parameters
            ok = operation["responses"]["200"]["content"]["application/json"]["schema"]
            assert ok["$ref"].endswith(answer)
            assert {"400", "404", "413", "415", "422", "503"} <= set(operation["responses"])
            assert operation["security"] == [{"HTTPBearer": []}]


# Operating point: the card's threshold decides the label, never the probabilities -----

THRESHOLDED = "tiny-xray-threshold"
THRESHOLD = 0.2  # on PNEUMONIA; the untrained tiny X-ray model gives most images 0.25..0.5


@pytest.fixture
def thresholded_dir(model_dir_copy: Path) -> Path:
    """`tiny-xray` (argmax) beside `tiny-xray-threshold`: the same model, whose card labels
    PNEUMONIA from P(PNEUMONIA) >= 0.2."""
    copy_with_operating_point(model_dir_copy, "tiny-xray", THRESHOLDED, THRESHOLD, "PNEUMONIA")
    return model_dir_copy


def gray_xrays(count: int) -> list[tuple[str, tuple[str, bytes, str]]]:
    """Flat gray pictures, which the tiny X-ray model finds more NORMAL than not."""
    shades = np.linspace(150, 230, count)
    return files(
        *((f"gray{i}.png", encode(np.full((40, 40), s)), "image/png") for i, s in enumerate(shades))
    )


async def test_predict_label_follows_the_operating_point_and_probabilities_do_not_change(
    serve: ServeFn, thresholded_dir: Path
) -> None:
    upload = gray_xrays(3)
    async with serve(model_dir=thresholded_dir) as client:
        answers = {}
        for model in ("tiny-xray", THRESHOLDED):
            predicted = await client.post(f"/api/v1/models/{model}/predict", files=upload)
            probabilities = await client.post(f"/api/v1/models/{model}/probabilities", files=upload)
            answers[model] = (predicted.json()["predictions"], probabilities.json()["results"])
    argmax_predictions, argmax_probabilities = answers["tiny-xray"]
    point_predictions, point_probabilities = answers[THRESHOLDED]
    assert point_probabilities == argmax_probabilities
    for argmax, at_point, result in zip(
        argmax_predictions, point_predictions, point_probabilities, strict=True
    ):
        pneumonia = result["probabilities"]["PNEUMONIA"]
        assert THRESHOLD <= pneumonia < 0.5, "the premise: argmax and threshold disagree"
        assert argmax["label"] == "NORMAL"
        assert at_point["label"] == "PNEUMONIA"
        assert at_point["class_index"] == 1
        assert at_point["confidence"] == pneumonia  # the probability of the label, as given
        assert [c["label"] for c in at_point["top_k"]] == ["PNEUMONIA", "NORMAL"]
        normal = result["probabilities"]["NORMAL"]
        assert [c["probability"] for c in at_point["top_k"]] == [pneumonia, normal]


def reference_ece(rows: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE bin by bin, (m/bins, (m+1)/bins] each, as Guo et al. (2017) define it."""
    confidence, right = rows.max(axis=1), rows.argmax(axis=1) == labels
    total = 0.0
    for m in range(bins):
        inside = (confidence > m / bins) & (confidence <= (m + 1) / bins)
        if inside.any():
            gap = abs(right[inside].mean() - confidence[inside].mean())
            total += inside.sum() / len(rows) * gap
    return total


async def test_evaluate_reports_the_operating_point_and_argmax(
    serve: ServeFn, thresholded_dir: Path
) -> None:
    upload = gray_xrays(4)
    truth = ["NORMAL", "PNEUMONIA", "PNEUMONIA", "NORMAL"]
    async with serve(model_dir=thresholded_dir) as client:
        response = await client.post(
            f"/api/v1/models/{THRESHOLDED}/evaluate?include_predictions=true",
            files=upload,
            data={"labels": ",".join(truth)},
        )
        plain = await client.post(
            "/api/v1/models/tiny-xray/evaluate", files=upload, data={"labels": ",".join(truth)}
        )
        probabilities = await client.post(
            f"/api/v1/models/{THRESHOLDED}/probabilities", files=upload
        )
    body = response.json()
    assert response.status_code == 200, body
    rows = np.array(
        [
            [r["probabilities"][c] for c in ("NORMAL", "PNEUMONIA")]
            for r in probabilities.json()["results"]
        ]
    )
    labels = np.array([0, 1, 1, 0])
    # Every picture is PNEUMONIA at the threshold and NORMAL by argmax (see the test above).
    assert body["decision"] == "P(PNEUMONIA) >= 0.2"
    assert body["confusion_matrix"] == [[0, 2], [0, 2]]
    assert [p["predicted_label"] for p in body["predictions"]] == ["PNEUMONIA"] * 4
    at_argmax = body["evaluation_at_argmax"]
    assert at_argmax["decision"] == "argmax"
    assert at_argmax["confusion_matrix"] == [[2, 0], [2, 0]]
    # Probability figures do not depend on the decision; computed here independently.
    brier = float(((rows - np.eye(2)[labels]) ** 2).sum(axis=1).mean())
    for report in (body, at_argmax):
        assert report["brier"] == pytest.approx(brier)
        assert report["ece"] == pytest.approx(reference_ece(rows, labels))
    # A card without an operating point reports argmax, and no second evaluation.
    assert plain.json()["decision"] == "argmax"
    assert plain.json()["evaluation_at_argmax"] is None
    assert plain.json()["confusion_matrix"] == at_argmax["confusion_matrix"]
