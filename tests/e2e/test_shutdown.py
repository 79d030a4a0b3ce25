"""SIGTERM under load: in-flight requests complete, new ones are refused, exit 0."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx

from tests.app.images import png
from tests.app.tiny_models import export_tiny_digits
from tests.e2e.conftest import start_server

PREDICT = "/api/v1/models/tiny-digits/predict"
IN_FLIGHT = 'vision_serving_requests_in_flight{model="tiny-digits"}'


def wait_until_in_flight(url: str, count: int) -> None:
    for _ in range(200):
        for line in httpx.get(f"{url}/metrics").text.splitlines():
            if line.startswith(IN_FLIGHT) and float(line.split()[-1]) >= count:
                return
        time.sleep(0.05)
    raise AssertionError(f"{count} requests never got in flight")


def test_sigterm_drains_in_flight_requests_and_exits_zero(tmp_path: Path) -> None:
    export_tiny_digits(tmp_path / "models")
    # A long batch wait keeps every request in flight for a while, so SIGTERM lands
    # while requests are waiting for their batch.
    server = start_server(
        tmp_path / "models", tmp_path / "server.log", VISION_SERVING_MAX_BATCH_WAIT_MS="1500"
    )
    results: list[int | str] = []

    def send() -> None:
        try:
            response = httpx.post(
                server.url + PREDICT, files={"files": ("d.png", png())}, timeout=30
            )
            results.append(response.status_code)
        except httpx.TransportError as error:
            results.append(type(error).__name__)

    in_flight = [threading.Thread(target=send) for _ in range(8)]
    for thread in in_flight:
        thread.start()
    wait_until_in_flight(server.url, 8)
    server.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    try:
        late = httpx.post(server.url + PREDICT, files={"files": ("d.png", png())}, timeout=5)
        refused = f"answered {late.status_code}"
    except httpx.TransportError:
        refused = "refused"
    for thread in in_flight:
        thread.join(30)
    code = server.process.wait(30)  # the bound: TimeoutExpired fails the test

    assert results == [200] * 8, server.log()
    assert refused in {"refused", "answered 503"}, refused
    assert code == 0, server.log()
