"""Liveness and readiness, for people, load balancers and Kubernetes probes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.deps import RepositoryDep
from app.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
async def healthz() -> Health:
    """Always 200 while the process serves HTTP; says nothing about the models."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness: every model is loaded and warmed up",
    responses={503: {"model": Readiness, "description": "Not ready, with the reasons"}},
)
async def readyz(repository: RepositoryDep) -> JSONResponse:
    """200 only when every model has loaded and warmed up; 503 with the reasons otherwise."""
    reasons = repository.not_ready_reasons()
    body = Readiness(ready=not reasons, reasons=reasons)
    return JSONResponse(body.model_dump(), status_code=503 if reasons else 200)
