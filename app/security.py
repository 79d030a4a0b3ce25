"""Optional API-key authentication for model and admin endpoints.

With `api_key` unset the model endpoints are open, as for a service on a private
network; admin endpoints stay closed unless `admin_open` says otherwise, so a rescan can
never be triggered by anyone who can reach the port by accident. Health, readiness,
metrics and docs are always open (probes and scrapers carry no keys). Keys are compared
in constant time (`hmac.compare_digest`), and never logged.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPBearer
from starlette.requests import HTTPConnection

from app.errors import Forbidden, Unauthorized
from app.settings import Settings


def _settings(request: HTTPConnection) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


class _ApiKeyBearer(HTTPBearer):
    """The API key as a bearer token: OpenAPI's HTTPBearer scheme, checked in one step.

    One dependency rather than a function depending on `HTTPBearer`: FastAPI solves each
    level of dependencies on every request, and this one guards every model request.
    """

    async def __call__(self, request: HTTPConnection) -> None:
        """Let the request through when no key is configured or the bearer token matches."""
        expected = _settings(request).api_key
        if expected is None:
            return
        credentials = await super().__call__(request)
        if credentials is None:
            raise Unauthorized("this endpoint needs an API key: send 'Authorization: Bearer <key>'")
        provided = credentials.credentials.encode("utf-8")
        if not hmac.compare_digest(provided, expected.get_secret_value().encode("utf-8")):
            raise Unauthorized("the API key is not valid")


require_api_key = _ApiKeyBearer(
    auto_error=False,
    scheme_name="HTTPBearer",
    description="The API key set in VISION_SERVING_API_KEY, as `Authorization: Bearer <key>`",
)
"""The dependency of every model endpoint."""


async def require_admin(
    request: Request, _key_checked: Annotated[None, Depends(require_api_key)]
) -> None:
    """Admin endpoints need the API key, or `admin_open` when no key is configured."""
    settings = _settings(request)
    if settings.api_key is None and not settings.admin_open:
        raise Forbidden(
            "admin endpoints are disabled: set VISION_SERVING_API_KEY (and send it as a "
            "bearer token), or VISION_SERVING_ADMIN_OPEN=true on a trusted network"
        )
