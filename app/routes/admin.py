"""Operator actions: rescan the model directory now instead of waiting for the watcher."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import RepositoryDep
from app.errors import ErrorResponse
from app.routes.models import model_status
from app.schemas import ModelList

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])


@router.post(
    "/rescan",
    response_model=ModelList,
    summary="Rescan the model directory now",
    responses={
        401: {"model": ErrorResponse, "description": "Missing or wrong API key"},
        403: {"model": ErrorResponse, "description": "Admin endpoints are disabled"},
    },
)
async def rescan(repository: RepositoryDep) -> ModelList:
    """Load new versions, unload removed ones (after draining), and return the new status."""
    await repository.sync()
    return ModelList(models=[model_status(repository, name) for name in repository.names()])
