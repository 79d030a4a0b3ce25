"""What one benchmark run measures: servers, workloads and the settings of the run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.servers import ServerSpec

CONCURRENCY = (1, 16, 64)

WORKERS_ENV = "VISION_SERVING_WORKERS"

MNIST_PREDICT = "/api/v1/models/mnist-mlp/predict"
PNEUMONIA_PREDICT = "/api/v1/models/pneumonia-cnn/predict"


@dataclass(frozen=True)
class Workload:
    """One kind of request against one server, measured at each concurrency."""

    name: str
    server: str  # a ServerSpec name; service variants share the "service" workloads
    path: str
    payload: str  # a name from `bench.payloads.build_payloads`
    model: str | None = None  # the model it exercises, for the raw-model comparison


BASELINE_WORKLOADS = (
    Workload("ceiling", "ceiling", "/upload", "digit"),
    Workload("naive", "naive", "/predict", "digit", model="mnist-mlp"),
)

SERVICE_WORKLOADS = (
    Workload("mnist", "service", MNIST_PREDICT, "digit", model="mnist-mlp"),
    Workload("mnist-16", "service", MNIST_PREDICT, "digits16", model="mnist-mlp"),
    Workload("pneumonia", "service", PNEUMONIA_PREDICT, "xray", model="pneumonia-cnn"),
    Workload("pneumonia-full", "service", PNEUMONIA_PREDICT, "xray-full", model="pneumonia-cnn"),
    Workload("pneumonia-16", "service", PNEUMONIA_PREDICT, "xray16", model="pneumonia-cnn"),
)


@dataclass(frozen=True)
class ServiceVariant:
    """The service as users run it, optionally with extra environment or another tree.

    Given on the command line as `NAME` or `NAME:KEY=VALUE,KEY=VALUE`; the key `cwd`
    runs `python -m app` from another folder (a copy of the code before a change),
    every other key is an environment variable such as VISION_SERVING_MAX_BATCH_WAIT_MS.
    """

    name: str
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None

    @classmethod
    def parse(cls, text: str) -> ServiceVariant:
        name, _, rest = text.partition(":")
        env: dict[str, str] = {}
        cwd = None
        for item in filter(None, rest.split(",")):
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"variant setting {item!r} is not KEY=VALUE")
            if key == "cwd":
                cwd = value
            else:
                env[key] = value
        if not name:
            raise ValueError(f"variant {text!r} has no name")
        return cls(name=name, env=env, cwd=cwd)


def declared_workers(env: Mapping[str, str]) -> int | None:
    """The serving processes an environment asks `python -m app` for, if it says."""
    value = env.get(WORKERS_ENV, "").strip()
    try:
        return int(value) if value else None
    except ValueError:
        return None


def service_spec(variant: ServiceVariant, model_dir: Path) -> ServerSpec:
    return ServerSpec(
        name=variant.name,
        module_args=("app", "--port", "{port}", "--model-dir", str(model_dir.resolve())),
        ready_path="/readyz",
        env=variant.env,
        cwd=variant.cwd,
    )


def baseline_specs(model_dir: Path) -> dict[str, ServerSpec]:
    keras_model = (model_dir / "mnist-mlp").resolve()
    latest = max((p for p in keras_model.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    return {
        "ceiling": ServerSpec("ceiling", ("bench.ceiling_app", "--port", "{port}"), "/healthz"),
        "naive": ServerSpec(
            "naive",
            ("bench.naive_app", "--port", "{port}", "--model", str(latest / "model.keras")),
            "/healthz",
        ),
    }


def latest_version_dir(model_dir: Path, name: str) -> Path | None:
    folder = model_dir / name
    if not folder.is_dir():
        return None
    versions = [p for p in folder.iterdir() if p.name.isdigit() and (p / "saved_model.pb").exists()]
    return max(versions, key=lambda p: int(p.name)) if versions else None
