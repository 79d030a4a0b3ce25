"""Service settings, read from `VISION_SERVING_*` environment variables.

Built once by the caller and passed to `create_app(settings)`; nothing reads the
environment at import time, so tests point the app at their own model folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "VISION_SERVING_"
MIB = 1024 * 1024

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
    access_log: bool = Field(
        # Off, as in TF Serving and Triton: a line per request costs ~15% of the event
        # loop's CPU (docs/performance.md); /metrics counts every request by status.
        default=False,
        description="uvicorn's access log, a line per request, from `python -m app`",
    )
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
