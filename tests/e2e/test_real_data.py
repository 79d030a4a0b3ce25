"""Real data through the real server: MNIST digits, photo-like digits, chest X-rays."""

from __future__ import annotations

import io
import zipfile
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.contract.classification import evaluate_probabilities
from app.contract.images import Upload
from app.contract.model_card import ModelCard
from app.contract.preprocessing import prepare_batch
from tests.app.digit_variants import variant_mix
from tests.app.images import encode
from tests.conftest import require_data
from tests.e2e.conftest import SHIPPED_MODELS

DIGITS = 1000
FILES_PER_REQUEST = 50


@pytest.fixture(scope="module")
def mnist_test() -> tuple[np.ndarray, np.ndarray]:
    with np.load(require_data("mnist.npz")) as arrays:
        return arrays["x_test"][:DIGITS], arrays["y_test"][:DIGITS]


def served_card(name: str, client: httpx.Client) -> ModelCard:
    return ModelCard.model_validate(client.get(f"/api/v1/models/{name}").json()["card"])


def predict_labels(client: httpx.Client, pictures: list[tuple[str, bytes, str]]) -> list[str]:
    labels: list[str] = []
    for start in range(0, len(pictures), FILES_PER_REQUEST):
        chunk = pictures[start : start + FILES_PER_REQUEST]
        response = client.post(
            "/api/v1/models/mnist-mlp/predict", files=[("files", item) for item in chunk]
        )
        assert response.status_code == 200, response.text
        labels += [p["label"] for p in response.json()["predictions"]]
    return labels


def test_mnist_test_digits_score_at_least_097(
    client: httpx.Client, mnist_test: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = mnist_test
    pictures = [(f"{i}.png", encode(image), "image/png") for i, image in enumerate(images)]
    predicted = predict_labels(client, pictures)
    accuracy = np.mean([p == str(t) for p, t in zip(predicted, labels, strict=True)])
    print(f"MNIST test digits through /predict: accuracy {accuracy:.4f} on {len(labels)}")
    assert accuracy >= 0.97


def test_real_world_digit_pictures_score_at_least_095(
    client: httpx.Client, mnist_test: tuple[np.ndarray, np.ndarray]
) -> None:
    images, labels = mnist_test
    kinds, pictures = [], []
    for i, (kind, picture) in enumerate(variant_mix(images, seed=7)):
        suffix = "jpg" if picture.media_type == "image/jpeg" else "png"
        kinds.append(kind)
        pictures.append((f"{i}.{suffix}", picture.data, picture.media_type))
    predicted = predict_labels(client, pictures)
    right = [p == str(t) for p, t in zip(predicted, labels, strict=True)]
    per_kind = Counter(k for k, ok in zip(kinds, right, strict=True) if ok)
    totals = Counter(kinds)
    print("photo-like digits:", {k: round(per_kind[k] / totals[k], 3) for k in totals})
    accuracy = float(np.mean(right))
    print(f"photo-like digits through /predict: accuracy {accuracy:.4f} on {len(right)}")
    assert accuracy >= 0.95


def zip_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_evaluate_equals_an_offline_evaluation_of_the_same_files(
    client: httpx.Client, mnist_test: tuple[np.ndarray, np.ndarray]
) -> None:
    import tensorflow as tf

    images, labels = mnist_test
    pictures = list(variant_mix(images[:300], seed=11))
    files = {
        f"{label}/{i}.{'jpg' if p.media_type == 'image/jpeg' else 'png'}": p.data
        for i, ((_, p), label) in enumerate(zip(pictures, labels, strict=False))
    }
    served = client.post(
        "/api/v1/models/mnist-mlp/evaluate",
        files={"archive": ("digits.zip", zip_of(files), "application/zip")},
    )
    assert served.status_code == 200, served.text

    card = served_card("mnist-mlp", client)
    version_dir = SHIPPED_MODELS / card.name / str(card.version)
    uploads = [Upload(filename=name, data=data) for name, data in files.items()]
    pixels = prepare_batch(uploads, card.input, card.preprocessing.kind).pixels
    signature = tf.saved_model.load(str(version_dir)).signatures[card.signature_name]
    probabilities = signature(**{card.input.tensor_name: tf.constant(pixels)})[card.output_name]
    offline = evaluate_probabilities(
        [int(name.split("/")[0]) for name in files], probabilities.numpy(), card.class_names
    )
    body = served.json()
    assert body["confusion_matrix"] == offline.confusion_matrix
    assert body["accuracy"] == pytest.approx(offline.accuracy)
    assert body["loss"] == pytest.approx(offline.loss, rel=1e-4)


def test_chest_xray_test_split_matches_the_card_within_001(client: httpx.Client) -> None:
    test_dir: Path = require_data("chest_xray/test")
    files = {
        f"{path.parent.name}/{path.name}": path.read_bytes()
        for path in sorted(test_dir.glob("*/*.jpeg"))
    }
    response = client.post(
        "/api/v1/models/pneumonia-cnn/evaluate",
        files={"archive": ("test.zip", zip_of(files), "application/zip")},
    )
    assert response.status_code == 200, response.text
    served = response.json()
    card = served_card("pneumonia-cnn", client)
    print(
        f"X-ray test split through /evaluate: accuracy {served['accuracy']:.4f}, "
        f"AUC {served['roc_auc']:.4f}; card accuracy {card.evaluation.accuracy:.4f}"
    )
    assert served["count"] == card.evaluation.count
    assert served["accuracy"] == pytest.approx(card.evaluation.accuracy, abs=0.01)
