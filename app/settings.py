"""Service settings, read from `VISION_SERVING_*` environment variables.

Built once by the caller and passed to `create_app(settings)`; nothing reads the
environment at import time, so tests point the app at their own model folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.contract.drift import MIN_SCORED_PREDICTIONS

ENV_PREFIX = "VISION_SERVING_"
MIB = 1024 * 1024
MAX_DRIFT_WINDOW = 100_000
"""Summarising a window runs on the event loop at each scrape: ~20 ms at this size
(~0.5 ms at the default 1,000)."""

RuntimePreference = Literal["auto", "litert", "savedmodel"]


def default_runtime_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/vision-serving`, else `~/.cache/vision-serving`."""
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_home) / "vision-serving"


class Settings(BaseSettings):
    """Every knob of the service. Each field is `VISION_SERVING_<FIELD NAME>` in the env."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    model_dir: Path = Field(
        default=Path("models"),
        description="Model repository: <model_dir>/<name>/<version>/ with model_card.json",
    )
    device: Literal["auto", "cpu", "gpu"] = Field(
        default="auto",
        description="Where models run: auto (GPU when TensorFlow sees one), cpu, or gpu",
    )
    runtime: RuntimePreference = Field(
        default="auto",
        description="What runs the models: auto (LiteRT on CPU, the SavedModel on a GPU), "
        "litert (always, checked against the SavedModel at load), or savedmodel",
    )
    runtime_cache_dir: Path = Field(
        default_factory=default_runtime_cache_dir,
        description="Writable folder for LiteRT conversions made at load, for versions "
        "exported without a usable model.tflite (never written into the model directory)",
    )
    host: str = Field(default="127.0.0.1", description="Address `python -m app` binds to")
    port: int = Field(default=8000, ge=0, le=65535, description="Port `python -m app` binds to")
    workers: int = Field(
        default=1,
        ge=1,
        description="Serving processes of `python -m app`, each with its own copy of the "
        "models, its own batcher and its own listening socket (SO_REUSEPORT); `auto`: one "
        "per CPU the service may use (see docs/performance.md before raising it)",
    )

    @field_validator("workers", mode="before")
    @classmethod
    def _count_auto_workers(cls, value: object) -> object:
        """`auto` becomes a number here, so `workers` is always one (`app.workers`)."""
        if isinstance(value, str) and value.strip().lower() == "auto":
            from app.workers import auto_workers

            return auto_workers()
        return value

    version_policy: Literal["latest", "all"] = Field(
        default="latest",
        description="Versions served per model: the newest that loads, or all of them",
    )
    pinned_versions: dict[str, list[int]] = Field(
        default_factory=dict,
        description='Versions served besides the policy\'s, as JSON: {"mnist-mlp": [1]}',
    )
    poll_interval_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How often the model directory is rescanned for changes (0: never)",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        default="info", description="Log level of the service and uvicorn"
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="Log lines of `python -m app`, uvicorn's included: text, or json (one "
        "object per line with time, level, logger, message, request_id, exc_info)",
    )
    payload_log: str | None = Field(
        default=None,
        description="Where sampled predictions are recorded (docs/observability.md): "
        "`stdout`, or a file path (JSON lines, rotated by size); unset: off",
    )
    payload_log_sample: float = Field(
        default=1.0, ge=0, le=1, description="Share of inference requests recorded, 0..1"
    )
    payload_log_max_bytes: int = Field(
        default=64 * MIB, ge=1, description="Size at which the payload log file is rotated"
    )
    payload_log_backups: int = Field(
        default=4,
        ge=1,
        description="Rotated payload log files kept besides the current one: the log takes "
        "about (BACKUPS + 1) x MAX_BYTES of disk at most",
    )
    payload_log_inputs: Path | None = Field(
        default=None,
        description="Folder where the payload log also stores each recorded input's bytes, "
        "named by their sha256; unset: only digests are recorded",
    )
    payload_log_inputs_max_bytes: int = Field(
        default=1024 * MIB,
        ge=1,
        description="Most bytes of inputs stored in PAYLOAD_LOG_INPUTS; past it, inputs are "
        "no longer stored (and are counted on /metrics)",
    )

    @model_validator(mode="after")
    def _payload_log_is_usable(self) -> Settings:
        if self.payload_log_inputs is not None and self.payload_log is None:
            raise ValueError(
                f"{ENV_PREFIX}PAYLOAD_LOG_INPUTS stores inputs beside payload log records, "
                f"but {ENV_PREFIX}PAYLOAD_LOG is not set: set it to stdout or a file path, "
                f"or unset {ENV_PREFIX}PAYLOAD_LOG_INPUTS"
            )
        if self.workers > 1 and self.payload_log_inputs is not None:
            raise ValueError(
                f"{ENV_PREFIX}PAYLOAD_LOG_INPUTS with {self.workers} workers: each worker "
                "would bound only its own share of the folder; store inputs with one worker "
                "per process (scale with replicas), or unset it"
            )
        if self.payload_log is None or self.payload_log == "stdout":
            return self
        if self.workers > 1:
            raise ValueError(
                f"{ENV_PREFIX}PAYLOAD_LOG={self.payload_log} with {self.workers} workers: "
                "each worker process would rotate the same file under the others; use "
                f"{ENV_PREFIX}PAYLOAD_LOG=stdout, or one worker per process (replicas)"
            )
        path = Path(self.payload_log)
        if path.is_dir():
            raise ValueError(
                f"{ENV_PREFIX}PAYLOAD_LOG={self.payload_log} is a folder: give a file path "
                f"in it, e.g. {path / 'payload.jsonl'}"
            )
        if not path.parent.is_dir():
            raise ValueError(
                f"{ENV_PREFIX}PAYLOAD_LOG={self.payload_log}: the folder {path.parent} does "
                "not exist; create it, or choose another path (or stdout)"
            )
        return self

    access_log: bool = Field(
        # Off, as in TF Serving and Triton: a line per request costs ~15% of the event
        # loop's CPU (docs/performance.md); /metrics counts every request by status.
        default=False,
        description="uvicorn's access log, a line per request, from `python -m app`",
    )
    tracing: Literal["off", "otlp", "console"] = Field(
        default="off",
        description="OpenTelemetry traces, a span per request and per stage (docs/deployment.md): "
        "off, otlp (OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT, default http://localhost:4318) "
        "or console (a JSON span a line on stdout); the standard OTEL_* variables apply",
    )

    @field_validator("tracing")
    @classmethod
    def _exporter_can_be_built(cls, value: str) -> str:
        """The OTLP exporter's own variables, checked at start-up rather than at export."""
        if value == "otlp":
            from app.tracing import check_exporter_environment

            check_exporter_environment(value, os.environ)
        return value

    max_batch_size: int = Field(
        default=32, ge=1, description="Most images one model call takes from the batch queue"
    )
    max_batch_wait_ms: float = Field(
        # 0: a batch takes whatever queued while the previous one ran, so a lone request
        # is never held and batches still grow with load (see docs/performance.md).
        default=0.0,
        ge=0,
        description="Longest a request waits for others to share its batch (milliseconds)",
    )
    inline_max_us: float = Field(
        # The thread hop costs ~70 us of latency and ~60 us of CPU here (docs/performance.md).
        default=100.0,
        ge=0,
        description="A batch that warm-up measured at most this long (microseconds) runs on "
        "the event loop when the model is idle, saving the thread hop (0: never)",
    )
    max_body_bytes: int = Field(
        default=32 * MIB, ge=1, description="Largest request body accepted (413 beyond it)"
    )
    max_files_per_request: int = Field(
        default=64, ge=1, description="Most images in one predict/probabilities upload"
    )
    max_image_pixels: int = Field(
        default=50_000_000, ge=1, description="Largest decoded image (width x height) accepted"
    )
    max_archive_entries: int = Field(
        default=5_000, ge=1, description="Most files in an evaluation zip archive"
    )
    max_archive_uncompressed_bytes: int = Field(
        default=256 * MIB, ge=1, description="Largest total uncompressed size of an evaluation zip"
    )
    max_evaluation_images: int = Field(
        default=5_000, ge=1, description="Most labelled images in one evaluation request"
    )
    max_queued_images: int = Field(
        default=512,
        ge=1,
        description="Most images in flight per model; beyond it requests get 503 + Retry-After",
    )
    request_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Longest a request may take before it gets a 503"
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="When set, model and admin endpoints need `Authorization: Bearer <key>`",
    )
    admin_open: bool = Field(
        default=False,
        description="Allow admin endpoints (rescan) without an API key; off by default",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description='Origins allowed by CORS, as JSON: ["https://app.example"]; none by default',
    )
    default_top_k: int = Field(
        default=3, ge=1, description="How many classes `predict` lists when top_k is not given"
    )
    drift_window: int = Field(
        default=1000,
        ge=0,
        le=MAX_DRIFT_WINDOW,
        description="Recent predictions kept per model version and process to watch for "
        "drift from the model card's profile (gauges on /metrics, the model detail API, the "
        f"page); 0 turns it off. At least {MIN_SCORED_PREDICTIONS} when on",
    )

    @field_validator("drift_window")
    @classmethod
    def _drift_window_can_be_scored(cls, value: int) -> int:
        if 0 < value < MIN_SCORED_PREDICTIONS:
            raise ValueError(
                f"a window of {value} predictions is too few to score drift; set "
                f"{ENV_PREFIX}DRIFT_WINDOW to at least {MIN_SCORED_PREDICTIONS}, or to 0 to "
                "turn prediction monitoring off"
            )
        return value
