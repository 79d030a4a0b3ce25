"""A digit model whose card holds a prediction profile, for the drift tests.

The shipped cards get their `prediction_profile` when the models are next exported.
Until then the tests profile the shipped digit model themselves, through the served
path: MNIST test digits sent as PNG files to a running server's `/probabilities`,
profiled with the function training uses, and written into the card of a copy of the
version folder. A shipped card that already has a profile is used as it is.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import numpy as np

from app.contract.drift import prediction_profile
from app.contract.model_card import ModelCard
from tests.app.images import encode
from tests.conftest import shipped_version

DIGIT_MODEL = "mnist-mlp"
FILES_PER_REQUEST = 50
Picture = tuple[str, bytes, str]


def png_pictures(images: np.ndarray, prefix: str) -> list[Picture]:
    return [(f"{prefix}-{i}.png", encode(image), "image/png") for i, image in enumerate(images)]


def served_probabilities(
    client: httpx.Client, model: str, pictures: list[Picture]
) -> tuple[np.ndarray, list[bool]]:
    """`[N, classes]` probabilities and the digit check's answers, from the server."""
    rows: list[list[float]] = []
    found: list[bool] = []
    for start in range(0, len(pictures), FILES_PER_REQUEST):
        chunk = pictures[start : start + FILES_PER_REQUEST]
        response = client.post(
            f"/api/v1/models/{model}/probabilities", files=[("files", p) for p in chunk]
        )
        assert response.status_code == 200, response.text
        body = response.json()
        rows += [[r["probabilities"][c] for c in body["class_names"]] for r in body["results"]]
        found += [r["digit_found"] for r in body["results"]]
    return np.array(rows), found


def digit_model_with_reference(
    client: httpx.Client, reference_digits: np.ndarray, target: Path
) -> Path:
    """A model folder under `target` holding the shipped digit model, its card with a
    prediction profile: the shipped one, else one of `client`'s answers to the digits."""
    shipped = shipped_version(DIGIT_MODEL)
    version_dir = target / DIGIT_MODEL / shipped.name
    shutil.copytree(shipped, version_dir)
    card = ModelCard.read(version_dir)
    if card.prediction_profile is None:
        pictures = png_pictures(reference_digits, "reference")
        probabilities, found = served_probabilities(client, DIGIT_MODEL, pictures)
        profile = prediction_profile(probabilities, card.class_names, found)
        card.model_copy(update={"prediction_profile": profile}).write(version_dir)
    return target
