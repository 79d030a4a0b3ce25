"""SIGTERM under load or during a hot reload: in-flight requests complete, exit 0 in time."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.app.images import png
from tests.app.tiny_models import TINY_DIGITS, export_tiny_digits
from tests.e2e.conftest import LiveServer, start_server

PREDICT = "/api/v1/models/tiny-digits/predict"
IN_FLIGHT = 'vision_serving_requests_in_flight{model="tiny-digits"}'


def wait_until_in_flight(url: str, count: int) -> None:
    for _ in range(200):
        for line in httpx.get(f"{url}/metrics").text.splitlines():
            if line.startswith(IN_FLIGHT) and float(line.split()[-1]) >= count:
                return
        time.sleep(0.05)
    raise AssertionError(f"{count} requests never got in flight")


def send_in_flight(
    server: LiveServer, count: int, outcome: Callable[[httpx.Response], int | str]
) -> tuple[list[threading.Thread], list[int | str]]:
    """`count` predict requests sent from threads, once the server holds them all: the
    threads, and a list that gets each request's `outcome` (or its transport error)."""
    results: list[int | str] = []

    def send() -> None:
        try:
            response = httpx.post(
                server.url + PREDICT, files={"files": ("d.png", png())}, timeout=30
            )
            results.append(outcome(response))
        except httpx.TransportError as error:
            results.append(type(error).__name__)

    threads = [threading.Thread(target=send) for _ in range(count)]
    for thread in threads:
        thread.start()
    wait_until_in_flight(server.url, count)
    return threads, results


def test_sigterm_drains_in_flight_requests_and_exits_zero(tmp_path: Path) -> None:
    export_tiny_digits(tmp_path / "models")
    # A long batch wait keeps every request in flight for a while, so SIGTERM lands
    # while requests are waiting for their batch.
    server = start_server(
        tmp_path / "models", tmp_path / "server.log", VISION_SERVING_MAX_BATCH_WAIT_MS="1500"
    )
    in_flight, results = send_in_flight(server, 8, lambda response: response.status_code)
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


# A bound for a hang, not a speed limit: a clean stop takes well under a second here.
EXIT_BOUND_SECONDS = 60
# The models a hot reload replaces at once: each takes the watcher a few tens of ms to
# load and unload, so together they keep it reloading while the shutdown lands.
RELOADED = [f"reload-{n}" for n in range(1, 7)]
# When the new versions are published, counted from uvicorn's "Shutting down" (its first
# step after a SIGTERM). The application shutdown, which cancels the model watcher,
# follows ~0.1 s later, while the watcher (polling every 20 ms) replaces model after
# model: what matters is where the watcher is when it is cancelled.
PUBLISH_DELAYS = (0.0, 0.01, 0.02, 0.03, 0.04, 0.06)


def export_tiny_models(model_dir: Path, names: list[str], version: int) -> None:
    """Version `version` of a tiny digits model under each of `names`."""
    exported = export_tiny_digits(model_dir / ".export", version=version, seed=version)
    for name in names:
        target = model_dir / name / str(version)
        shutil.copytree(exported, target)
        card = json.loads((target / "model_card.json").read_text())
        (target / "model_card.json").write_text(json.dumps({**card, "name": name}))
    shutil.rmtree(model_dir / ".export")


def wait_for_log(server: LiveServer, line: str) -> None:
    for _ in range(2000):
        if line in server.log():
            return
        time.sleep(0.005)
    raise AssertionError(f"{line!r} never appeared in the server log:\n{server.log()}")


def exit_code_within_bound(server: LiveServer, when: str) -> int:
    try:
        return server.process.wait(EXIT_BOUND_SECONDS)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
        pytest.fail(f"still running {EXIT_BOUND_SECONDS} s after a SIGTERM {when}:\n{server.log()}")


def shut_down_mid_reload(log: str) -> bool:
    """Whether the application shutdown cut a reload short: the shutdown then finds old
    and new versions side by side, and unloads both."""
    _, shutdown, after = log.partition("Waiting for application shutdown.")
    return bool(shutdown) and all(
        re.search(rf"unloading model reload-\d+ version {version}\b", after) for version in (1, 2)
    )


def test_sigterm_during_a_hot_reload_exits_zero_in_time(tmp_path: Path) -> None:
    # A cancel that reached the model watcher while it unloaded a replaced version used
    # to be swallowed, and the shutdown then waited for the watcher forever (issue item
    # 7; tests/app/test_cancellation.py pins down the exact loop steps, which no signal
    # sent from outside can hit on purpose). Here, the real thing: `python -m app`, a hot
    # reload of several models, and the shutdown landing at several moments of it. Before
    # the fix, about one attempt in ten hung.
    export_tiny_models(tmp_path / "v1", RELOADED, version=1)
    export_tiny_models(tmp_path / "v2", RELOADED, version=2)
    logs = []
    for attempt, delay in enumerate(PUBLISH_DELAYS):
        model_dir, staging = tmp_path / f"models-{attempt}", tmp_path / f"staging-{attempt}"
        shutil.copytree(tmp_path / "v1", model_dir)
        shutil.copytree(tmp_path / "v2", staging)
        server = start_server(
            model_dir,
            tmp_path / f"server-{attempt}.log",
            VISION_SERVING_POLL_INTERVAL_SECONDS="0.02",
        )
        server.process.send_signal(signal.SIGTERM)
        wait_for_log(server, "Shutting down")
        time.sleep(delay)
        for name in RELOADED:  # atomic renames, as training's export publishes
            (staging / name / "2").rename(model_dir / name / "2")
        code = exit_code_within_bound(server, f"with new versions published {delay} s later")
        log = server.log()
        assert code == 0, log
        assert "Application shutdown complete" in log, log
        logs.append(log)
    # The premise, checked: the shutdown did land inside a reload.
    assert any(shut_down_mid_reload(log) for log in logs), logs


def test_sigterm_while_a_replaced_version_drains_answers_its_requests(tmp_path: Path) -> None:
    model_dir = tmp_path / "models"
    export_tiny_digits(model_dir)
    export_tiny_digits(tmp_path / "staging", version=2, seed=2)
    # A long batch wait keeps requests to version 1 in flight while version 2 replaces
    # it, so its unload is still draining them when SIGTERM arrives.
    server = start_server(
        model_dir,
        tmp_path / "server.log",
        VISION_SERVING_MAX_BATCH_WAIT_MS="3000",
        VISION_SERVING_POLL_INTERVAL_SECONDS="0.02",
    )
    in_flight, results = send_in_flight(
        server, 4, lambda response: response.json().get("version", response.status_code)
    )
    (tmp_path / "staging" / TINY_DIGITS / "2").rename(model_dir / TINY_DIGITS / "2")
    wait_for_log(server, f"unloading model {TINY_DIGITS} version 1")
    server.process.send_signal(signal.SIGTERM)
    for thread in in_flight:
        thread.join(30)
    code = exit_code_within_bound(server, "while a replaced version drained")

    assert results == [1] * 4, server.log()  # answered by the version they were sent to
    assert code == 0, server.log()
