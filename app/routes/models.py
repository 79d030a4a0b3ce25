"""What is being served: the model list, each model's card and its recorded evaluation."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import RepositoryDep
from app.errors import ErrorResponse, ModelNotFound, ModelNotReady
from app.metrics import EvaluationReport
from app.repository import ServedModel
from app.schemas import ModelDetail, ModelList, ModelStatus

router = APIRouter(prefix="/api/v1", tags=["models"])

_ERRORS: dict[int | str, dict[str, object]] = {
    404: {"model": ErrorResponse, "description": "No such model"},
    503: {"model": ErrorResponse, "description": "Model not loaded"},
}


@router.get("/models", response_model=ModelList, summary="List the served models")
async def list_models(repository: RepositoryDep) -> ModelList:
    """Every model found in the model directory, with its status, device, classes and input."""
    return ModelList(models=[_status(entry) for entry in repository.models.values()])


@router.get(
    "/models/{name}",
    response_model=ModelDetail,
    summary="A model's card and serving status",
    responses={404: _ERRORS[404]},
)
async def get_model(name: str, repository: RepositoryDep) -> ModelDetail:
    """The full model card (classes, input, preprocessing, training, metrics) and status."""
    entry = _find(repository, name)
    return ModelDetail(**_status(entry).model_dump(), card=entry.card)


@router.get(
    "/models/{name}/evaluation",
    response_model=EvaluationReport,
    summary="The test-set evaluation recorded at training time",
    responses=_ERRORS,
)
async def get_evaluation(name: str, repository: RepositoryDep) -> EvaluationReport:
    """Metrics on the held-out test split, as recorded in the model card by training."""
    entry = _find(repository, name)
    if entry.card is None:
        raise ModelNotReady(f"model {name!r} is not loaded: {entry.error or entry.state}")
    return entry.card.evaluation


def _find(repository: RepositoryDep, name: str) -> ServedModel:
    entry = repository.models.get(name)
    if entry is None:
        known = ", ".join(sorted(repository.models)) or "none"
        raise ModelNotFound(f"no model named {name!r}; served models: {known}", model=name)
    return entry


def _status(entry: ServedModel) -> ModelStatus:
    card = entry.card
    return ModelStatus(
        name=entry.name,
        version=entry.version,
        versions=[entry.version] if entry.version else [],
        status=str(entry.state),
        error=entry.error,
        device=entry.device.kind if entry.device else None,
        class_names=card.class_names if card else [],
        input=card.input if card else None,
        ready_seconds=entry.ready_seconds,
    )
