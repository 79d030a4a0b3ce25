"""Refuse inference requests to a full model before their body is parsed.

Under overload most requests are refused, and a refusal that first parses a multipart
body of 16 X-rays costs the event loop as much as serving it would. This middleware
asks the data plane (which owns the rule) whether the model the path names is already
full; if so the body is drained unparsed and the 503 + Retry-After goes out at once, on
a connection that stays usable. Everything else, including requests the full check
cannot decide (unknown model, not ready, an API key to check first), goes to the routes.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from app.dataplane import DataPlane
from app.errors import serving_error_response
from app.settings import Settings

# Native, TF Serving and V2 inference paths, with or without a pinned version.
_MODEL_PATH = re.compile(r"^/(?:api/v1|v1|v2)/models/(?P<name>[^/:]+)(?:/versions/(?P<v>\d+))?")


class EarlyAdmission:
    """ASGI middleware answering 503 to POSTs for a model whose queue is full."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = None
        # With an API key, a stranger must get 401, not news of the load: let the route
        # check the key first.
        if scope["type"] == "http" and scope["method"] == "POST" and not self.settings.api_key:
            match = _MODEL_PATH.match(scope["path"])
            dataplane: DataPlane | None = getattr(scope["app"].state, "dataplane", None)
            if match is not None and dataplane is not None:
                version = int(match["v"]) if match["v"] else None
                refusal = dataplane.refusal_before_reading(match["name"], version)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        more_body = True
        while more_body:  # drain, so the connection can carry the next request
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            more_body = message.get("more_body", False)
        await serving_error_response(refusal)(scope, receive, send)
