"""Prometheus scrape endpoint."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
async def metrics(request: Request) -> Response:
    """Requests, latency by stage, batch sizes and loaded models, in Prometheus text format."""
    body, content_type = request.app.state.metrics.exposition()
    return Response(body, media_type=content_type)
