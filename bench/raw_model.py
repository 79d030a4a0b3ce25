"""The raw model: a SavedModel's batched throughput in-process, the compute limit.

Calls the serving signature exactly as the service's runtime does (a `tf.constant` of
raw pixels in, `.numpy()` out), with no HTTP, decoding or batching queue, for each
batch size, and prints one JSON line. Run in its own process so the benchmark driver's
memory and threads stay out of it:

    python -m bench.raw_model models/pneumonia-cnn/1 --batch-sizes 1,2,4,8,16,32,64
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np


def measure(
    version_dir: Path, batch_sizes: list[int], seconds_per_size: float, repeats: int
) -> dict[str, Any]:
    import tensorflow as tf

    card = json.loads((version_dir / "model_card.json").read_text())
    spec = card["input"]
    shape = (spec["height"], spec["width"], spec["channels"])
    signature = tf.saved_model.load(str(version_dir)).signatures[card["signature_name"]]
    tensor_name, output_name = spec["tensor_name"], card["output_name"]
    rng = np.random.default_rng(0)

    def call(pixels: np.ndarray) -> None:
        signature(**{tensor_name: tf.constant(pixels)})[output_name].numpy()

    results = []
    for size in batch_sizes:
        pixels = rng.uniform(0, 255, size=(size, *shape)).astype(np.float32)
        for _ in range(3):  # trace and warm up this batch size
            call(pixels)
        rates = []
        for _ in range(repeats):
            calls, started = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - started) < seconds_per_size / repeats:
                call(pixels)
                calls += 1
            rates.append(calls * size / elapsed)
        results.append({"batch_size": size, "images_per_second": statistics.median(rates)})
    best = max(results, key=lambda r: r["images_per_second"])
    return {
        "model": card["name"],
        "version": card["version"],
        "input": list(shape),
        "by_batch_size": results,
        "best_batch_size": best["batch_size"],
        "best_images_per_second": best["images_per_second"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.raw_model")
    parser.add_argument("version_dir", type=Path)
    parser.add_argument("--batch-sizes", default="1,2,4,8,16,32,64")
    parser.add_argument("--seconds-per-size", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    result = measure(args.version_dir, sizes, args.seconds_per_size, args.repeats)
    print("BENCH_JSON " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
