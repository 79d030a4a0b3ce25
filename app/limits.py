"""Refuse request bodies over the size limit before they are read in full.

A declared `Content-Length` over the limit is answered 413 at once, without reading a
byte of the body. A body without one (chunked) is counted as it arrives and cut off
with 413 as soon as it passes the limit. Pure ASGI, so it sees the body stream itself.
"""

from __future__ import annotations

import contextlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import error_response


class BodyTooLarge(Exception):
    """Raised from `receive` when the body passes the limit mid-stream."""


class BodySizeLimit:
    """ASGI middleware answering 413 to bodies larger than `max_bytes`."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send, f"{declared:,} bytes")
            return

        received = 0
        exceeded = False
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            # Whatever the app makes of a cut-off body (a parse error, say), the client
            # is told the real reason instead.
            if exceeded:
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        with contextlib.suppress(BodyTooLarge):
            await self.app(scope, limited_receive, guarded_send)
        if exceeded and not response_started:
            await self._refuse(scope, receive, send, "the body")

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, what: str) -> None:
        response = error_response(
            413,
            "payload_too_large",
            f"request body too large: {what} is over the limit of {self.max_bytes:,} bytes",
        )
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
