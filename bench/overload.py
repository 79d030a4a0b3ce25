"""Load past capacity: accepted requests stay fast, the rest get a quick 503.

    .venv/bin/python -m bench.overload [--data ../shared/data] [--seconds 20]

Starts `python -m app` with a small admission bound (`VISION_SERVING_MAX_QUEUED_IMAGES`)
and drives each workload with far more concurrent clients than the bound admits, from
an asyncio client on raw keep-alive connections (one request in flight per connection,
a new request as soon as the answer arrives). Every answer is timed and sorted by
status, so the latency of the accepted (200) requests is reported apart from that of
the refused (503) ones. Prints a table and writes `bench/results/overload-<time>.json`.

What is expected, and checked at the end (exit status 1 if not):
- no status other than 200 and 503 (no 5xx but the admission 503s, no socket errors);
- every 503 carries `Retry-After`;
- the accepted requests' p99 latency stays under the bound the admission limit implies:
  `limit / measured images per second` of queue, plus one batch's service time, with a
  2x margin for the shared machine (the number is printed beside the figure).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.payloads import Payload, build_payloads
from bench.servers import REPO_ROOT, ServerSpec, running

RESULTS_DIR = REPO_ROOT / "bench" / "results"


@dataclass(frozen=True)
class Workload:
    name: str
    payload: str  # a bench.payloads body name
    model: str
    connections: int


WORKLOADS = (
    Workload("mnist x1", "digit", "mnist-mlp", 256),
    Workload("pneumonia x16", "xray16", "pneumonia-cnn", 64),
)


@dataclass
class Outcome:
    """What one workload's answers were, by status."""

    statuses: Counter[str] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    missing_retry_after: int = 0

    def record(self, status: str, seconds: float) -> None:
        self.statuses[status] += 1
        self.latencies.setdefault(status, []).append(seconds)


async def _client(host: str, port: int, request: bytes, deadline: float, outcome: Outcome) -> None:
    """One keep-alive connection sending `request` back to back until `deadline`.

    Any failure (refused or reset connection, timeout, a malformed answer) is recorded
    as a socket error and the connection is replaced, so one bad answer never ends the run.
    """
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        try:
            if connection is None:
                connection = await asyncio.open_connection(host, port)
            reader, writer = connection
            writer.write(request)
            async with asyncio.timeout(60):  # not wait_for, which can swallow a cancel
                status, headers = await _read_response(reader)
        except (
            OSError,
            TimeoutError,
            ValueError,
            IndexError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ) as error:
            outcome.record(f"socket error ({type(error).__name__})", time.perf_counter() - started)
            _close(connection)
            connection = None
            continue
        outcome.record(status, time.perf_counter() - started)
        if status == "503" and b"retry-after" not in headers:
            outcome.missing_retry_after += 1
        if b"connection: close" in headers:
            _close(connection)
            connection = None
    _close(connection)


def _close(connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None) -> None:
    if connection is not None:
        connection[1].close()


async def _read_response(reader: asyncio.StreamReader) -> tuple[str, bytes]:
    """Status and lower-cased head of one answer; the service always sends Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = head.split(b" ", 2)[1].decode()
    headers = head.lower()
    lengths = [line for line in headers.split(b"\r\n") if line.startswith(b"content-length:")]
    if not lengths:
        raise ValueError("answer without Content-Length")
    await reader.readexactly(int(lengths[0].split(b":", 1)[1]))
    return status, headers


def _http_request(payload: Payload, path: str, port: int) -> bytes:
    body = payload.path.read_bytes()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: {payload.content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def summarise(
    workload: Workload, payload: Payload, outcome: Outcome, seconds: float, limit: int
) -> dict[str, object]:
    accepted = outcome.latencies.get("200", [])
    refused = outcome.latencies.get("503", [])
    images_per_second = len(accepted) * payload.images / seconds
    # Admitted work queues at most `limit` images, drained at the measured rate; one
    # batch's service time comes on top (the batch a request just missed).
    queue_bound = limit / images_per_second if images_per_second else float("inf")
    latency_bound = 2 * (queue_bound + payload.images / images_per_second) if accepted else 0.0
    return {
        "workload": workload.name,
        "connections": workload.connections,
        "seconds": round(seconds, 1),
        "statuses": dict(outcome.statuses),
        "accepted_per_second": round(len(accepted) / seconds, 1),
        "images_per_second": round(images_per_second, 1),
        "accepted_ms": _latency_summary(accepted),
        "refused_ms": _latency_summary(refused),
        "missing_retry_after": outcome.missing_retry_after,
        "accepted_p99_bound_ms": round(latency_bound * 1000, 1),
    }


def _latency_summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "p50": round(statistics.median(values) * 1000, 1),
        "p90": round(_percentile(values, 0.90) * 1000, 1),
        "p99": round(_percentile(values, 0.99) * 1000, 1),
        "max": round(max(values) * 1000, 1),
    }


def failures(result: dict[str, object]) -> list[str]:
    problems = []
    statuses = result["statuses"]
    assert isinstance(statuses, dict)
    unexpected = {status: n for status, n in statuses.items() if status not in {"200", "503"}}
    if unexpected:
        problems.append(f"statuses other than 200 and 503: {unexpected}")
    if "503" not in statuses:
        problems.append("no 503 at all: the load did not pass capacity")
    if result["missing_retry_after"]:
        problems.append(f"{result['missing_retry_after']} 503s without Retry-After")
    accepted = result["accepted_ms"]
    assert isinstance(accepted, dict)
    bound = result["accepted_p99_bound_ms"]
    assert isinstance(bound, float)
    if not accepted:
        problems.append("no request was accepted")
    elif accepted["p99"] > bound:
        problems.append(f"accepted p99 {accepted['p99']} ms is over the bound {bound} ms")
    return [f"{result['workload']}: {problem}" for problem in problems]


async def drive(url: str, request: bytes, connections: int, seconds: float) -> Outcome:
    host, port = url.removeprefix("http://").split(":")
    outcome = Outcome()
    deadline = time.perf_counter() + seconds
    await asyncio.gather(
        *(_client(host, int(port), request, deadline, outcome) for _ in range(connections))
    )
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--seconds", type=float, default=20.0, help="per workload")
    parser.add_argument(
        "--max-queued-images", type=int, default=64, help="the admission bound under test"
    )
    args = parser.parse_args()

    payloads = build_payloads(args.data, RESULTS_DIR / "payloads")
    spec = ServerSpec(
        name="service",
        module_args=("app", "--model-dir", "models", "--port", "{port}", "--log-level", "warning"),
        ready_path="/readyz",
        env={"VISION_SERVING_MAX_QUEUED_IMAGES": str(args.max_queued_images)},
    )
    results = []
    with running(spec, RESULTS_DIR / "logs") as server:
        port = int(server.url.rsplit(":", 1)[1])
        for workload in WORKLOADS:
            payload = payloads[workload.payload]
            request = _http_request(payload, f"/api/v1/models/{workload.model}/predict", port)
            started = time.perf_counter()
            outcome = asyncio.run(drive(server.url, request, workload.connections, args.seconds))
            elapsed = time.perf_counter() - started
            results.append(summarise(workload, payload, outcome, elapsed, args.max_queued_images))

    print(f"admission bound: {args.max_queued_images} queued images per model")
    print(
        f"{'workload':<15}{'conn':>5}{'200/s':>8}{'img/s':>8}{'200s':>7}{'503s':>7}{'other':>6}"
        f"{'200 p50':>9}{'p99':>8}{'max':>8}{'bound':>8}{'503 p50':>9}{'p99':>8}"
    )
    for r in results:
        statuses, ok, no = r["statuses"], r["accepted_ms"], r["refused_ms"]
        assert isinstance(statuses, dict) and isinstance(ok, dict) and isinstance(no, dict)
        other = sum(n for s, n in statuses.items() if s not in {"200", "503"})
        print(
            f"{r['workload']:<15}{r['connections']:>5}{r['accepted_per_second']:>8}"
            f"{r['images_per_second']:>8}{statuses.get('200', 0):>7}{statuses.get('503', 0):>7}"
            f"{other:>6}{ok.get('p50', '-'):>9}{ok.get('p99', '-'):>8}{ok.get('max', '-'):>8}"
            f"{r['accepted_p99_bound_ms']:>8}{no.get('p50', '-'):>9}{no.get('p99', '-'):>8}"
        )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"overload-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"max_queued_images": args.max_queued_images, "results": results}))
    print(f"written {out}")
    problems = [problem for r in results for problem in failures(r)]
    for problem in problems:
        print("FAIL", problem)
    raise SystemExit(1 if problems else 0)


if __name__ == "__main__":
    main()
