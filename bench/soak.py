"""Bounded soak: mixed load over every API family with hot reloads, RSS sampled.

    .venv/bin/python -m bench.soak --minutes 10 [--data ../shared/data] [--concurrency 8]

Starts `python -m app` on a private copy of the shipped models (rescanned every second),
drives a mix of native uploads, evaluations, TF Serving and V2 requests from a bounded
pool of clients on loopback, and every `--reload-every` seconds publishes the next
version of `mnist-mlp` (atomic rename, as training exports) and then removes the old
one. Prints and writes (bench/results/soak-<time>.json) requests served, errors by kind,
and the server's RSS over time. Every request must succeed: expect 0 errors.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
MNIST = "mnist-mlp"
XRAY = "pneumonia-cnn"


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def load_inputs(data: Path) -> tuple[list[tuple[bytes, int]], list[bytes]]:
    with np.load(data / "mnist.npz") as arrays:
        digits = [(png(arrays["x_test"][i]), int(arrays["y_test"][i])) for i in range(200)]
    xrays = [p.read_bytes() for p in sorted((data / "chest_xray" / "test").glob("*/*.jpeg"))[:40]]
    return digits, xrays


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Soak:
    def __init__(self, url: str, digits: list[tuple[bytes, int]], xrays: list[bytes]) -> None:
        self.url = url
        self.digits = digits
        self.xrays = xrays
        self.served: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.error_samples: list[str] = []
        self.rng = random.Random(7)

    def digit_zip(self) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for i, (data, label) in enumerate(self.rng.sample(self.digits, 20)):
                archive.writestr(f"{label}/{i}.png", data)
        return buffer.getvalue()

    async def one_request(self, client: httpx.AsyncClient) -> None:
        kind = self.rng.choice(
            ["predict", "predict", "probabilities", "xray", "evaluate", "models",
             "tfs_b64", "tfs_tensor", "v2_tensor", "v2_bytes", "metrics"]
        )  # fmt: skip
        data, _ = self.rng.choice(self.digits)
        if kind == "predict":
            files = [("files", (f"{i}.png", d, "image/png")) for i, (d, _) in
                     enumerate(self.rng.sample(self.digits, self.rng.randint(1, 8)))]  # fmt: skip
            response = await client.post(f"/api/v1/models/{MNIST}/predict", files=files)
        elif kind == "probabilities":
            response = await client.post(
                f"/api/v1/models/{MNIST}/probabilities", files={"files": ("d.png", data)}
            )
        elif kind == "xray":
            xray = self.rng.choice(self.xrays)
            response = await client.post(
                f"/api/v1/models/{XRAY}/predict", files={"files": ("x.jpeg", xray, "image/jpeg")}
            )
        elif kind == "evaluate":
            response = await client.post(
                f"/api/v1/models/{MNIST}/evaluate",
                files={"archive": ("d.zip", self.digit_zip(), "application/zip")},
            )
        elif kind == "models":
            response = await client.get("/api/v1/models")
        elif kind == "tfs_b64":
            body: dict[str, object] = {"instances": [{"b64": base64.b64encode(data).decode()}]}
            response = await client.post(f"/v1/models/{MNIST}:predict", json=body)
        elif kind == "tfs_tensor":
            pixels = np.asarray(Image.open(io.BytesIO(data)), dtype=float)[..., None]
            response = await client.post(
                f"/v1/models/{MNIST}:predict", json={"instances": [pixels.tolist()]}
            )
        elif kind == "v2_tensor":
            pixels = np.asarray(Image.open(io.BytesIO(data)), dtype=float)
            body = {"inputs": [{"name": "pixels", "shape": [1, 28, 28, 1], "datatype": "FP32",
                                "data": pixels.reshape(-1).tolist()}]}  # fmt: skip
            response = await client.post(f"/v2/models/{MNIST}/infer", json=body)
        elif kind == "v2_bytes":
            body = {"inputs": [{"name": "pixels", "shape": [1], "datatype": "BYTES",
                                "data": [base64.b64encode(data).decode()]}]}  # fmt: skip
            response = await client.post(f"/v2/models/{MNIST}/infer", json=body)
        else:
            response = await client.get("/metrics")
        if response.status_code == 200:
            self.served[kind] += 1
        else:
            self.errors[f"{kind} {response.status_code}"] += 1
            if len(self.error_samples) < 20:
                self.error_samples.append(f"{kind} {response.status_code} {response.text[:300]}")

    async def worker(self, client: httpx.AsyncClient, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                await self.one_request(client)
            except httpx.HTTPError as error:
                self.errors[f"transport {type(error).__name__}"] += 1


async def reload_versions(
    model_dir: Path, template: Path, every: float, deadline: float, log: list[str]
) -> None:
    """Publish version n+1 of mnist-mlp (atomic rename), then remove version n, repeatedly."""
    root = model_dir / MNIST
    version = 1
    while time.monotonic() + every < deadline:
        await asyncio.sleep(every / 2)
        staging = root / f".staging-{version + 1}"
        shutil.copytree(template, staging)
        card = json.loads((staging / "model_card.json").read_text())
        card["version"] = version + 1
        (staging / "model_card.json").write_text(json.dumps(card))
        staging.rename(root / str(version + 1))
        log.append(f"{time.strftime('%H:%M:%S')} published version {version + 1}")
        await asyncio.sleep(every / 2)
        shutil.rmtree(root / str(version))
        log.append(f"{time.strftime('%H:%M:%S')} removed version {version}")
        version += 1


async def sample_rss(pid: int, deadline: float, samples: list[tuple[float, float]]) -> None:
    started = time.monotonic()
    while time.monotonic() < deadline:
        samples.append((round(time.monotonic() - started, 1), round(rss_mib(pid), 1)))
        await asyncio.sleep(10)


def start_server(model_dir: Path, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log_file = (workdir / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "app", "--port", str(port), "--model-dir", str(model_dir),
         "--log-level", "warning"],
        cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT,
        env={**os.environ, "VISION_SERVING_POLL_INTERVAL_SECONDS": "1",
             "TF_CPP_MIN_LOG_LEVEL": "2"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(480):
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return server, url
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    server.kill()
    raise SystemExit(f"server did not become ready; see {workdir / 'server.log'}")


async def drive(
    args: argparse.Namespace, url: str, pid: int, model_dir: Path, template: Path
) -> dict[str, object]:
    digits, xrays = load_inputs(args.data)
    soak = Soak(url, digits, xrays)
    deadline = time.monotonic() + args.minutes * 60
    rss: list[tuple[float, float]] = []
    reloads: list[str] = []
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        await asyncio.gather(
            sample_rss(pid, deadline, rss),
            reload_versions(model_dir, template, args.reload_every, deadline, reloads),
            *(soak.worker(client, deadline) for _ in range(args.concurrency)),
        )
        elapsed = time.monotonic() - started
        rss.append((round(elapsed, 1), round(rss_mib(pid), 1)))
        final_status = (await client.get(f"/api/v1/models/{MNIST}")).json()
    return {
        "minutes": args.minutes,
        "concurrency": args.concurrency,
        "requests_served": sum(soak.served.values()),
        "requests_per_second": round(sum(soak.served.values()) / elapsed, 1),
        "served_by_kind": dict(soak.served),
        "errors": sum(soak.errors.values()),
        "errors_by_kind": dict(soak.errors),
        "error_samples": soak.error_samples,
        "reloads": reloads,
        "final_mnist_version": final_status.get("version"),
        "rss_mib": rss,
        "rss_start_mib": rss[0][1],
        "rss_end_mib": rss[-1][1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to run (default 10)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument(
        "--reload-every", type=float, default=60.0, help="seconds per publish+remove cycle"
    )
    parser.add_argument(
        "--data", type=Path, default=REPO.parent / "shared" / "data", help="mnist.npz, chest_xray/"
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    model_dir = workdir / "models"
    shutil.copytree(REPO / "models", model_dir)
    template = workdir / "template"
    shutil.copytree(model_dir / MNIST / "1", template)
    server, url = start_server(model_dir, workdir)
    try:
        report = asyncio.run(drive(args, url, server.pid, model_dir, template))
    finally:
        server.send_signal(signal.SIGTERM)
        report_exit = server.wait(60)
    report["server_exit_code"] = report_exit
    out = REPO / "bench" / "results" / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "rss_mib"}, indent=2))
    print(f"RSS samples (s, MiB): {report['rss_mib']}")
    print(f"written to {out}")
    sys.exit(0 if report["errors"] == 0 and report["server_exit_code"] == 0 else 1)


if __name__ == "__main__":
    main()
