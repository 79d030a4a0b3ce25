"""Prometheus metrics: requests, latency by stage, batch sizes, loaded models.

Every app gets its own registry (no module-level collectors), so tests and several apps
in one process never share counts. The middleware labels each request with its API
family and status; the data plane fills in the model and version it resolved through a
per-request context variable, so no route has to know about metrics.

Every answer on a model URL (`/api/v1/models/{name}/...`, `/v1/models/{name}...`,
`/v2/models/{name}/...`) is counted under the model it names, 4xx and 503 included,
whichever layer answered (route, early admission, body limit, API key).
URLs are chosen by clients, so labels are bounded by what is on disk: a name the
repository does not know is counted as `model="_unknown"` (never a model name: those
are kebab-case), and `version` is the one the data plane resolved, else the URL's if
the repository knows that version of that model, else "". Other requests of an API
family (the model list, server metadata) have `model=""`.

Families (all prefixed `vision_serving_`):
- `requests_total{model, version, api, status}`            counter
- `request_duration_seconds{api}`                          histogram, whole request
- `stage_duration_seconds{model, stage}`                   histogram; stage is
                                                           preprocess, queue or inference;
                                                           queue is what the pods scale on
                                                           (below)
- `batch_size{model}`                                      histogram, images per model call
- `unreadable_files_total{model, code}`                    counter, files of answered
                                                           requests that could not be read
- `model_versions_loaded{model}`                           gauge, versions serving
- `requests_in_flight{model}`                              gauge, requests being served
- `model_version_info{model, version, state, device}`      gauge (1), every known version
- `model_runtime_info{model, version, runtime, source}`    gauge (1), every loaded version:
                                                           runtime litert or savedmodel;
                                                           source export, converted at
                                                           load, or "" (the status APIs
                                                           say why)
- `model_load_failures_total{model}`                       counter
- `payload_log_dropped_total{reason}`                      counter, records the payload
                                                           log dropped, and inputs it did
                                                           not store (`app.payload_log`)

Recent predictions of each loaded version (`app.drift`; absent when
`VISION_SERVING_DRIFT_WINDOW` is 0), summarised at scrape time:
- `prediction_window_size{model, version}`                 gauge, predictions in the window
- `prediction_class_share{model, version, class}`          gauge, share predicted as class
- `prediction_mean_confidence{model, version}`             gauge, mean top-1 probability
- `prediction_mean_entropy{model, version}`                gauge, in nats
- `prediction_low_confidence_share{model, version}`        gauge, below the card's threshold
- `prediction_no_digit_share{model, version}`              gauge, digit models only
- `prediction_drift_score{model, version, kind}`           gauge, > 1 means drift; kind
                                                           confidence, class_mix or
                                                           combined; from 100 predictions,
                                                           for cards with a profile
- `prediction_non_finite_total{model, version}`            counter, predictions left out
                                                           of the window for NaN or
                                                           infinite probabilities
A version whose window cannot be summarised is left out of a scrape (logged once), so
one bad version never takes down /metrics and the queue-time figure the pods scale on.

Autoscaling: the queue stage's `_sum` over its `_count`, as rates over a minute, is the
average time a request waited for its model call to start (0 for a batch run inline);
prometheus-adapter serves its largest value over a pod's models as the per-pod metric
the HorizontalPodAutoscaler scales on (deploy/prometheus-adapter/values.yaml,
docs/deployment.md). The histogram costs nothing more for it.

With several worker processes (`VISION_SERVING_WORKERS`), requests, latencies and batch
sizes are summed over all of them, and the model and prediction families carry a
`worker` label (the process id) because each process loads its own copy and keeps its
own windows.
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.drift import PredictionMonitor
from app.repository import ModelRepository, ModelState

PREFIX = "vision_serving"

logger = logging.getLogger(__name__)
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
UNKNOWN_MODEL = "_unknown"
"""The `model` label of requests naming a model the repository does not know."""

# A model URL of any API family, with its pinned version if any.
_MODEL_URL = re.compile(
    r"/(?:api/v1|v1|v2)/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[1-9][0-9]{0,8})\b)?"
)


@dataclass
class RequestLabels:
    """What the request was about, filled in as it is served."""

    model: str = ""
    version: str = ""


_current_request: contextvars.ContextVar[RequestLabels | None] = contextvars.ContextVar(
    "vision_serving_request", default=None
)


def label_request(model: str, version: int) -> None:
    """Record which model version serves the current request (no-op outside a request)."""
    labels = _current_request.get()
    if labels is not None:
        labels.model, labels.version = model, str(version)


def api_family(path: str) -> str:
    if path.startswith("/api/v1/"):
        return "native"
    if path.startswith("/v1/"):
        return "tfserving"
    if path == "/v2" or path.startswith("/v2/"):
        return "v2"
    return "other"


@dataclass
class ServingMetrics:
    """The service's metric families, in a registry of their own."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    multiprocess_dir: str | None = None
    """Set when several serving processes share one port (`VISION_SERVING_WORKERS` > 1):
    prometheus_client then keeps counters and histograms in files there, and a scrape of
    any process reports the sum over all of them."""

    def __post_init__(self) -> None:
        self._repository_collectors: list[Collector] = []
        self._repository: ModelRepository | None = None
        self.requests = Counter(
            f"{PREFIX}_requests",
            "Requests served, by model, version, API family and HTTP status",
            ["model", "version", "api", "status"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "Whole-request latency, by API family",
            ["api"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stage_duration = Histogram(
            f"{PREFIX}_stage_duration_seconds",
            "Latency of one stage of a request: preprocess, queue (waiting for a batch) "
            "or inference (the model call of its batch)",
            ["model", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            f"{PREFIX}_batch_size",
            "Images per model call",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        # A request with one bad file among good ones is answered 200 with an `errors`
        # list, so its bad files would not show in the status counts.
        self.unreadable_files = Counter(
            f"{PREFIX}_unreadable_files",
            "Files that could not be read (not an image, corrupt, too large), by error code, "
            "including those in requests whose other files were answered",
            ["model", "code"],
            registry=self.registry,
        )
        self.payload_log_dropped = Counter(
            f"{PREFIX}_payload_log_dropped",
            "Payload log records dropped (queue_full, write_error, record_error, shutdown), "
            "and inputs not stored (inputs_full, inputs_write_error); requests are answered "
            "either way",
            ["reason"],
            registry=self.registry,
        )

    def watch_repository(self, repository: ModelRepository) -> None:
        """Export the repository's loaded versions and load failures at scrape time."""
        # Several processes each answer scrapes; their own gauges and counters carry the
        # process id, or a scrape of another process would look like a counter reset.
        worker = str(os.getpid()) if self.multiprocess_dir is not None else None
        collector = _RepositoryCollector(repository, worker)
        self._repository_collectors.append(collector)
        self.registry.register(collector)
        self._repository = repository

    def watch_predictions(self, repository: ModelRepository, monitor: PredictionMonitor) -> None:
        """Export the recent predictions of every loaded version at scrape time."""
        worker = str(os.getpid()) if self.multiprocess_dir is not None else None
        collector = _PredictionCollector(repository, monitor, worker)
        self._repository_collectors.append(collector)
        self.registry.register(collector)

    def labels_from_url(self, path: str) -> tuple[str, str]:
        """`(model, version)` labels of a request the data plane did not label itself."""
        match = _MODEL_URL.match(path)
        if match is None:
            return "", ""
        name, version = match["name"], match["version"]
        repository = self._repository
        if repository is None or not repository.knows(name):
            return UNKNOWN_MODEL, ""
        if version is None or not repository.knows_version(name, int(version)):
            return name, ""
        return name, version

    def observe_stage(self, model: str, stage: str, seconds: float) -> None:
        self.stage_duration.labels(model, stage).observe(seconds)

    def count_unreadable_file(self, model: str, code: str) -> None:
        self.unreadable_files.labels(model, code).inc()

    def watch_payload_log(self, drop_reasons: Sequence[str]) -> None:
        """Show each reason of `payload_log_dropped_total` from 0, before any drop."""
        for reason in drop_reasons:
            self.payload_log_dropped.labels(reason)

    def count_payload_log_drop(self, reason: str) -> None:
        """Thread-safe: the payload log's writer thread counts its own drops."""
        self.payload_log_dropped.labels(reason).inc()

    def batch_observer(self, model: str) -> BatchMetrics:
        return BatchMetrics(self, model)

    def exposition(self) -> tuple[bytes, str]:
        if self.multiprocess_dir is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        # Request counts and latencies summed over every process; the model gauges are
        # this process's (every process serves the same model folder).
        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined, path=self.multiprocess_dir)
        for collector in self._repository_collectors:
            combined.register(collector)
        return generate_latest(combined), CONTENT_TYPE_LATEST


@dataclass(frozen=True)
class BatchMetrics:
    """Receives each batch's figures from a model's micro-batcher."""

    metrics: ServingMetrics
    model: str

    def observe_batch(
        self, size: int, queue_seconds: Sequence[float], inference_seconds: float
    ) -> None:
        self.metrics.batch_size.labels(self.model).observe(size)
        queue = self.metrics.stage_duration.labels(self.model, "queue")
        for waited in queue_seconds:
            queue.observe(waited)
        self.metrics.stage_duration.labels(self.model, "inference").observe(inference_seconds)


class _RepositoryCollector(Collector):
    def __init__(self, repository: ModelRepository, worker: str | None = None) -> None:
        self.repository = repository
        self.extra_labels = ["worker"] if worker is not None else []
        self.extra_values = [worker] if worker is not None else []

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        extra, values = self.extra_labels, self.extra_values
        loaded = GaugeMetricFamily(
            f"{PREFIX}_model_versions_loaded",
            "Versions of each model serving",
            labels=["model", *extra],
        )
        info = GaugeMetricFamily(
            f"{PREFIX}_model_version_info",
            "Every known model version (value 1), with its state and device",
            labels=["model", "version", "state", "device", *extra],
        )
        runtimes = GaugeMetricFamily(
            f"{PREFIX}_model_runtime_info",
            "What runs each loaded model version (value 1): litert or savedmodel, and where "
            "the LiteRT model came from (export, converted at load)",
            labels=["model", "version", "runtime", "source", *extra],
        )
        in_flight = GaugeMetricFamily(
            f"{PREFIX}_requests_in_flight",
            "Requests being served by each model (decoding, queued or running)",
            labels=["model", *extra],
        )
        for name in self.repository.names():
            versions = self.repository.versions(name)
            ready = sum(v.state is ModelState.READY for v in versions)
            loaded.add_metric([name, *values], ready)
            in_flight.add_metric([name, *values], sum(v.in_flight for v in versions))
            for v in versions:
                device = v.device.kind if v.device else ""
                info.add_metric([name, str(v.version), str(v.state), device, *values], 1)
                if (runtime := v.runtime_info) is not None:
                    source = runtime.litert_source or ""
                    runtimes.add_metric([name, str(v.version), runtime.name, source, *values], 1)
        failures = CounterMetricFamily(
            f"{PREFIX}_model_load_failures",
            "Failed model version loads",
            labels=["model", *extra],
        )
        for name, count in sorted(self.repository.load_failures.items()):
            failures.add_metric([name, *values], count)
        yield loaded
        yield in_flight
        yield info
        yield runtimes
        yield failures


class _PredictionCollector(Collector):
    """Each loaded version's prediction window, summarised and scored when scraped."""

    def __init__(
        self, repository: ModelRepository, monitor: PredictionMonitor, worker: str | None
    ) -> None:
        self.repository = repository
        self.monitor = monitor
        self.extra_labels = ["worker"] if worker is not None else []
        self.extra_values = [worker] if worker is not None else []
        self._failed: set[tuple[str, int]] = set()  # versions whose failure was logged

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        worker_label, worker = self.extra_labels, self.extra_values

        def gauge(name: str, documentation: str, *more_labels: str) -> GaugeMetricFamily:
            labels = ["model", "version", *more_labels, *worker_label]
            return GaugeMetricFamily(f"{PREFIX}_prediction_{name}", documentation, labels=labels)

        size = gauge("window_size", "Predictions in the version's window of recent ones")
        shares = gauge("class_share", "Share of the window's predictions of each class", "class")
        confidence = gauge("mean_confidence", "Mean top-1 probability of the window")
        entropy = gauge("mean_entropy", "Mean entropy of the window's probabilities, in nats")
        low = gauge(
            "low_confidence_share",
            "Share of the window below the card's low-confidence threshold (by default halfway "
            "between chance and 1)",
        )
        no_digit = gauge(
            "no_digit_share", "Share of the window's pictures where no digit was found"
        )
        drift = gauge(
            "drift_score",
            "Drift of the window from the model card's prediction profile, in units of a "
            "significant shift (PSI 0.25): above 1 means drift. kind: confidence (histogram "
            "of the top-1 probability), class_mix, combined (the larger)",
            "kind",
        )
        non_finite = CounterMetricFamily(
            f"{PREFIX}_prediction_non_finite",
            "Predictions left out of the version's window because their probabilities held "
            "NaN or infinite values",
            labels=["model", "version", *worker_label],
        )
        for name in self.repository.names():
            for entry in self.repository.versions(name):
                if entry.state is not ModelState.READY:
                    continue
                try:
                    recent = self.monitor.recent(entry)
                except Exception:  # one version's bad window must not fail the whole scrape
                    self._log_failure_once(name, entry.version)
                    continue
                self._failed.discard((name, entry.version))  # a later failure is news again
                if recent is None:
                    continue
                model = [name, str(entry.version)]
                size.add_metric([*model, *worker], recent.count)
                non_finite.add_metric([*model, *worker], recent.non_finite_skipped)
                window = recent.window
                if window is None:
                    continue
                for label, share in window.class_mix.items():
                    shares.add_metric([*model, label, *worker], share)
                confidence.add_metric([*model, *worker], window.mean_confidence)
                entropy.add_metric([*model, *worker], window.mean_entropy)
                low.add_metric([*model, *worker], window.low_confidence_share)
                if window.no_digit_share is not None:
                    no_digit.add_metric([*model, *worker], window.no_digit_share)
                if recent.scores is not None:
                    for kind, score in recent.scores.normalized().items():
                        drift.add_metric([*model, kind, *worker], score)
        yield from (size, shares, confidence, entropy, low, no_digit, drift, non_finite)

    def _log_failure_once(self, name: str, version: int) -> None:
        """Log why a version's window could not be summarised, once per run of failed
        scrapes: a scrape every 15 s would repeat the same traceback."""
        if (name, version) in self._failed:
            return
        self._failed.add((name, version))
        logger.exception(
            "the recent predictions of %s v%d cannot be summarised; the version is left "
            "out of the prediction metrics",
            name,
            version,
        )


class RequestMetricsMiddleware:
    """Counts and times every HTTP request, labelled by the model version the data plane
    resolved, or else by the model its URL names (see the module docstring)."""

    def __init__(self, app: ASGIApp, metrics: ServingMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = api_family(scope["path"])
        if api == "other":  # docs, health, metrics: not worth a series each
            await self.app(scope, receive, send)
            return
        labels = RequestLabels()
        token = _current_request.set(labels)
        status = 500
        started = time.perf_counter()

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            _current_request.reset(token)
            self.metrics.request_duration.labels(api).observe(time.perf_counter() - started)
            model, version = labels.model, labels.version
            if not model:  # refused before the data plane resolved a model
                model, version = self.metrics.labels_from_url(scope["path"])
            self.metrics.requests.labels(model, version, api, str(status)).inc()
