"""Drive load with wrk (a C load generator) and read back its summary.

wrk sends prebuilt multipart bodies (see `multipart.lua`) over keep-alive connections
from one thread, so it needs about one core at most and leaves the other to the server.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.payloads import Payload

LUA_SCRIPT = Path(__file__).with_name("multipart.lua")
SUMMARY_PREFIX = "BENCH_JSON "
LIMIT_MARKER = "BENCH_LIMIT_REACHED"
DEFAULT_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class Target:
    """What one wrk run requests: a path and a body, or several sent in turn."""

    parts: tuple[tuple[str, Payload], ...]

    @classmethod
    def single(cls, path: str, payload: Payload) -> Target:
        return cls(((path, payload),))

    def env(self) -> str:
        return "\n".join(f"{path}|{p.path}|{p.content_type}" for path, p in self.parts)


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    errors: dict[str, int]
    latency_ms: dict[str, float]

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def ensure_wrk() -> str:
    """Path of wrk, installing Debian's package when missing and we are root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk is missing: installing it with apt-get (Debian package 'wrk')", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env)
        found = shutil.which("wrk")
        if found:
            return found
    raise SystemExit(
        "wrk is not installed. Install it with `sudo apt-get install -y wrk` (Debian/Ubuntu) "
        "or `brew install wrk` (macOS), then run the benchmark again."
    )


def run_wrk(
    base_url: str,
    target: Target,
    *,
    connections: int,
    seconds: float,
    limit: int = 0,
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS,
) -> WrkResult:
    """One wrk run with `connections` keep-alive connections from one thread."""
    first_path = target.parts[0][0]
    command = [
        ensure_wrk(),
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={timeout_seconds}s",
        "-s",
        str(LUA_SCRIPT),
        f"{base_url}{first_path}",
    ]
    env = {**os.environ, "BENCH_REQUESTS": target.env(), "BENCH_LIMIT": str(limit)}
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.strip() == LIMIT_MARKER:
                process.send_signal(signal.SIGINT)  # wrk stops, then prints its summary
        stderr = process.stderr.read()
        returncode = process.wait()
    return parse_wrk_output("".join(lines), stderr, returncode)


def parse_wrk_output(stdout: str, stderr: str = "", returncode: int = 0) -> WrkResult:
    """Read the summary line `multipart.lua` prints when wrk finishes."""
    for line in stdout.splitlines():
        if line.startswith(SUMMARY_PREFIX):
            summary = json.loads(line[len(SUMMARY_PREFIX) :])
            return WrkResult(
                requests=int(summary["requests"]),
                seconds=summary["duration_us"] / 1e6,
                errors={key: int(value) for key, value in summary["errors"].items()},
                latency_ms={key: value / 1000 for key, value in summary["latency_us"].items()},
            )
    raise RuntimeError(
        f"wrk printed no summary (exit {returncode}):\n{stdout[-2000:]}\n{stderr[-2000:]}"
    )
