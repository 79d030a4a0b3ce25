"""A request ID on every answer, every log line and every error body of a request.

The client's `X-Request-ID` is kept when it is safe to repeat (1 to 128 ASCII letters,
digits and `-_.:+=@`, but not `.` or `..` alone, so it can go into a header, a log line
or a file name as it is: no `/`, so no path); anything else (too long, spaces, quotes,
slashes, control characters, non-ASCII) is replaced by a fresh id, never echoed. A
request without one gets a fresh id: 32 random hex digits. The id is answered as
`X-Request-ID` on every response the app gives, errors and 404s included, and is
readable anywhere in the request through `current_request_id()`: `app.logs` adds it to
log records and `app.errors` to error bodies.

The middleware is the outermost layer of the app, so it also answers an error that no
other layer handled: a JSON 500 carrying the id, logged with its traceback and the id
(the server's own "Exception in ASGI application" line would carry neither).
"""

from __future__ import annotations

import contextvars
import logging
import os
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "X-Request-ID"
MAX_LENGTH = 128

_HEADER_KEY = HEADER.lower().encode("latin-1")
# `.` and `..` alone would name a folder, not a file.
_SAFE_ID = re.compile(rb"(?!\.\.?\Z)[A-Za-z0-9\-_.:+=@]{1,%d}" % MAX_LENGTH)

logger = logging.getLogger(__name__)

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "vision_serving_request_id", default=None
)


def current_request_id() -> str | None:
    """The id of the request being served, or None outside a request."""
    return _request_id.get()


def new_request_id() -> str:
    """A fresh id: 128 random bits as 32 lowercase hex digits.

    The kernel's random bytes, as uuid4 uses, without building a UUID object (~0.6 us
    here instead of ~3.5 us; a whole digit request costs ~450 us).
    """
    return os.urandom(16).hex()


def accepted_request_id(value: bytes | None) -> str | None:
    """A client's `X-Request-ID` value if it is safe to repeat as it is, else None."""
    if value is None or _SAFE_ID.fullmatch(value) is None:
        return None
    return value.decode("ascii")


class RequestIdMiddleware:
    """ASGI middleware giving each HTTP request its id (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = _header_value(scope)
        request_id = accepted_request_id(sent)
        if request_id is None:
            request_id = new_request_id()
            if sent is not None:  # its length only: the value is what was unsafe to log
                logger.debug("replaced an unusable %s of %d bytes", HEADER, len(sent))
        header = (_HEADER_KEY, request_id.encode("ascii"))
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        token = _request_id.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if response_started:  # too late for an answer: the server drops the connection
                raise
            logger.exception("unhandled error answering %s %s", scope["method"], scope["path"])
            from app.errors import error_response  # here: app.errors reads ids from this module

            response = error_response(
                500,
                "internal_error",
                f"internal server error; the server log has the details under request id "
                f"{request_id}",
            )
            await response(scope, receive, send_with_id)
        finally:
            _request_id.reset(token)


def _header_value(scope: Scope) -> bytes | None:
    for key, value in scope["headers"]:
        if key == _HEADER_KEY:
            return bytes(value)
    return None
