"""`python -m app` / `vision-serve`: start the service with uvicorn."""

from __future__ import annotations

import argparse
import contextlib
import logging
import logging.config
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.server import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from app.devices import DeviceUnavailable, require_device
from app.logs import logging_config
from app.main import create_app
from app.settings import ENV_PREFIX, Settings
from app.workers import PortUnavailable, reserve_port

PROG = "python -m app"
logger = logging.getLogger("uvicorn.error")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Serve the models in a model directory over HTTP. Every option can "
        "also be set as a VISION_SERVING_* environment variable (see README).",
    )
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to bind (default 8000)")
    parser.add_argument("--model-dir", type=Path, help="model repository (default ./models)")
    parser.add_argument("--device", choices=["auto", "cpu", "gpu"], help="where models run")
    parser.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])
    parser.add_argument(
        "--log-format", choices=["text", "json"], help="log lines as text (default) or JSON"
    )
    parser.add_argument(
        "--workers",
        type=_workers_option,
        help="serving processes (default 1), each listening on the port with its own socket; "
        "'auto': one per CPU the service may use (CPU affinity and cgroup CPU limit)",
    )
    return parser.parse_args(argv)


def _workers_option(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {count}")
    return count


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    overrides = {key: value for key, value in vars(args).items() if value is not None}
    settings = Settings(**overrides)
    logging.config.dictConfig(logging_config(settings.log_format, settings.log_level))
    try:
        # Checked here, before uvicorn: in the lifespan the same message would come
        # wrapped in uvicorn's traceback, once per worker.
        require_device(settings.device)
    except DeviceUnavailable as error:
        print(f"{PROG}: error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(STARTUP_FAILURE) from None
    shown_host = "localhost" if settings.host in {"0.0.0.0", "::"} else settings.host
    # Logged, not printed: with the JSON log format every line of output is JSON.
    logger.info(
        "Serving %s at http://%s:%d (API docs: http://%s:%d/docs)",
        settings.model_dir,
        shown_host,
        settings.port,
        shown_host,
        settings.port,
    )
    # uvicorn drains and shuts down on SIGTERM/SIGINT, then re-raises the signal to the
    # handler that was installed before it ran. Make that handler a clean exit, so an
    # orchestrator's ordinary stop reads as success (exit 0), not as a kill (143).
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, _exit_cleanly)
    if settings.workers > 1:
        _serve_with_workers(settings, overrides)
        return
    uvicorn.run(create_app(settings), **uvicorn_options(settings))


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """What uvicorn is told, with one process or several.

    `log_config` is applied by uvicorn in each process it runs the app in, so spawned
    workers log in the same format as the supervisor.
    """
    return dict(
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=logging_config(settings.log_format, settings.log_level),
        access_log=settings.access_log,
        timeout_graceful_shutdown=30,
    )


def _serve_with_workers(settings: Settings, overrides: dict[str, object]) -> None:
    """Run `settings.workers` processes on one port, each building its app from the env.

    Each worker listens on its own socket, bound with `SO_REUSEPORT`, so the kernel
    spreads connections over them (`app.workers`; where the platform lacks it, they
    share one socket). uvicorn's supervisor starts every worker afresh (spawn), so
    command-line overrides travel as the environment variables `Settings` reads, and
    Prometheus counts as files in a private folder (always a fresh one: stale files
    would add old counts) that any worker's `/metrics` sums up. A worker that fails to
    start stops the supervisor, and the exit status says so (uvicorn itself would exit
    0); one that dies later is replaced.
    """
    for key, value in overrides.items():
        os.environ[f"{ENV_PREFIX}{key.upper()}"] = str(value)
    # `auto` is counted once, here: every worker is told the same number.
    os.environ[f"{ENV_PREFIX}WORKERS"] = str(settings.workers)
    with tempfile.TemporaryDirectory(prefix="vision-serving-metrics-") as metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        config = uvicorn.Config(
            "app.main:create_app",
            factory=True,
            workers=settings.workers,
            **uvicorn_options(settings),
        )
        try:
            listener = reserve_port(settings.host, settings.port)
        except PortUnavailable as error:
            print(f"{PROG}: error: {error}", file=sys.stderr, flush=True)
            raise SystemExit(STARTUP_FAILURE) from None
        if listener is None:
            logger.warning(
                "SO_REUSEPORT is not available here: the %d workers share one listening "
                "socket, and one of them may take most connections",
                settings.workers,
            )
            sockets = [config.bind_socket()]
        else:
            port = listener.getsockname()[1]
            logger.info(
                "Uvicorn running on http://%s:%d (Press CTRL+C to quit)",
                f"[{settings.host}]" if ":" in settings.host else settings.host,
                port,
            )
            logger.info(
                "%d workers, each listening with its own socket (SO_REUSEPORT)", settings.workers
            )
            sockets = [listener]
        with contextlib.closing(sockets[0]):
            supervisor = Multiprocess(config, sockets=sockets)
            supervisor.run()
    if any(worker.exitcode == STARTUP_FAILURE for worker in supervisor.processes):
        raise SystemExit(STARTUP_FAILURE)


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    main()
