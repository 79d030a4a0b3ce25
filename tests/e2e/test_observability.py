"""`python -m app` for real: JSON log lines from every process, and the payload log file."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from tests.app.images import png
from tests.app.tiny_models import export_tiny_digits
from tests.e2e.conftest import LiveServer, start_server, stop_server

PREDICT = "/api/v1/models/tiny-digits/predict"
JSON_FIELDS = {"time", "level", "logger", "message"}
# What TensorFlow's and LiteRT's C++ code prints on stderr itself, past Python's logging:
# absl's `I0000 00:00:... file.cc:12] ...` lines, its note before it is set up, and
# LiteRT's delegate notice.
NATIVE_LINE = re.compile(
    r"[IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\] "
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|INFO: Created TensorFlow Lite XNNPACK delegate"
)


def post_until_served(
    server: LiveServer, path: str, request_id: str, **request: Any
) -> httpx.Response:
    """POST until a worker with its models loaded answers (/readyz was one worker's word)."""
    deadline = time.monotonic() + 60
    while True:
        response = httpx.post(
            f"{server.url}{path}",
            headers={"X-Request-ID": request_id, "Connection": "close"},
            timeout=30,
            **request,
        )
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def test_json_logs_of_every_worker_are_objects_with_the_request_id(tmp_path: Path) -> None:
    export_tiny_digits(tmp_path / "models")
    server = start_server(
        tmp_path / "models",
        tmp_path / "server.log",
        VISION_SERVING_LOG_FORMAT="json",
        VISION_SERVING_ACCESS_LOG="true",
        VISION_SERVING_WORKERS="2",
    )
    try:
        served = post_until_served(
            server, PREDICT, "e2e-served", files={"files": ("d.png", png(), "image/png")}
        )
        missing = post_until_served(
            server, "/api/v1/models/nope/predict", "e2e-missing", files={"files": ("d.png", png())}
        )
    finally:
        code = stop_server(server)
    log = server.log()
    assert code == 0, log
    assert (served.status_code, missing.status_code) == (200, 404), log
    assert missing.json()["request_id"] == "e2e-missing"

    entries = []
    for line in log.splitlines():
        if line.strip() and not NATIVE_LINE.match(line):
            entry = json.loads(line)  # every line Python writes, in every process, is JSON
            assert set(entry) >= JSON_FIELDS, line
            datetime.fromisoformat(entry["time"].replace("Z", "+00:00"))
            entries.append(entry)
    messages = [(e["logger"], e["message"]) for e in entries]
    assert ("uvicorn.error", "Application startup complete.") in messages
    started = [m for logger, m in messages if m.startswith("Started server process")]
    assert len(started) >= 2, messages  # each worker logged in JSON too
    assert any("Serving" in m and server.url in m for _, m in messages)
    access = {e["request_id"]: e["message"] for e in entries if e["logger"] == "uvicorn.access"}
    assert f"POST {PREDICT} HTTP/1.1" in access["e2e-served"]
    assert access["e2e-served"].endswith(" 200")
    assert access["e2e-missing"].endswith(" 404")


def test_the_payload_log_file_and_stored_inputs_of_a_real_server(tmp_path: Path) -> None:
    export_tiny_digits(tmp_path / "models")
    payload_log, inputs = tmp_path / "payload.jsonl", tmp_path / "inputs"
    server = start_server(
        tmp_path / "models",
        tmp_path / "server.log",
        VISION_SERVING_PAYLOAD_LOG=str(payload_log),
        VISION_SERVING_PAYLOAD_LOG_INPUTS=str(inputs),
    )
    digit, other = png(1), png(2)
    try:
        native = post_until_served(
            server, PREDICT, "e2e-native", files={"files": ("d.png", digit, "image/png")}
        )
        classify = post_until_served(
            server,
            "/v1/models/tiny-digits:classify",
            "e2e-tfserving",
            json={"instances": [{"b64": base64.b64encode(other).decode()}]},
        )
    finally:
        code = stop_server(server)
    assert code == 0, server.log()
    assert (native.status_code, classify.status_code) == (200, 200)
    # Written by the writer thread, flushed at shutdown.
    records = [json.loads(line) for line in payload_log.read_text().splitlines()]
    assert [(r["request_id"], r["protocol"], r["status"]) for r in records] == [
        ("e2e-native", "native", 200),
        ("e2e-tfserving", "tfserving", 200),
    ]
    for record, data in zip(records, (digit, other), strict=True):
        [entry] = record["inputs"]
        digest = hashlib.sha256(data).hexdigest()
        assert (entry["sha256"], entry["bytes"], entry["stored"]) == (digest, len(data), True)
        assert (inputs / digest).read_bytes() == data
    top = records[0]["inputs"][0]["top_k"][0]
    answered = native.json()["predictions"][0]["top_k"][0]
    assert top["label"] == answered["label"]
    assert abs(top["probability"] - answered["probability"]) < 1e-6
