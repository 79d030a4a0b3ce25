"""Log configuration of `python -m app`: text or JSON lines, each with its request id.

One `logging.config.dictConfig` dictionary (`logging_config`) covers the service's own
loggers (the root) and uvicorn's (`uvicorn`, `uvicorn.error`, `uvicorn.access`). It is
applied once by `python -m app` itself and handed to uvicorn as its `log_config`, which
uvicorn applies again in every worker process it spawns, so workers log alike.

- `text` (the default): `<time> <LEVEL> <logger>: <message> request_id=<id>`, the id
  only on lines logged while a request is served.
- `json`: one object per line, `{"time", "level", "logger", "message", "request_id"?,
  "exc_info"?}`, time in ISO 8601 UTC; for log collectors.

Every handler carries `RequestIdFilter`, which copies the id of the request being
served (`app.request_ids`) onto each record, so a formatter can show it.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Literal

from app.request_ids import current_request_id

LogFormat = Literal["text", "json"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RequestIdFilter(logging.Filter):
    """Sets `record.request_id`: the id of the request being served, or None; an id the
    call gave (`extra={"request_id": ...}`, as a failed batch names its requests') stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = current_request_id()
        return True


class TextFormatter(logging.Formatter):
    """`TEXT_FORMAT`, with ` request_id=<id>` after the message when there is one."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        request_id = getattr(record, "request_id", None)
        return line if request_id is None else f"{line} request_id={request_id}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (json escapes newlines in values)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": iso_utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


def iso_utc(timestamp: float) -> str:
    """`2025-01-31T12:00:00.123Z`: a Unix time in ISO 8601, UTC, to the millisecond."""
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp))
    return f"{seconds}.{int(timestamp % 1 * 1000):03d}Z"


def logging_config(log_format: LogFormat, level: str) -> dict[str, Any]:
    """The `dictConfig` dictionary for the service and uvicorn, at `level` (e.g. "info").

    Loggers that exist already are left enabled (`disable_existing_loggers` is off:
    modules create theirs at import). uvicorn's access lines go to stdout and the rest
    to stderr, as uvicorn's own configuration does.
    """
    formatter = {"()": JsonFormatter if log_format == "json" else TextFormatter}
    level = level.upper()

    def handler(stream: str) -> dict[str, Any]:
        return {
            "class": "logging.StreamHandler",
            "stream": stream,
            "formatter": "service",
            "filters": ["request_id"],
        }

    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"service": formatter},
        "handlers": {
            "stderr": handler("ext://sys.stderr"),
            "access": handler("ext://sys.stdout"),
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": ["access"], "level": level, "propagate": False},
        },
    }
