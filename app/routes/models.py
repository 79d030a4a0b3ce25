"""What is being served: the model list, each model's card and its recorded evaluation."""

from __future__ import annotations

from fastapi import APIRouter

from app.contract.classification import EvaluationReport
from app.deps import DataPlaneDep, RepositoryDep
from app.errors import ArtifactNotFound, ErrorResponse, ModelNotReady
from app.repository import ModelRepository, ServedModel
from app.schemas import ModelDetail, ModelList, ModelStatus, RuntimeStatus, VersionStatus

router = APIRouter(prefix="/api/v1", tags=["models"])

_ERRORS: dict[int | str, dict[str, object]] = {
    404: {"model": ErrorResponse, "description": "No such model"},
    503: {"model": ErrorResponse, "description": "Model not loaded"},
}


@router.get("/models", response_model=ModelList, summary="List the served models")
async def list_models(repository: RepositoryDep) -> ModelList:
    """Every model found in the model directory: status, device, runtime, classes and input."""
    return ModelList(
        models=[model_status(repository, name) for name in repository.names()],
        error=repository.directory_problem(),
    )


@router.get(
    "/models/{name}",
    response_model=ModelDetail,
    summary="A model's card and serving status",
    responses={404: _ERRORS[404]},
)
async def get_model(name: str, dataplane: DataPlaneDep) -> ModelDetail:
    """The full model card (classes, input, preprocessing, training, metrics), the status,
    and the served version's recent predictions with their drift from the card's profile."""
    repository = dataplane.repository
    status = model_status(repository, name)
    served = repository.served(name)
    monitor = dataplane.predictions
    return ModelDetail(
        **status.model_dump(),
        card=served.card if served else None,
        recent_predictions=monitor.recent(served) if monitor and served else None,
    )


@router.get(
    "/models/{name}/evaluation",
    response_model=EvaluationReport,
    summary="The test-set evaluation recorded at training time",
    responses={
        404: {
            "model": ErrorResponse,
            "description": "No such model, or an imported model given no labelled data",
        },
        503: _ERRORS[503],
    },
)
async def get_evaluation(name: str, repository: RepositoryDep) -> EvaluationReport:
    """Metrics on the held-out test split, as recorded in the model card by training (or,
    for an imported model, on the labelled folder given at import)."""
    served = repository.get(name)
    card = served.card
    if card is None:
        raise ModelNotReady(f"model {name!r} has no model card loaded")
    if card.evaluation is None:
        source = card.imported.source if card.imported else "elsewhere"
        raise ArtifactNotFound(
            f"model {name!r} version {served.version} has no recorded evaluation: it was "
            f"imported from {source} without labelled data; import it again with "
            "--evaluate-on DIR (one folder of images per class) to record one",
            model=name,
            version=served.version,
        )
    return card.evaluation


def model_status(repository: ModelRepository, name: str) -> ModelStatus:
    """Status of a model and each of its versions (404 for an unknown name)."""
    versions = repository.versions(name)
    served = repository.served(name)
    if served is not None:
        status, error = "ready", None
    elif any(v.state == "loading" for v in versions):
        status, error = "loading", None
    else:
        status = "failed"
        error = repository.problem(name) or "; ".join(
            f"version {v.version}: {v.error}" for v in versions if v.error
        )
    card = served.card if served else None
    return ModelStatus(
        name=name,
        version=served.version if served else None,
        status=status,
        error=error,
        device=served.device.kind if served and served.device else None,
        runtime=runtime_status(served) if served else None,
        class_names=card.class_names if card else [],
        input=card.input if card else None,
        versions=[version_status(v) for v in versions],
    )


def version_status(entry: ServedModel) -> VersionStatus:
    return VersionStatus(
        version=entry.version,
        status=str(entry.state),
        error=entry.error,
        device=entry.device.kind if entry.device else None,
        runtime=runtime_status(entry),
        ready_seconds=entry.ready_seconds,
        card_name=entry.card_name,
        card_version=entry.card_version,
    )


def runtime_status(entry: ServedModel) -> RuntimeStatus | None:
    inline = entry.batcher.inline_max_images if entry.batcher is not None else 0
    return RuntimeStatus.of(entry.runtime_info, inline)
