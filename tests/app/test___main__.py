"""`python -m app`: what its settings tell uvicorn, and how it refuses to start."""

from __future__ import annotations

import logging
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from uvicorn.config import Config
from uvicorn.server import STARTUP_FAILURE

from app import __main__ as entry
from app.__main__ import parse_args, uvicorn_options
from app.logs import JsonFormatter, TextFormatter
from app.settings import Settings
from app.workers import ReusePortListener
from tests.conftest import REPO_ROOT


def test_the_access_log_is_off_by_default() -> None:
    assert uvicorn_options(Settings())["access_log"] is False


def test_the_access_log_can_be_turned_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISION_SERVING_ACCESS_LOG", "true")
    assert uvicorn_options(Settings())["access_log"] is True


def test_host_port_and_log_level_come_from_the_settings() -> None:
    options = uvicorn_options(Settings(host="0.0.0.0", port=8123, log_level="warning"))
    assert (options["host"], options["port"], options["log_level"]) == ("0.0.0.0", 8123, "warning")


@pytest.mark.parametrize(
    ("log_format", "formatter"), [("text", TextFormatter), ("json", JsonFormatter)]
)
def test_uvicorn_and_its_workers_are_given_the_log_format(
    log_format: str, formatter: type[logging.Formatter]
) -> None:
    arguments = parse_args(["--log-format", log_format])
    options = uvicorn_options(Settings(log_format=arguments.log_format))
    # uvicorn pickles its config, `log_config` included, into each worker it spawns, which
    # applies it before serving (tests/e2e/test_observability.py shows it for real).
    log_config = pickle.loads(pickle.dumps(options))["log_config"]
    assert log_config["formatters"]["service"]["()"] is formatter
    handlers = log_config["handlers"]
    assert {name: handlers[name]["filters"] for name in handlers} == {
        "stderr": ["request_id"],
        "access": ["request_id"],
    }


@pytest.mark.parametrize(
    ("arguments", "environment"),
    [
        (["--device", "gpu"], {}),
        ([], {"VISION_SERVING_DEVICE": "gpu"}),
        (["--device", "gpu", "--workers", "2"], {}),
    ],
    ids=["option", "environment", "workers"],
)
def test_gpu_without_a_gpu_is_one_line_and_startup_failure(
    arguments: list[str], environment: dict[str, str], tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISION_SERVING_")}
    env.update(environment, CUDA_VISIBLE_DEVICES="")  # no GPU, even on a machine with one
    command = [sys.executable, "-m", "app", "--port", "0", "--model-dir", str(tmp_path)]
    finished = subprocess.run(
        [*command, *arguments],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finished.returncode == STARTUP_FAILURE, finished.stderr
    assert "Traceback" not in finished.stderr
    [line] = [line for line in finished.stderr.splitlines() if "sees no GPU" in line]
    assert line.startswith("python -m app: error: device is set to 'gpu'")
    assert "VISION_SERVING_DEVICE=auto or cpu" in line


@pytest.mark.parametrize(("given", "parsed"), [("2", 2), ("auto", "auto"), ("AUTO", "auto")])
def test_workers_is_a_number_or_auto(given: str, parsed: int | str) -> None:
    assert parse_args(["--workers", given]).workers == parsed


@pytest.mark.parametrize(
    ("given", "said"), [("0", "expected at least 1, got 0"), ("two", "expected a number or 'auto'")]
)
def test_other_workers_values_are_usage_errors(
    given: str, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(["--workers", given])
    assert exited.value.code == 2
    assert said in capsys.readouterr().err


Started = tuple[Config, list[socket.socket], dict[str, str]]


@pytest.fixture
def supervisor(monkeypatch: pytest.MonkeyPatch) -> list[Started]:
    """uvicorn's `Multiprocess` replaced: what each run was given, and the env then."""
    started: list[Started] = []

    class FakeSupervisor:
        def __init__(self, config: Config, sockets: list[socket.socket]) -> None:
            self.config, self.sockets = config, sockets
            self.processes: list[object] = []

        def run(self) -> None:
            started.append((self.config, self.sockets, dict(os.environ)))

    # Set first, so that whatever `_serve_with_workers` writes is undone afterwards.
    for name in ("PROMETHEUS_MULTIPROC_DIR", "VISION_SERVING_WORKERS", "VISION_SERVING_PORT"):
        monkeypatch.setenv(name, "")
    monkeypatch.setattr(entry, "Multiprocess", FakeSupervisor)
    return started


def test_workers_get_the_settings_and_a_socket_each(supervisor: list[Started]) -> None:
    settings = Settings(workers=2, port=0)
    entry._serve_with_workers(settings, {"workers": "auto", "port": 0})
    [(config, sockets, environment)] = supervisor
    assert config.workers == 2
    # `auto` travels counted, so every worker runs with the same number.
    assert (environment["VISION_SERVING_WORKERS"], environment["VISION_SERVING_PORT"]) == ("2", "0")
    assert Path(environment["PROMETHEUS_MULTIPROC_DIR"]).name.startswith("vision-serving-metrics-")
    [listener] = sockets
    assert isinstance(listener, ReusePortListener)  # pickled into each worker: its own socket
    assert listener.fileno() == -1  # the supervisor let go of the port when it stopped


def test_workers_refuse_a_port_another_server_listens_on(
    supervisor: list[Started], capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as stray:
        stray.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        stray.bind(("127.0.0.1", 0))
        stray.listen()
        port = stray.getsockname()[1]
        with pytest.raises(SystemExit) as exited:
            entry._serve_with_workers(Settings(workers=2, port=port), {})
    assert exited.value.code == STARTUP_FAILURE
    assert capsys.readouterr().err == (
        f"python -m app: error: cannot listen on 127.0.0.1:{port}: Address already in use "
        "(is another server running on that port?)\n"
    )
    assert supervisor == []
