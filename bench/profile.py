"""Profile the service under load: py-spy samples `python -m app` while wrk drives it.

    .venv/bin/python -m bench.profile --workload mnist --connections 16 [--gil] [--native]

Writes a flame graph (SVG) and the collapsed stacks to bench/results/, and prints the
functions holding the most samples, inclusive and self. `--gil` keeps only samples of
the thread holding the GIL, which is what limits a single Python process's throughput.
Needs py-spy (in the dev extra) in the environment.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.payloads import build_payloads
from bench.plan import SERVICE_WORKLOADS, ServiceVariant, service_spec
from bench.servers import REPO_ROOT, running
from bench.wrk import Target, WrkResult, run_wrk


def top_functions(collapsed: str, limit: int = 40) -> str:
    """Inclusive and self shares per function (file:line dropped) of collapsed stacks."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [frame.rsplit(":", 1)[0] for frame in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    if total == 0:
        return "no samples"
    lines = [f"{total} samples; inclusive:"]
    lines += [f"  {100 * n / total:5.1f}% {f[:150]}" for f, n in inclusive.most_common(limit)]
    lines.append("self:")
    lines += [f"  {100 * n / total:5.1f}% {f[:150]}" for f, n in own.most_common(limit)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    names = [w.name for w in SERVICE_WORKLOADS]
    parser.add_argument("--workload", choices=names, default="mnist")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=15, help="seconds of sampling")
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--gil", action="store_true", help="only the thread holding the GIL")
    parser.add_argument("--native", action="store_true", help="include C/C++ frames")
    parser.add_argument("--variant", type=ServiceVariant.parse, default=ServiceVariant("service"))
    parser.add_argument("--model-dir", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "bench" / "results")
    args = parser.parse_args()

    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        raise SystemExit("py-spy is not installed: `.venv/bin/pip install py-spy`")
    workload = next(w for w in SERVICE_WORKLOADS if w.name == args.workload)
    payloads = build_payloads(args.data_dir, args.out_dir / "bodies")
    target = Target.single(workload.path, payloads[workload.payload])
    stem = args.out_dir / f"profile-{time.strftime('%Y%m%d-%H%M%S')}-{workload.name}"
    flags = (["--gil"] if args.gil else []) + (["--native"] if args.native else [])
    if not args.native:
        flags.append("--nonblocking")  # sample without pausing the server

    with running(service_spec(args.variant, args.model_dir), args.out_dir / "logs") as server:
        run_wrk(server.url, target, connections=args.connections, seconds=3)  # warm up
        results: list[WrkResult] = []
        load = threading.Thread(
            target=lambda: results.append(
                run_wrk(server.url, target, connections=args.connections, seconds=args.seconds + 6)
            )
        )
        load.start()
        time.sleep(2)
        for fmt, suffix in (("raw", ".txt"), ("flamegraph", ".svg")):
            command = [py_spy, "record", "-p", str(server.pid), "-d", str(args.seconds // 2)]
            command += ["-r", str(args.rate), "--format", fmt, "-o", f"{stem}{suffix}", *flags]
            subprocess.run(command, check=True, capture_output=True)
        load.join()
    result = results[0]
    print(
        f"{workload.name} at c={args.connections}: {result.requests_per_second:.0f} req/s, "
        f"p50 {result.latency_ms['p50']:.2f} ms (under sampling)"
    )
    print(top_functions(Path(f"{stem}.txt").read_text()))
    print(f"\nflame graph: {stem}.svg\ncollapsed stacks: {stem}.txt")


if __name__ == "__main__":
    main()
