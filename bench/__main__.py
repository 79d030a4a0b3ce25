"""`python -m bench`: measure the service against its ceiling, the naive baseline and the
raw model in one run, judge issue 14's targets, print a table and write JSON to
bench/results/.

    .venv/bin/python -m bench                   # the full run (~30 minutes with one variant)
    .venv/bin/python -m bench --variant service --variant w2:VISION_SERVING_WORKERS=2
    .venv/bin/python -m bench --quick           # 1 round of 3 s points, short long run
    .venv/bin/python -m bench --servers ceiling,service --workloads mnist --no-raw \
        --long-requests 0 --rounds 0 --spread 6 --spread-seconds 5   # the spread alone
    .venv/bin/python -m bench --servers ceiling,service --workloads mnist --long-requests 0 \\
        --variant service --variant wait0:VISION_SERVING_MAX_BATCH_WAIT_MS=0   # A/B a lever
    .venv/bin/python -m bench --report bench/results/latest.json       # print a saved run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from bench.plan import ServiceVariant
from bench.report import render, summarise
from bench.run import Options, Runner
from bench.servers import REPO_ROOT


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the service against the HTTP ceiling, the naive model.predict "
        "server and the raw model, alternating rounds so machine drift cancels.",
    )
    data_default = Path(os.environ.get("VISION_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))
    parser.add_argument("--model-dir", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--data-dir", type=Path, default=data_default)
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "bench" / "results")
    parser.add_argument("--rounds", type=int, default=3, help="A B A B rounds (default 3)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per point")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per workload")
    parser.add_argument("--concurrency", default="1,16,64", help="connections, comma-separated")
    parser.add_argument(
        "--variant",
        action="append",
        type=ServiceVariant.parse,
        help="service variant NAME[:ENV=VALUE,...,cwd=DIR]; repeat to A/B (default: service)",
    )
    parser.add_argument(
        "--servers",
        default="ceiling,naive,service",
        help="which of ceiling, naive, service to run (service includes the raw model)",
    )
    parser.add_argument(
        "--workloads",
        default="",
        help="service workloads to run (mnist, mnist-16, pneumonia, pneumonia-full, "
        "pneumonia-16); default all",
    )
    parser.add_argument(
        "--raw-seconds", type=float, default=3.0, help="seconds per batch size and runtime"
    )
    parser.add_argument(
        "--raw-threads",
        default="1,2",
        help="LiteRT num_threads values the raw model is timed with (the best is taken)",
    )
    parser.add_argument("--no-raw", action="store_true", help="skip the raw-model runs")
    parser.add_argument(
        "--spread",
        type=int,
        default=None,
        help="back-to-back points per server (ceiling and each variant, mnist) at 16 "
        "connections after the rounds, judged against +-15%% of their median "
        "(default 6; 0 with --quick; 0: skip)",
    )
    parser.add_argument(
        "--spread-seconds",
        type=float,
        default=5.0,
        help="seconds per spread point (default 5, as in issue 14's target)",
    )
    parser.add_argument(
        "--long-requests",
        type=int,
        default=100_000,
        help="requests in each variant's memory run (0: skip)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 round, 3 s points, 5k long run, no spread"
    )
    parser.add_argument("--report", type=Path, help="print the report of a saved JSON and exit")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.report:
        results = json.loads(args.report.read_text())
        results["summary"] = summarise(results)  # recomputed: the latest report logic
        print(render(results))
        return
    if args.quick:
        args.rounds, args.seconds, args.warmup, args.raw_seconds = 1, 3.0, 1.0, 1.0
        args.long_requests = min(args.long_requests, 5_000)
    if args.spread is None:
        args.spread = 0 if args.quick else 6
    options = Options(
        model_dir=args.model_dir,
        data_dir=args.data_dir,
        out_dir=args.out_dir,
        rounds=args.rounds,
        seconds=args.seconds,
        warmup_seconds=args.warmup,
        concurrency=tuple(int(c) for c in args.concurrency.split(",")),
        variants=args.variant or [ServiceVariant("service")],
        servers=tuple(s for s in args.servers.split(",") if s),
        workloads=tuple(w for w in args.workloads.split(",") if w),
        raw_seconds_per_size=args.raw_seconds,
        raw_models=not args.no_raw,
        raw_threads=tuple(int(t) for t in args.raw_threads.split(",")),
        spread_points=args.spread,
        spread_seconds=args.spread_seconds,
        long_requests=args.long_requests,
    )
    runner = Runner(options)
    results = runner.run()
    results["summary"] = summarise(results)
    options.out_dir.mkdir(parents=True, exist_ok=True)
    path = options.out_dir / f"{runner.stamp}.json"
    path.write_text(json.dumps(results, indent=1))
    shutil.copyfile(path, options.out_dir / "latest.json")
    print()
    print(render(results))
    print(f"\nJSON: {path} (and {options.out_dir / 'latest.json'})")


if __name__ == "__main__":
    main()
