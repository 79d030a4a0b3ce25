"""Start the servers under test as subprocesses, wait until they are ready, stop them.

Each server runs exactly as a user would start it (`python -m app`, or `python -m
bench.<app>` for the baselines), on a free loopback port, with its log in a file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_SECONDS = 300


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server: its arguments after `python -m`, and its ready URL path."""

    name: str
    module_args: tuple[str, ...]
    ready_path: str
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None  # default: the repository root

    def command(self, port: int) -> list[str]:
        args = [arg.replace("{port}", str(port)) for arg in self.module_args]
        return [sys.executable, "-m", *args]


@dataclass
class RunningServer:
    spec: ServerSpec
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path
    ready_seconds: float = 0.0

    @property
    def pid(self) -> int:
        return self.process.pid


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@contextlib.contextmanager
def running(spec: ServerSpec, log_dir: Path) -> Iterator[RunningServer]:
    """Start `spec`, wait for its ready path to answer 200, and stop it on exit."""
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{spec.name}-{port}.log"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **spec.env}
    started = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            spec.command(port),
            cwd=spec.cwd or REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    server = RunningServer(spec, process, f"http://127.0.0.1:{port}", log_path)
    try:
        deadline = started + READY_TIMEOUT_SECONDS
        while not _answers_200(server.url + spec.ready_path):
            if process.poll() is not None:
                raise RuntimeError(
                    f"{spec.name} exited with {process.returncode}; log {log_path}:\n"
                    + log_path.read_text(errors="replace")[-3000:]
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"{spec.name} not ready after {READY_TIMEOUT_SECONDS} s")
            time.sleep(0.05)
        server.ready_seconds = time.monotonic() - started
        yield server
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
