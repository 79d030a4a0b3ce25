"""Plots recorded at training time, served as PNG from the served version's folder.

Training writes `training.png` (loss and accuracy per epoch), `confusion.png` (the
test-set confusion matrix) and, for a calibrated model, `reliability.png` (its reliability
diagram before and after calibration) beside each exported model and names them in the
model card's `artifacts` ("training_plot", "confusion_plot", "reliability_plot"). Only
files the card names are served, and only from inside the version folder: a card entry
that points elsewhere (`..`, an absolute path, a symlink out of the folder) is treated as
missing.
"""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import FileResponse

from app.deps import RepositoryDep
from app.errors import ArtifactNotFound, ErrorResponse, ModelNotReady
from app.repository import ModelRepository

router = APIRouter(prefix="/api/v1", tags=["models"])

# Plot name in the URL -> role of the file in the model card's `artifacts`.
PLOTS = {
    "training": "training_plot",
    "confusion": "confusion_plot",
    "reliability": "reliability_plot",
}

ModelName = Annotated[str, Path(description="Model name", examples=["mnist-mlp"])]
Version = Annotated[int, Path(ge=1, description="Model version", examples=[1])]
PlotName = Annotated[
    str,
    Path(
        description="`training` (loss and accuracy per epoch), `confusion` (test set) or "
        "`reliability` (calibration before and after, calibrated models only)",
        examples=["training"],
    ),
]

_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {"image/png": {}}, "description": "The plot as a PNG image"},
    404: {"model": ErrorResponse, "description": "Unknown model, version or plot"},
    422: {"model": ErrorResponse, "description": "Invalid version number"},
    503: {"model": ErrorResponse, "description": "Model not loaded yet or failed to load"},
}


def plot_path(repository: ModelRepository, name: str, version: int | None, plot: str) -> FilePath:
    """The plot file of a served model version, or a typed 404/503 error."""
    model = repository.get(name, version)
    if model.card is None:
        raise ModelNotReady(f"model {name!r} version {model.version} has no model card loaded")
    role = PLOTS.get(plot)
    if role is None:
        known = ", ".join(f"{p}.png" for p in PLOTS)
        raise ArtifactNotFound(f"no plot named {plot!r}; plots: {known}", model=name, plot=plot)
    filename = model.card.artifacts.get(role)
    missing = ArtifactNotFound(
        f"model {name!r} version {model.version} has no {plot} plot",
        model=name,
        version=model.version,
        plot=plot,
    )
    if not filename:
        raise missing
    folder = model.path.resolve()
    path = (folder / filename).resolve()
    if not path.is_relative_to(folder) or path.suffix.lower() != ".png" or not path.is_file():
        raise missing
    return path


@router.get(
    "/models/{name}/plots/{plot}.png",
    response_class=FileResponse,
    summary="A training-time plot of the served version (curves, confusion, reliability)",
    responses=_RESPONSES,
)
async def get_plot(name: ModelName, plot: PlotName, repository: RepositoryDep) -> FileResponse:
    """`training.png`: loss and accuracy per epoch; `confusion.png`: the test-set
    confusion matrix; `reliability.png`: accuracy against confidence per bin, before and
    after calibration; as recorded by training for the version that serves now."""
    return FileResponse(plot_path(repository, name, None, plot), media_type="image/png")


@router.get(
    "/models/{name}/versions/{version}/plots/{plot}.png",
    response_class=FileResponse,
    summary="A training-time plot of a pinned model version",
    responses=_RESPONSES,
)
async def get_plot_version(
    name: ModelName, version: Version, plot: PlotName, repository: RepositoryDep
) -> FileResponse:
    """As the unversioned plot, for the given model version."""
    return FileResponse(plot_path(repository, name, version, plot), media_type="image/png")
