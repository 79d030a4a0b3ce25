"""Log formats: JSON objects and text lines, each with the request id when there is one."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import subprocess
import sys
import textwrap
from datetime import UTC, datetime

import pytest
from starlette.types import Message, Receive, Scope, Send

from app.logs import JsonFormatter, RequestIdFilter, TextFormatter, iso_utc
from app.request_ids import RequestIdMiddleware
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.anyio


def capturing_logger(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    """A logger of its own whose one handler has `formatter` and the request id filter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger(f"tests.logs.{id(stream)}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


async def log_inside_a_request(logger: logging.Logger, request_id: bytes, text: str) -> None:
    """Log `text` while RequestIdMiddleware serves a request sent with `request_id`."""

    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        logger.warning(text)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        pass

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [(b"x-request-id", request_id)],
    }
    await RequestIdMiddleware(endpoint)(scope, receive, send)


def test_iso_utc_is_iso_8601_in_utc_to_the_millisecond() -> None:
    timestamp = 1_706_702_400.1239  # 2024-01-31T12:00:00.1239 UTC
    text = iso_utc(timestamp)
    assert text == "2024-01-31T12:00:00.123Z"
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert parsed == datetime.fromtimestamp(timestamp, tz=UTC).replace(microsecond=123000)


async def test_a_json_line_has_the_fields_and_the_request_id() -> None:
    logger, stream = capturing_logger(JsonFormatter())
    await log_inside_a_request(logger, b"req-7", 'a "quoted"\nmultiline message')
    logger.info("after the request: %d", 5)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2  # the newline in the message stays inside its JSON string
    inside, after = (json.loads(line) for line in lines)
    assert inside["message"] == 'a "quoted"\nmultiline message'
    assert inside["level"] == "WARNING"
    assert inside["logger"] == logger.name
    assert inside["request_id"] == "req-7"
    logged_at = datetime.fromisoformat(inside["time"].replace("Z", "+00:00"))
    assert logged_at.tzinfo is not None and logged_at.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert abs((datetime.now(UTC) - logged_at).total_seconds()) < 60
    assert set(inside) == {"time", "level", "logger", "message", "request_id"}
    assert after["message"] == "after the request: 5"
    assert "request_id" not in after


def test_a_json_line_carries_the_traceback() -> None:
    logger, stream = capturing_logger(JsonFormatter())
    try:
        raise ValueError("broken pixels")
    except ValueError:
        logger.exception("could not serve")
    [entry] = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert entry["message"] == "could not serve"
    assert entry["level"] == "ERROR"
    assert entry["exc_info"].startswith("Traceback (most recent call last):")
    assert "ValueError: broken pixels" in entry["exc_info"]


async def test_a_text_line_ends_with_the_request_id_when_there_is_one() -> None:
    logger, stream = capturing_logger(TextFormatter())
    await log_inside_a_request(logger, b"req-8", "inside")
    logger.warning("outside")
    inside, outside = stream.getvalue().splitlines()
    assert inside.endswith(f"WARNING {logger.name}: inside request_id=req-8")
    assert outside.endswith(f"WARNING {logger.name}: outside")


def test_the_configuration_reaches_uvicorn_loggers_and_sets_the_level() -> None:
    # In a process of its own: dictConfig replaces the handlers of this one.
    script = textwrap.dedent(
        """
        import json, logging, logging.config
        from app.logs import logging_config

        logging.config.dictConfig(logging_config("json", "warning"))
        logging.getLogger("app.repository").info("hidden: below the level")
        logging.getLogger("app.repository").warning("from the app")
        logging.getLogger("uvicorn.error").warning("from uvicorn")
        logging.getLogger("uvicorn.access").warning("an access line")
        """
    )
    finished = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert finished.returncode == 0, finished.stderr
    stderr = [json.loads(line) for line in finished.stderr.splitlines()]
    stdout = [json.loads(line) for line in finished.stdout.splitlines()]
    assert [(e["logger"], e["message"]) for e in stderr] == [
        ("app.repository", "from the app"),
        ("uvicorn.error", "from uvicorn"),
    ]
    assert [(e["logger"], e["message"]) for e in stdout] == [("uvicorn.access", "an access line")]
