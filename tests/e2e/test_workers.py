"""`VISION_SERVING_WORKERS=2`: two serving processes on one port, one `/metrics`, exit 0."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.app.images import png
from tests.app.tiny_models import export_tiny_digits
from tests.e2e.conftest import start_server, stop_server

PREDICT = "/api/v1/models/tiny-digits/predict"
REQUESTS = 'vision_serving_requests_total{api="native",model="tiny-digits",status="200"'
LOADED = 'vision_serving_model_versions_loaded{model="tiny-digits",worker="'


def worker_pids(server_pid: int) -> list[int]:
    children = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()
    return [int(pid) for pid in children if "spawn_main" in _cmdline(int(pid))]


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def scrape(url: str) -> tuple[float, str]:
    """Requests counted, and the process that answered (from its `worker` label)."""
    lines = httpx.get(f"{url}/metrics", headers={"Connection": "close"}).text.splitlines()
    counted = sum(float(line.split()[-1]) for line in lines if line.startswith(REQUESTS))
    loaded = next(line for line in lines if line.startswith(LOADED))
    return counted, loaded.split('worker="')[1].split('"')[0]


def test_two_workers_serve_one_port_and_report_one_set_of_metrics(tmp_path: Path) -> None:
    export_tiny_digits(tmp_path / "models")
    server = start_server(tmp_path / "models", tmp_path / "server.log", VISION_SERVING_WORKERS="2")
    try:
        # /readyz answered by one worker; wait until every fresh connection says ready.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            answers = [
                httpx.get(f"{server.url}/readyz", headers={"Connection": "close"}).status_code
                for _ in range(10)
            ]
            if answers == [200] * 10:
                break
            time.sleep(0.2)
        assert len(worker_pids(server.process.pid)) == 2, server.log()

        def predict(index: int) -> int:
            # A new connection per request, so the kernel spreads them over both workers.
            with httpx.Client(base_url=server.url, timeout=30) as client:
                files = {"files": (f"{index}.png", png(index))}
                return client.post(PREDICT, files=files).status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(predict, range(40)))
        assert statuses == [200] * 40
        # Every scrape, whichever worker answers it, counts the requests of both, and
        # both answer scrapes (their model gauges name them).
        scrapes = [scrape(server.url) for _ in range(20)]
        assert [counted for counted, _ in scrapes] == [40.0] * 20
        assert {worker for _, worker in scrapes} == {
            str(pid) for pid in worker_pids(server.process.pid)
        }
    finally:
        exit_code = stop_server(server)
    assert exit_code == 0, server.log()
