"""The raw model: a model's batched throughput in-process, the compute limit.

Times one runtime per process, so neither runtime's memory or threads sit in the other's
measurement, and prints one JSON line:

- `litert`: the LiteRT interpreter (`ai_edge_litert`, XNNPACK) on the version folder's
  LiteRT model (the card's `artifacts["litert_model"]`, `model.tflite` by default) or,
  when the export has none, on the SavedModel converted with `tf.lite.TFLiteConverter`
  into a temporary folder (never into the model directory); once per `--threads` value;
- `savedmodel`: the SavedModel's serving signature, called as the service's TensorFlow
  runtime calls it (a `tf.constant` of raw pixels in, `.numpy()` out).

Each is timed with no HTTP, decoding or batching queue, for each batch size, on random
0..255 pixels. `python -m bench` runs both and reports the best of each and of all:

    python -m bench.raw_model models/pneumonia-cnn/2 --runtime litert --threads 1,2
    python -m bench.raw_model models/pneumonia-cnn/2 --runtime savedmodel
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

RUNTIMES = ("litert", "savedmodel")
LITERT_ROLE = "litert_model"
LITERT_DEFAULT_FILE = "model.tflite"


def litert_file(version_dir: Path, card: dict[str, Any]) -> Path:
    """Where the export keeps its LiteRT model (it may not exist)."""
    name = card.get("artifacts", {}).get(LITERT_ROLE, LITERT_DEFAULT_FILE)
    return version_dir / name


@contextmanager
def _litert_model(version_dir: Path, card: dict[str, Any]) -> Iterator[tuple[Path, str]]:
    """The export's LiteRT model, or the SavedModel converted in a temporary folder."""
    shipped = litert_file(version_dir, card)
    if shipped.is_file():
        yield shipped, shipped.name
        return
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(version_dir), signature_keys=[card["signature_name"]]
    )
    converted = converter.convert()
    with tempfile.TemporaryDirectory(prefix="bench-litert-") as folder:
        path = Path(folder) / LITERT_DEFAULT_FILE
        path.write_bytes(converted)
        yield path, f"converted from the SavedModel at run time ({shipped.name} missing)"


def _time_call(
    call: Callable[[np.ndarray], object],
    shape: tuple[int, ...],
    batch_sizes: list[int],
    seconds_per_size: float,
    repeats: int,
) -> dict[str, Any]:
    """Images/s of `call` at each batch size (median of `repeats` timed stretches)."""
    rng = np.random.default_rng(0)
    rows = []
    for size in batch_sizes:
        pixels = rng.uniform(0, 255, size=(size, *shape)).astype(np.float32)
        for _ in range(3):  # trace, resize and warm up this batch size
            call(pixels)
        rates = []
        for _ in range(repeats):
            calls, started = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - started) < seconds_per_size / repeats:
                call(pixels)
                calls += 1
            rates.append(calls * size / elapsed)
        rows.append({"batch_size": size, "images_per_second": statistics.median(rates)})
    best = max(rows, key=lambda r: r["images_per_second"])
    return {
        "by_batch_size": rows,
        "best_batch_size": best["batch_size"],
        "best_images_per_second": best["images_per_second"],
    }


def measure(
    version_dir: Path,
    runtime: str,
    batch_sizes: list[int],
    seconds_per_size: float,
    repeats: int,
    threads: list[int],
) -> dict[str, Any]:
    """One runtime's figures: a config per thread count (`litert`) or one (`savedmodel`)."""
    card = json.loads((version_dir / "model_card.json").read_text())
    spec = card["input"]
    shape = (spec["height"], spec["width"], spec["channels"])
    tensor_name, output_name = spec["tensor_name"], card["output_name"]
    configs = []
    if runtime == "litert":
        from ai_edge_litert.interpreter import Interpreter

        with _litert_model(version_dir, card) as (path, source):
            for num_threads in threads:
                interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
                runner = interpreter.get_signature_runner(card["signature_name"])

                def call_litert(pixels: np.ndarray, runner: Any = runner) -> object:
                    return runner(**{tensor_name: pixels})[output_name]

                timed = _time_call(call_litert, shape, batch_sizes, seconds_per_size, repeats)
                configs.append({"num_threads": num_threads, **timed})
                del runner, interpreter
    elif runtime == "savedmodel":
        import tensorflow as tf

        signature = tf.saved_model.load(str(version_dir)).signatures[card["signature_name"]]
        source = "saved_model.pb (TensorFlow's default thread pools)"

        def call_signature(pixels: np.ndarray) -> object:
            return signature(**{tensor_name: tf.constant(pixels)})[output_name].numpy()

        timed = _time_call(call_signature, shape, batch_sizes, seconds_per_size, repeats)
        configs.append({"num_threads": None, **timed})
    else:
        raise ValueError(f"unknown runtime {runtime!r} (one of {', '.join(RUNTIMES)})")
    best = max(configs, key=lambda c: c["best_images_per_second"])
    return {
        "model": card["name"],
        "version": card["version"],
        "input": list(shape),
        "runtime": runtime,
        "source": source,
        "configs": configs,
        "best_num_threads": best["num_threads"],
        "best_batch_size": best["best_batch_size"],
        "best_images_per_second": best["best_images_per_second"],
    }


def combine_runtimes(
    per_runtime: list[dict[str, Any]], errors: dict[str, str] | None = None
) -> dict[str, Any]:
    """One model's record for a round: every runtime's result and the best of all.

    The top-level `best_*` and `by_batch_size` fields are the fastest runtime's (and
    thread count's), which is what the service's throughput is compared with.
    """
    if not per_runtime:
        raise ValueError("no runtime was measured")
    best = max(per_runtime, key=lambda r: r["best_images_per_second"])
    best_config = max(best["configs"], key=lambda c: c["best_images_per_second"])
    return {
        "model": best["model"],
        "version": best["version"],
        "input": best["input"],
        "runtimes": {r["runtime"]: r for r in per_runtime},
        "errors": dict(errors or {}),
        "best_runtime": best["runtime"],
        "best_num_threads": best["best_num_threads"],
        "best_batch_size": best["best_batch_size"],
        "best_images_per_second": best["best_images_per_second"],
        "by_batch_size": best_config["by_batch_size"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.raw_model")
    parser.add_argument("version_dir", type=Path)
    parser.add_argument("--runtime", choices=RUNTIMES, default="litert")
    parser.add_argument("--threads", default="1,2", help="LiteRT num_threads values to try")
    parser.add_argument("--batch-sizes", default="1,2,4,8,16,32,64")
    parser.add_argument("--seconds-per-size", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    result = measure(
        args.version_dir, args.runtime, sizes, args.seconds_per_size, args.repeats, threads
    )
    print("BENCH_JSON " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
