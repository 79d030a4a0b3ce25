"""Run the benchmark: rounds of every server in turn, the raw model, the spread, long runs.

Servers are measured A B C, A B C, ... (each round starts each server afresh), so a
change in the machine's load during the run hits every server alike and the ratios
taken within a round cancel it. Then, optionally, back-to-back points at 16 connections
per server (how much one figure can be trusted), and a long run per service variant for
memory. Everything started here is stopped here.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.payloads import Payload, build_payloads
from bench.plan import (
    BASELINE_WORKLOADS,
    MNIST_PREDICT,
    PNEUMONIA_PREDICT,
    SERVICE_WORKLOADS,
    ServiceVariant,
    Workload,
    baseline_specs,
    declared_workers,
    latest_version_dir,
    service_spec,
)
from bench.procstat import MIB, TreeSampler, process_tree
from bench.raw_model import RUNTIMES, combine_runtimes
from bench.servers import REPO_ROOT, RunningServer, ServerSpec, running
from bench.wrk import Target, ensure_wrk, run_wrk

RAW_MODELS = ("pneumonia-cnn", "mnist-mlp")
SPREAD_CONNECTIONS = 16


@dataclass
class Options:
    model_dir: Path
    data_dir: Path
    out_dir: Path
    rounds: int = 3
    seconds: float = 10.0
    warmup_seconds: float = 2.0
    concurrency: tuple[int, ...] = (1, 16, 64)
    variants: list[ServiceVariant] = field(default_factory=lambda: [ServiceVariant("service")])
    servers: tuple[str, ...] = ("ceiling", "naive", "service")
    workloads: tuple[str, ...] = ()  # empty: all
    raw_seconds_per_size: float = 3.0
    raw_batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    raw_models: bool = True
    raw_threads: tuple[int, ...] = (1, 2)  # LiteRT num_threads values tried
    spread_points: int = 0  # back-to-back points per server at 16 connections (0: skip)
    spread_seconds: float = 5.0
    long_requests: int = 100_000
    long_connections: int = 64


def _loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO_ROOT
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "app"], capture_output=True, text=True, cwd=REPO_ROOT
        )
        return out.stdout.strip() + ("+dirty app/" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


_WORKERS_QUERY = "from app.settings import Settings; print(Settings().workers)"


def resolve_workers(variant: ServiceVariant) -> tuple[int, str]:
    """How many serving processes `variant` runs, and where that figure comes from.

    Asked of the variant's own settings code, in its folder and with the environment its
    server gets (this process's, then the variant's), so a changed default or an
    exported VISION_SERVING_WORKERS counts too. Falls back on the environment alone,
    then on 1, when that code has no such setting.
    """
    env = {**os.environ, **variant.env}
    try:
        completed = subprocess.run(
            [sys.executable, "-c", _WORKERS_QUERY],
            capture_output=True,
            text=True,
            cwd=variant.cwd or REPO_ROOT,
            env=env,
            timeout=120,
        )
        if completed.returncode == 0:
            return int(completed.stdout.strip().splitlines()[-1]), "the variant's Settings"
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        pass
    declared = declared_workers(env)
    if declared is not None:
        return declared, "the environment"
    return 1, "assumed (no workers setting found)"


class Runner:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.stamp = time.strftime("%Y%m%d-%H%M%S")
        self.log_dir = options.out_dir / f"{self.stamp}-logs"
        self.payloads: dict[str, Payload] = {}
        self.measurements: list[dict[str, Any]] = []
        self.starts: list[dict[str, Any]] = []
        self.raw: list[dict[str, Any]] = []
        self.spread: list[dict[str, Any]] = []
        self.available_models = {
            name for name in RAW_MODELS if latest_version_dir(options.model_dir, name)
        }
        self.workers: dict[str, tuple[int, str]] = {}

    # The plan ------------------------------------------------------------------------

    def _servers(self) -> list[tuple[ServerSpec, list[Workload]]]:
        wanted = self.options.servers
        baselines = baseline_specs(self.options.model_dir)
        plan: list[tuple[ServerSpec, list[Workload]]] = []
        for workload in BASELINE_WORKLOADS:
            if workload.server in wanted and self._wanted(workload):
                plan.append((baselines[workload.server], [workload]))
        if "service" in wanted:
            workloads = [w for w in SERVICE_WORKLOADS if self._wanted(w)]
            for variant in self.options.variants:
                plan.append((service_spec(variant, self.options.model_dir), workloads))
        return plan

    def _wanted(self, workload: Workload) -> bool:
        if workload.model and workload.model not in self.available_models:
            return False
        return (
            not self.options.workloads
            or workload.name in self.options.workloads
            or (workload.server in ("ceiling", "naive"))
        )

    # Running -------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        ensure_wrk()
        options = self.options
        missing = set(RAW_MODELS) - self.available_models
        if missing:
            _log(f"not in {options.model_dir} (skipped): {', '.join(sorted(missing))}")
        self.payloads = build_payloads(options.data_dir, options.out_dir / "bodies")
        if "service" in options.servers:
            for variant in options.variants:
                self.workers[variant.name] = resolve_workers(variant)
                count, source = self.workers[variant.name]
                _log(f"{variant.name}: {count} serving process(es) (from {source})")
        started = time.time()
        load_before = _loadavg()
        for round_index in range(options.rounds):
            _log(f"round {round_index + 1} of {options.rounds} (load average {_loadavg():.2f})")
            for spec, workloads in self._servers():
                self._measure_server(round_index, spec, workloads)
            if options.raw_models and "service" in options.servers:
                self._measure_raw_models(round_index)
        if options.spread_points > 0:
            self._measure_spread()
        long_runs = []
        if options.long_requests > 0 and "service" in options.servers:
            long_runs = [self._long_run(variant) for variant in options.variants]
        return {
            "meta": {
                "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
                "seconds": round(time.time() - started, 1),
                "commit": _git_commit(),
                "python": sys.version.split()[0],
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "load_average_before": load_before,
                "load_average_after": _loadavg(),
                "options": {
                    "rounds": options.rounds,
                    "seconds": options.seconds,
                    "warmup_seconds": options.warmup_seconds,
                    "concurrency": list(options.concurrency),
                    "variants": [
                        {
                            **asdict(v),
                            "workers": self.workers.get(v.name, (None, ""))[0],
                            "workers_from": self.workers.get(v.name, (None, ""))[1],
                        }
                        for v in options.variants
                    ],
                    "raw_threads": list(options.raw_threads),
                    "spread_points": options.spread_points,
                    "spread_seconds": options.spread_seconds,
                    "spread_connections": SPREAD_CONNECTIONS,
                    "long_requests": options.long_requests,
                    "model_dir": str(options.model_dir),
                },
                "payloads": {
                    name: {
                        "description": p.description,
                        "images": p.images,
                        "image_bytes": p.image_bytes,
                        "body_bytes": p.path.stat().st_size,
                    }
                    for name, p in self.payloads.items()
                },
            },
            "measurements": self.measurements,
            "starts": self.starts,
            "raw_models": self.raw,
            "spread": self.spread,
            "long_runs": long_runs,
            "training": training_figures(options.model_dir),
        }

    def _measure_server(
        self, round_index: int, spec: ServerSpec, workloads: list[Workload]
    ) -> None:
        with running(spec, self.log_dir) as server:
            ready_rss = TreeSampler(server.pid).sample(time.monotonic()).rss_bytes
            processes = len(process_tree(server.pid))
            ready = f"ready in {server.ready_seconds:.1f} s, RSS {ready_rss / MIB:.0f} MiB"
            _log(f"  {spec.name}: {ready}, {processes} process(es)")
            for workload in workloads:
                self._measure_workload(round_index, server, workload)
            end_rss = TreeSampler(server.pid).sample(time.monotonic()).rss_bytes
        self.starts.append(
            {
                "round": round_index,
                "server": spec.name,
                "ready_seconds": server.ready_seconds,
                "rss_ready_mib": ready_rss / MIB,
                "rss_end_mib": end_rss / MIB,
                "processes_at_ready": processes,
            }
        )

    def _measure_workload(
        self, round_index: int, server: RunningServer, workload: Workload
    ) -> None:
        options = self.options
        payload = self.payloads[workload.payload]
        target = Target.single(workload.path, payload)
        if options.warmup_seconds > 0:
            run_wrk(server.url, target, connections=16, seconds=options.warmup_seconds)
        for connections in options.concurrency:
            record = self._point(server, target, payload, connections, options.seconds)
            self.measurements.append(
                {"round": round_index, "server": server.spec.name, "workload": workload.name}
                | record
            )
            self._log_point(workload.name, record)

    def _point(
        self,
        server: RunningServer,
        target: Target,
        payload: Payload,
        connections: int,
        seconds: float,
    ) -> dict[str, Any]:
        """One wrk run against `server`, with the server's CPU and memory sampled."""
        load = _loadavg()
        with TreeSampler(server.pid, interval=0.5) as sampler:
            result = run_wrk(server.url, target, connections=connections, seconds=seconds)
        return {
            "connections": connections,
            "images_per_request": payload.images,
            "requests": result.requests,
            "seconds": result.seconds,
            "requests_per_second": result.requests_per_second,
            "images_per_second": result.requests_per_second * payload.images,
            "latency_ms": result.latency_ms,
            "errors": result.errors,
            "cpu_cores": sampler.cpu_cores,
            "rss_peak_mib": sampler.peak_rss_bytes / MIB,
            "load_average": load,
        }

    @staticmethod
    def _log_point(label: str, record: dict[str, Any]) -> None:
        latency = record["latency_ms"]
        _log(
            f"    {label:15s} c={record['connections']:<3d} "
            f"{record['requests_per_second']:8.1f} req/s  p50 {latency['p50']:8.2f} ms  "
            f"p99 {latency['p99']:8.2f} ms  errors {sum(record['errors'].values())}  "
            f"cpu {record['cpu_cores']:.2f}"
        )

    def _measure_raw_models(self, round_index: int) -> None:
        """Each model's raw throughput with every runtime, one process per runtime."""
        for name in RAW_MODELS:
            version_dir = latest_version_dir(self.options.model_dir, name)
            if version_dir is None:
                continue
            per_runtime, errors = [], {}
            for runtime in RUNTIMES:
                try:
                    per_runtime.append(self._raw_run(version_dir, runtime))
                except RuntimeError as error:  # one runtime failing must not end the run
                    errors[runtime] = str(error)[-2000:]
                    _log(f"  raw {name} {runtime}: FAILED, {str(error)[-300:]}")
            if not per_runtime:
                raise RuntimeError(f"raw model {name}: every runtime failed: {errors}")
            result = combine_runtimes(per_runtime, errors)
            result["round"] = round_index
            self.raw.append(result)
            for runtime, figures in result["runtimes"].items():
                threads = figures["best_num_threads"]
                _log(
                    f"  raw {name} {runtime}"
                    + (f" ({threads} thread(s))" if threads is not None else "")
                    + f": best {figures['best_images_per_second']:.0f} images/s "
                    f"at batch {figures['best_batch_size']}; {figures['source']}"
                )

    def _raw_run(self, version_dir: Path, runtime: str) -> dict[str, Any]:
        command = [
            sys.executable,
            "-m",
            "bench.raw_model",
            str(version_dir),
            "--runtime",
            runtime,
            "--threads",
            ",".join(map(str, self.options.raw_threads)),
            "--batch-sizes",
            ",".join(map(str, self.options.raw_batch_sizes)),
            "--seconds-per-size",
            str(self.options.raw_seconds_per_size),
        ]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        completed = subprocess.run(
            command, capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=1800
        )
        lines = [ln for ln in completed.stdout.splitlines() if ln.startswith("BENCH_JSON ")]
        if completed.returncode != 0 or not lines:
            raise RuntimeError(f"raw model run failed:\n{completed.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(lines[-1][len("BENCH_JSON ") :])
        return result

    def _measure_spread(self) -> None:
        """Back-to-back points at 16 connections per server: how far one figure wanders."""
        options = self.options
        plan: list[tuple[ServerSpec, Workload]] = []
        if "ceiling" in options.servers:
            ceiling = BASELINE_WORKLOADS[0]
            plan.append((baseline_specs(options.model_dir)["ceiling"], ceiling))
        mnist = next(w for w in SERVICE_WORKLOADS if w.name == "mnist")
        if "service" in options.servers and self._wanted(mnist):
            for variant in options.variants:
                plan.append((service_spec(variant, options.model_dir), mnist))
        _log(
            f"spread: {options.spread_points} back-to-back {options.spread_seconds:g} s points "
            f"at c={SPREAD_CONNECTIONS} per server"
        )
        for spec, workload in plan:
            payload = self.payloads[workload.payload]
            target = Target.single(workload.path, payload)
            with running(spec, self.log_dir) as server:
                _log(f"  {spec.name}: ready in {server.ready_seconds:.1f} s")
                if options.warmup_seconds > 0:
                    run_wrk(server.url, target, connections=16, seconds=options.warmup_seconds)
                points = []
                for _ in range(options.spread_points):
                    record = self._point(
                        server, target, payload, SPREAD_CONNECTIONS, options.spread_seconds
                    )
                    points.append(record)
                    self._log_point(workload.name, record)
            self.spread.append(
                {
                    "server": spec.name,
                    "workload": workload.name,
                    "connections": SPREAD_CONNECTIONS,
                    "seconds": options.spread_seconds,
                    "points": points,
                }
            )

    def _long_run(self, variant: ServiceVariant) -> dict[str, Any]:
        """Many requests at high concurrency, sampling RSS each second, for memory growth."""
        options = self.options
        parts: list[tuple[str, Payload]] = [(MNIST_PREDICT, self.payloads["digit"])] * 9
        if "pneumonia-cnn" in self.available_models:
            parts.append((PNEUMONIA_PREDICT, self.payloads["xray"]))
        target = Target(tuple(parts))
        _log(
            f"long run ({variant.name}): {options.long_requests:,} requests "
            f"at c={options.long_connections}"
        )
        with running(service_spec(variant, options.model_dir), self.log_dir) as server:
            processes = len(process_tree(server.pid))
            with TreeSampler(server.pid, interval=1.0) as sampler:
                result = run_wrk(
                    server.url,
                    target,
                    connections=options.long_connections,
                    seconds=3600,
                    limit=options.long_requests,
                )
            ready_seconds = server.ready_seconds
        samples = [(s.seconds, s.rss_bytes / MIB) for s in sampler.samples]
        _log(
            f"  {result.requests:,} requests in {result.seconds:.0f} s, "
            f"errors {result.error_count}, RSS {samples[0][1]:.0f} -> {samples[-1][1]:.0f} MiB"
        )
        self.starts.append(
            {
                "round": -1,
                "server": variant.name,
                "ready_seconds": ready_seconds,
                "rss_ready_mib": samples[0][1],
                "rss_end_mib": samples[-1][1],
                "processes_at_ready": processes,
            }
        )
        return {
            "server": variant.name,
            "mix": "9 mnist-mlp digits : 1 pneumonia-cnn X-ray, round-robin",
            "connections": options.long_connections,
            "requests": result.requests,
            "seconds": result.seconds,
            "requests_per_second": result.requests_per_second,
            "errors": result.errors,
            "latency_ms": result.latency_ms,
            "rss_samples_mib": samples,
        }


def training_figures(model_dir: Path) -> dict[str, Any]:
    """Epoch times recorded at training time, so a data-pipeline regression shows."""
    figures: dict[str, Any] = {}
    for name in RAW_MODELS:
        version_dir = latest_version_dir(model_dir, name)
        if version_dir is None:
            continue
        history_path = version_dir / "history.json"
        card = json.loads((version_dir / "model_card.json").read_text())
        epochs = []
        if history_path.exists():
            epochs = json.loads(history_path.read_text()).get("epoch_seconds", [])
        training = card.get("training", {})
        figures[name] = {
            "version": card.get("version"),
            "epochs_run": training.get("epochs_run", len(epochs)),
            "batch_size": training.get("batch_size"),
            "epoch_seconds_median": statistics.median(epochs) if epochs else None,
            "epoch_seconds_min": min(epochs) if epochs else None,
            "epoch_seconds": epochs,
            "duration_seconds": training.get("duration_seconds"),
        }
    return figures
