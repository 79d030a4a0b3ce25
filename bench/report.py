"""Turn a run's raw measurements into medians, paired ratios, target checks and a table.

Ratios are taken within a round (the service and its baseline measured minutes apart)
and the median over rounds is reported, so the machine's drift cancels out. The targets
are issue 14's; every service variant of the run is judged against them, and a variant
with several serving processes against the workers target as well.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from bench.plan import declared_workers

TARGET_CEILING_RATIO = 0.9  # mnist req/s / ceiling req/s, one process, 16 and 64 conn.
TARGET_WORKERS_RATIO = 1.5  # mnist req/s with workers / single-process ceiling, 64 conn.
TARGET_NAIVE_RATIO = 50.0  # mnist req/s / naive model.predict req/s, 16 connections
TARGET_P50_RATIO = 1.5  # mnist p50 / ceiling p50 at 1 connection, same round
TARGET_P99_OVER_P50 = 3.0  # mnist p99 / its own p50 at 64 connections
TARGET_CPU_RATIO = 1.0  # mnist CPU per request / ceiling CPU per request, same round
TARGET_RAW_RATIO = 0.8  # pneumonia-16 images/s / raw model's best (any runtime), 16 conn.
TARGET_SPREAD_PCT = 15.0  # back-to-back points within +-15% of their median
GROWTH_LIMIT_MIB_PER_100K = 10.0
MIN_ROUNDS = 3  # the issue's targets are medians of >= 3 rounds


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def ok_rate(m: dict[str, Any]) -> float:
    """Successful (2xx/3xx) responses per second: a quick 503 is not throughput."""
    ok = m["requests"] - m["errors"].get("status", 0)
    return ok / m["seconds"] if m["seconds"] > 0 else 0.0


def ok_image_rate(m: dict[str, Any]) -> float:
    return ok_rate(m) * m.get("images_per_request", 1)


def summarise_measurements(measurements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (server, workload, connections): medians over rounds, errors summed."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    order: list[tuple[str, str, int]] = []
    for m in measurements:
        key = (m["server"], m["workload"], m["connections"])
        if key not in groups:
            order.append(key)
        groups[key].append(m)
    rows = []
    for key in order:
        runs = groups[key]
        rows.append(
            {
                "server": key[0],
                "workload": key[1],
                "connections": key[2],
                "rounds": len(runs),
                "requests_per_second": _median([ok_rate(r) for r in runs]),
                "images_per_second": _median([ok_image_rate(r) for r in runs]),
                "p50_ms": _median([r["latency_ms"]["p50"] for r in runs]),
                "p90_ms": _median([r["latency_ms"]["p90"] for r in runs]),
                "p99_ms": _median([r["latency_ms"]["p99"] for r in runs]),
                "errors": sum(sum(r["errors"].values()) for r in runs),
                "requests": sum(r["requests"] for r in runs),
                "cpu_cores": _median([r["cpu_cores"] for r in runs]),
                # CPU time per request holds up better than req/s on a shared machine.
                "cpu_ms_per_request": _median(
                    [
                        1000 * r["cpu_cores"] / r["requests_per_second"]
                        for r in runs
                        if r["requests_per_second"] > 0  # all responses: CPU per answer
                    ]
                ),
                "rss_peak_mib": max(r["rss_peak_mib"] for r in runs),
            }
        )
    return rows


def _per_round(
    measurements: list[dict[str, Any]], server: str, workload: str, c: int
) -> dict[int, dict[str, Any]]:
    return {
        m["round"]: m
        for m in measurements
        if m["server"] == server and m["workload"] == workload and m["connections"] == c
    }


def _raw_best(raw: list[dict[str, Any]], model: str) -> dict[int, float]:
    return {r["round"]: r["best_images_per_second"] for r in raw if r["model"] == model}


def paired_ratio(
    numerators: dict[int, float], denominators: dict[int, float]
) -> tuple[float | None, list[float]]:
    """Median over rounds of numerator/denominator, pairing values of the same round."""
    ratios = [
        numerators[r] / denominators[r]
        for r in sorted(numerators)
        if r in denominators and denominators[r] > 0
    ]
    return _median(ratios), ratios


def growth_per_100k(samples: list[tuple[float, float]], requests_per_second: float) -> float | None:
    """Least-squares RSS slope over the second half of a long run, in MiB per 100k requests."""
    half = samples[len(samples) // 2 :]
    if len(half) < 3 or requests_per_second <= 0:
        return None
    xs = [s[0] for s in half]
    ys = [s[1] for s in half]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    denominator = sum((x - mean_x) ** 2 for x in xs)
    if denominator == 0:
        return None
    slope_per_second = (
        sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / denominator
    )
    return slope_per_second / requests_per_second * 100_000


def _raw_runtimes(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A raw-model record's figures by runtime (runs before LiteRT timed the SavedModel only)."""
    if "runtimes" in record:
        runtimes: dict[str, dict[str, Any]] = record["runtimes"]
        return runtimes
    return {
        "savedmodel": {
            "runtime": "savedmodel",
            "source": "saved_model.pb",
            "configs": [
                {
                    "num_threads": None,
                    "by_batch_size": record["by_batch_size"],
                    "best_batch_size": record["best_batch_size"],
                    "best_images_per_second": record["best_images_per_second"],
                }
            ],
            "best_num_threads": None,
            "best_batch_size": record["best_batch_size"],
            "best_images_per_second": record["best_images_per_second"],
        }
    }


def _raw_best_of(raw: list[dict[str, Any]], model: str, runtime: str) -> dict[int, float]:
    return {
        r["round"]: _raw_runtimes(r)[runtime]["best_images_per_second"]
        for r in raw
        if r["model"] == model and runtime in _raw_runtimes(r)
    }


def spread_stats(rates: list[float]) -> dict[str, Any] | None:
    """Min, median and max of back-to-back points, and the farthest one from the median."""
    if not rates:
        return None
    median = statistics.median(rates)
    deviation = max(abs(r - median) for r in rates) / median * 100 if median > 0 else None
    return {
        "points": len(rates),
        "min": min(rates),
        "median": median,
        "max": max(rates),
        "max_deviation_pct": deviation,
        "rates": rates,
    }


def variant_workers(variant: dict[str, Any]) -> int:
    """Serving processes of a variant as the run recorded it (older runs: from its env)."""
    recorded = variant.get("workers")
    if isinstance(recorded, int):
        return recorded
    return declared_workers(variant.get("env", {})) or 1


@dataclass
class Check:
    name: str
    value: float | None
    target: str
    passed: bool | None  # None: could not be measured in this run
    detail: str = ""  # the figures behind a ratio

    def line(self) -> str:
        verdict = {True: "MET", False: "NOT MET", None: "n/a"}[self.passed]
        shown = "n/a" if self.value is None else f"{self.value:,.3g}"
        detail = f"; {self.detail}" if self.detail else ""
        return f"  [{verdict:7s}] {self.name}: {shown} (target {self.target}){detail}"


def at_least(
    name: str, value: float | None, limit: float, unit: str = "x", detail: str = ""
) -> Check:
    """A check met when `value` >= `limit` (n/a when it was not measured)."""
    passed = None if value is None else value >= limit
    return Check(name, value, f">= {limit:g}{unit}", passed, detail)


def at_most(
    name: str, value: float | None, limit: float, unit: str = "x", detail: str = ""
) -> Check:
    """A check met when `value` <= `limit` (n/a when it was not measured)."""
    passed = None if value is None else value <= limit
    return Check(name, value, f"<= {limit:g}{unit}", passed, detail)


def _connections(count: int) -> str:
    return f"{count} connection" + ("s" if count != 1 else "")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ms"


def _long_runs(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every long run (runs before per-variant long runs had at most one, `long_run`)."""
    if "long_runs" in results:
        runs: list[dict[str, Any]] = results["long_runs"] or []
        return runs
    return [results["long_run"]] if results.get("long_run") else []


def long_run_memory(long_run: dict[str, Any]) -> dict[str, Any]:
    """RSS at ready, after the run and its growth, from the run's RSS samples."""
    samples = long_run["rss_samples_mib"]
    return {
        "requests": long_run["requests"],
        "rss_ready_mib": samples[0][1],
        "rss_after_tenth_mib": samples[len(samples) // 10][1],
        "rss_end_mib": samples[-1][1],
        "rss_peak_mib": max(s[1] for s in samples),
        "growth_mib": samples[-1][1] - samples[0][1],
        "growth_per_100k_second_half": growth_per_100k(samples, long_run["requests_per_second"]),
    }


def _raw_best_detail(raw: list[dict[str, Any]], model: str) -> str:
    best = [r for r in raw if r["model"] == model]
    if not best:
        return ""
    picks = ", ".join(
        f"{r.get('best_runtime', 'savedmodel')}"
        + (f" {r['best_num_threads']} thr." if r.get("best_num_threads") else "")
        + f" b{r['best_batch_size']}"
        for r in best
    )
    return f"raw best by round: {picks}"


def ratios_and_checks(
    results: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, list[Check]], list[str]]:
    """Paired ratios, target checks for every service variant (and the ceiling), notes."""
    measurements = results["measurements"]
    raw = results["raw_models"]
    options = results["meta"]["options"]
    concurrency = options["concurrency"]
    variants = options["variants"]
    ratios: dict[str, Any] = {}
    checks: dict[str, list[Check]] = {}
    notes: list[str] = []

    def per_round(
        server: str, workload: str, c: int, value: Callable[[dict[str, Any]], float | None]
    ) -> dict[int, float]:
        figures = {r: value(m) for r, m in _per_round(measurements, server, workload, c).items()}
        return {r: v for r, v in figures.items() if v is not None}

    def rps(server: str, workload: str, c: int) -> dict[int, float]:
        return per_round(server, workload, c, ok_rate)

    def ips(server: str, workload: str, c: int) -> dict[int, float]:
        return per_round(server, workload, c, ok_image_rate)

    def p50(server: str, workload: str, c: int) -> dict[int, float]:
        return per_round(server, workload, c, lambda m: m["latency_ms"]["p50"])

    def p99(server: str, workload: str, c: int) -> dict[int, float]:
        return per_round(server, workload, c, lambda m: m["latency_ms"]["p99"])

    def cpu_ms(server: str, workload: str, c: int) -> dict[int, float]:
        # CPU per answer (all responses), as in the table's `cpu ms/req`.
        return per_round(
            server,
            workload,
            c,
            lambda m: (
                1000 * m["cpu_cores"] / m["requests_per_second"]
                if m["requests_per_second"] > 0
                else None
            ),
        )

    def median_of(figures: dict[int, float]) -> float | None:
        return _median(list(figures.values()))

    raw_runtimes = sorted({rt for r in raw for rt in _raw_runtimes(r)})
    spread = summarise_spread(results)
    long_runs = {lr["server"]: lr for lr in _long_runs(results)}
    if variants and not any(variant_workers(v) > 1 for v in variants):
        notes.append(
            f"workers target (>= {TARGET_WORKERS_RATIO:g}x the single-process ceiling at 64 "
            "connections): no variant with workers > 1 in this run "
            "(add e.g. --variant w2:VISION_SERVING_WORKERS=2)"
        )

    for variant_options in variants:
        variant = variant_options["name"]
        workers = variant_workers(variant_options)
        ours: dict[str, Any] = {}
        for c in concurrency:
            ours[f"mnist/ceiling@{c}"] = paired_ratio(
                rps(variant, "mnist", c), rps("ceiling", "ceiling", c)
            )
            ours[f"mnist/naive@{c}"] = paired_ratio(
                rps(variant, "mnist", c), rps("naive", "naive", c)
            )
            ours[f"mnist cpu ms/req / ceiling@{c}"] = paired_ratio(
                cpu_ms(variant, "mnist", c), cpu_ms("ceiling", "ceiling", c)
            )
            for workload in ("pneumonia", "pneumonia-full", "pneumonia-16"):
                ours[f"{workload} images/s / raw best@{c}"] = paired_ratio(
                    ips(variant, workload, c), _raw_best(raw, "pneumonia-cnn")
                )
            for runtime in raw_runtimes:
                ours[f"pneumonia-16 images/s / raw {runtime} best@{c}"] = paired_ratio(
                    ips(variant, "pneumonia-16", c), _raw_best_of(raw, "pneumonia-cnn", runtime)
                )
            ours[f"mnist-16 images/s / raw best@{c}"] = paired_ratio(
                ips(variant, "mnist-16", c), _raw_best(raw, "mnist-mlp")
            )
        ours["mnist p50 / ceiling p50@1"] = paired_ratio(
            p50(variant, "mnist", 1), p50("ceiling", "ceiling", 1)
        )
        ours["mnist p99 / own p50@64"] = paired_ratio(
            p99(variant, "mnist", 64), p50(variant, "mnist", 64)
        )
        ratios[variant] = {k: {"median": v[0], "rounds": v[1]} for k, v in ours.items()}

        def ratio(key: str, ours: dict[str, Any] = ours) -> float | None:
            value: float | None = ours.get(key, (None, []))[0]
            return value

        def vs_ceiling(c: int, variant: str = variant) -> str:
            ours_rps, theirs = (
                median_of(rps(variant, "mnist", c)),
                median_of(rps("ceiling", "ceiling", c)),
            )
            if ours_rps is None or theirs is None:
                return ""
            return f"{ours_rps:,.0f} vs ceiling {theirs:,.0f} req/s (medians)"

        processes = f"{workers} processes" if workers > 1 else "1 process"
        variant_checks = [
            at_least(
                f"mnist req/s vs ceiling at {c} connections (one-process target; {processes})",
                ratio(f"mnist/ceiling@{c}"),
                TARGET_CEILING_RATIO,
                detail=vs_ceiling(c),
            )
            for c in (16, 64)
        ]
        if workers > 1:
            variant_checks.append(
                at_least(
                    f"mnist req/s with {workers} workers vs the single-process ceiling "
                    "at 64 connections",
                    ratio("mnist/ceiling@64"),
                    TARGET_WORKERS_RATIO,
                    detail=vs_ceiling(64),
                )
            )
        mnist_errors = sum(
            sum(m["errors"].values())
            for m in measurements
            if m["server"] == variant and m["workload"] == "mnist"
        )
        has_mnist = bool(_per_round(measurements, variant, "mnist", 16))
        variant_checks.append(
            Check(
                "mnist errors (all concurrencies, all rounds)",
                float(mnist_errors) if has_mnist else None,
                "0",
                (mnist_errors == 0) if has_mnist else None,
            )
        )
        variant_checks.append(
            at_most(
                "mnist p50 at 1 connection vs the ceiling's p50 (same round)",
                ratio("mnist p50 / ceiling p50@1"),
                TARGET_P50_RATIO,
                detail=f"{_ms(median_of(p50(variant, 'mnist', 1)))} vs ceiling "
                f"{_ms(median_of(p50('ceiling', 'ceiling', 1)))} (medians)",
            )
        )
        variant_checks.append(
            at_most(
                "mnist p99 at 64 connections vs its own p50 at 64",
                ratio("mnist p99 / own p50@64"),
                TARGET_P99_OVER_P50,
                detail=f"p99 {_ms(median_of(p99(variant, 'mnist', 64)))}, "
                f"p50 {_ms(median_of(p50(variant, 'mnist', 64)))} (medians)",
            )
        )
        for c in concurrency:
            variant_checks.append(
                at_most(
                    f"mnist CPU per request vs the ceiling's at {_connections(c)} (same round)",
                    ratio(f"mnist cpu ms/req / ceiling@{c}"),
                    TARGET_CPU_RATIO,
                    detail=f"{_ms(median_of(cpu_ms(variant, 'mnist', c)))} vs ceiling "
                    f"{_ms(median_of(cpu_ms('ceiling', 'ceiling', c)))} (medians)",
                )
            )
        variant_checks.append(
            at_least(
                "mnist req/s vs naive model.predict at 16 connections",
                ratio("mnist/naive@16"),
                TARGET_NAIVE_RATIO,
            )
        )
        ours_ips = median_of(ips(variant, "pneumonia-16", 16))
        raw_best = _median(list(_raw_best(raw, "pneumonia-cnn").values()))
        raw_detail = (
            f"{ours_ips:,.0f} vs {raw_best:,.0f} images/s (medians); "
            + _raw_best_detail(raw, "pneumonia-cnn")
            if ours_ips is not None and raw_best is not None
            else ""
        )
        variant_checks.append(
            at_least(
                "pneumonia 16-image upload images/s vs the raw model's best of all runtimes, "
                "16 connections",
                ratio("pneumonia-16 images/s / raw best@16"),
                TARGET_RAW_RATIO,
                detail=raw_detail,
            )
        )
        if variant in spread:
            variant_checks.append(spread_check(variant, spread[variant]))
        if variant in long_runs:
            variant_checks += long_run_checks(long_runs[variant])
        checks[variant] = variant_checks

    if "ceiling" in spread:
        checks["ceiling"] = [spread_check("ceiling", spread["ceiling"])]
    for server, long_run in long_runs.items():  # a long run of a variant not listed
        if server not in checks:
            checks[server] = long_run_checks(long_run)
            ratios.setdefault(server, {})
    for server, long_run in long_runs.items():
        growth = long_run_memory(long_run)["growth_per_100k_second_half"]
        ratios.setdefault(server, {})["long run RSS growth MiB/100k"] = growth

    rounds = options.get("rounds", 0)
    if rounds < MIN_ROUNDS:
        notes.append(
            f"{rounds} round(s): the issue's targets are medians of >= {MIN_ROUNDS} rounds, "
            "so these verdicts are indicative only"
        )
    notes.append(
        "not measured by this harness: >= 2x the best peer (../shared/bench/peers), and "
        "unchanged answers (the evaluation tests)"
    )
    return ratios, checks, notes


def spread_check(server: str, stats: dict[str, Any]) -> Check:
    return at_most(
        f"req/s spread: {stats['points']} back-to-back {stats['seconds']:g} s points at "
        f"{stats['connections']} connections, farthest from their median (%)",
        stats["max_deviation_pct"],
        TARGET_SPREAD_PCT,
        unit="%",
        detail=f"min {stats['min']:,.0f} / median {stats['median']:,.0f} / "
        f"max {stats['max']:,.0f} req/s",
    )


def long_run_checks(long_run: dict[str, Any]) -> list[Check]:
    memory = long_run_memory(long_run)
    errors = sum(long_run["errors"].values())
    return [
        Check(
            "long run: RSS growth over its second half (MiB per 100k requests)",
            memory["growth_per_100k_second_half"],
            f"< {GROWTH_LIMIT_MIB_PER_100K:g}",
            None
            if memory["growth_per_100k_second_half"] is None
            else memory["growth_per_100k_second_half"] < GROWTH_LIMIT_MIB_PER_100K,
            detail=f"RSS {memory['rss_ready_mib']:.0f} MiB at ready, "
            f"{memory['rss_end_mib']:.0f} MiB after {memory['requests']:,} requests "
            f"({memory['growth_mib']:+.0f} MiB; {memory['rss_after_tenth_mib']:.0f} after 10%)",
        ),
        Check("long run: errors", float(errors), "0", errors == 0),
    ]


def summarise_spread(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per server: the back-to-back points' successful req/s, with min, median and max."""
    summary = {}
    for entry in results.get("spread") or []:
        stats = spread_stats([ok_rate(p) for p in entry["points"]])
        if stats is None:
            continue
        summary[entry["server"]] = {
            **stats,
            "workload": entry["workload"],
            "connections": entry["connections"],
            "seconds": entry["seconds"],
            "errors": sum(sum(p["errors"].values()) for p in entry["points"]),
            "cpu_ms_per_request_median": _median(
                [
                    1000 * p["cpu_cores"] / p["requests_per_second"]
                    for p in entry["points"]
                    if p["requests_per_second"] > 0
                ]
            ),
        }
    return summary


def startup_summary(results: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    by_server: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for start in results["starts"]:
        by_server[start["server"]].append(start)
    return {
        server: {
            "starts": len(starts),
            "ready_seconds_median": _median([s["ready_seconds"] for s in starts]),
            "rss_ready_mib_median": _median([s["rss_ready_mib"] for s in starts]),
            "rss_end_mib_max": max(s["rss_end_mib"] for s in starts),
            "processes_at_ready_max": max(
                (s["processes_at_ready"] for s in starts if "processes_at_ready" in s),
                default=None,
            ),
        }
        for server, starts in by_server.items()
    }


def _threads_label(num_threads: int | None) -> str:
    if num_threads is None:
        return "default threads"
    return f"{num_threads} thread" + ("s" if num_threads != 1 else "")


def raw_summary(results: dict[str, Any]) -> dict[str, Any]:
    """Per model: the best of all runtimes, and each runtime's (per thread count) figures."""
    by_model: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results["raw_models"]:
        by_model[r["model"]].append(r)
    summary = {}
    for model, runs in by_model.items():
        runtimes: dict[str, Any] = {}
        for runtime in sorted({rt for r in runs for rt in _raw_runtimes(r)}):
            figures = [_raw_runtimes(r)[runtime] for r in runs if runtime in _raw_runtimes(r)]
            configs: dict[str, dict[int, float | None]] = {}
            for label in dict.fromkeys(
                _threads_label(c["num_threads"]) for f in figures for c in f["configs"]
            ):
                rows = [
                    row
                    for f in figures
                    for c in f["configs"]
                    if _threads_label(c["num_threads"]) == label
                    for row in c["by_batch_size"]
                ]
                sizes = list(dict.fromkeys(row["batch_size"] for row in rows))
                configs[label] = {
                    size: _median(
                        [row["images_per_second"] for row in rows if row["batch_size"] == size]
                    )
                    for size in sizes
                }
            runtimes[runtime] = {
                "source": figures[0].get("source", ""),
                "best_images_per_second_median": _median(
                    [f["best_images_per_second"] for f in figures]
                ),
                "best_by_round": [
                    {
                        "threads": _threads_label(f["best_num_threads"]),
                        "batch_size": f["best_batch_size"],
                    }
                    for f in figures
                ],
                "images_per_second_by_threads_and_batch_size": configs,
            }
        summary[model] = {
            "input": runs[0]["input"],
            "best_images_per_second_median": _median([r["best_images_per_second"] for r in runs]),
            "best_by_round": [
                {
                    "runtime": r.get("best_runtime", "savedmodel"),
                    "threads": _threads_label(r.get("best_num_threads")),
                    "batch_size": r["best_batch_size"],
                }
                for r in runs
            ],
            "runtimes": runtimes,
            "errors": {k: v for r in runs for k, v in (r.get("errors") or {}).items()},
        }
    return summary


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    ratios, checks, notes = ratios_and_checks(results)
    return {
        "table": summarise_measurements(results["measurements"]),
        "ratios": ratios,
        "checks": {v: [asdict(c) for c in cs] for v, cs in checks.items()},
        "notes": notes,
        "startup": startup_summary(results),
        "raw_models": raw_summary(results),
        "spread": summarise_spread(results),
        "memory": {lr["server"]: long_run_memory(lr) for lr in _long_runs(results)},
    }


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


_COLUMNS = (  # title, key, width, format ("" for text)
    ("server", "server", 16, ""),
    ("workload", "workload", 15, ""),
    ("conn", "connections", 4, "d"),
    ("req/s", "requests_per_second", 9, ".1f"),
    ("images/s", "images_per_second", 9, ".1f"),
    ("p50 ms", "p50_ms", 8, ".2f"),
    ("p90 ms", "p90_ms", 8, ".2f"),
    ("p99 ms", "p99_ms", 9, ".2f"),
    ("errors", "errors", 6, "d"),
    ("cpu", "cpu_cores", 5, ".2f"),
    ("cpu ms/req", "cpu_ms_per_request", 10, ".3f"),
    ("RSS MiB", "rss_peak_mib", 8, ".0f"),
)


def _table(rows: list[dict[str, Any]]) -> list[str]:
    def cell(value: Any, width: int, spec: str) -> str:
        if not spec:
            return str(value).ljust(width)
        return ("-" if value is None else format(value, spec)).rjust(width)

    header = " ".join(
        title.ljust(width) if not spec else title.rjust(width) for title, _, width, spec in _COLUMNS
    )
    body = [
        " ".join(cell(row[key], width, spec) for _, key, width, spec in _COLUMNS) for row in rows
    ]
    return [header, *body]


def render(results: dict[str, Any]) -> str:
    """The human-readable report: table, raw model, ratios, spread, memory, targets."""
    summary = results["summary"]
    meta = results["meta"]
    options = meta["options"]
    lines = [
        f"Benchmark {meta['started']} (commit {meta['commit']}): {options['rounds']} rounds, "
        f"{options['seconds']:g} s per point, medians over rounds; load average "
        f"{meta['load_average_before']:.2f} before, {meta['load_average_after']:.2f} after",
        "Variants: "
        + "; ".join(
            f"{v['name']} ({variant_workers(v)} serving process(es)"
            + (f", from {v['workers_from']}" if v.get("workers_from") else "")
            + (f", env {v['env']}" if v.get("env") else "")
            + (f", cwd {v['cwd']}" if v.get("cwd") else "")
            + ")"
            for v in options["variants"]
        ),
        "",
        *_table(summary["table"]),
    ]
    if summary["raw_models"]:
        lines += [
            "",
            "Raw model (in-process, no HTTP), median images/s by batch size; the ratio "
            "targets use the best of all runtimes and thread counts:",
        ]
        for model, raw in summary["raw_models"].items():
            picks = ", ".join(
                f"{b['runtime']} {b['threads']} batch {b['batch_size']}"
                for b in raw["best_by_round"]
            )
            best = _fmt(raw["best_images_per_second_median"], ",.0f")
            lines.append(f"  {model} {raw['input']}: best {best} (by round: {picks})")
            for runtime, figures in raw["runtimes"].items():
                best_runtime = _fmt(figures["best_images_per_second_median"], ",.0f")
                chosen = ", ".join(
                    f"{b['threads']} batch {b['batch_size']}" for b in figures["best_by_round"]
                )
                lines.append(
                    f"    {runtime}: best {best_runtime} (by round: {chosen}); {figures['source']}"
                )
                for label, by_size in figures[
                    "images_per_second_by_threads_and_batch_size"
                ].items():
                    cells = "  ".join(f"{size}:{_fmt(v, '.0f')}" for size, v in by_size.items())
                    lines.append(f"      {label}: {cells}")
            for runtime, error in raw["errors"].items():
                last = (error.strip().splitlines() or ["(no output)"])[-1]
                lines.append(f"    {runtime}: FAILED in a round, {last}")
    lines += ["", "Ratios (median over rounds of same-round ratios):"]
    for variant, ratios in summary["ratios"].items():
        for name, value in ratios.items():
            if isinstance(value, dict) and value["median"] is not None:
                rounds = ", ".join(f"{r:.3g}" for r in value["rounds"])
                lines.append(f"  {variant}: {name} = {value['median']:.3g}  (rounds: {rounds})")
    if summary.get("spread"):
        lines += ["", "Spread (back-to-back points after a warm-up, successful req/s):"]
        for server, s in summary["spread"].items():
            rates = ", ".join(f"{r:.0f}" for r in s["rates"])
            lines.append(
                f"  {server} ({s['workload']}, {s['points']} x {s['seconds']:g} s, "
                f"c={s['connections']}): min {s['min']:,.0f} / median {s['median']:,.0f} / "
                f"max {s['max']:,.0f}, farthest {_fmt(s['max_deviation_pct'], '.1f')}% from "
                f"the median; CPU {_fmt(s['cpu_ms_per_request_median'], '.3f')} ms/req; "
                f"errors {s['errors']}  ({rates})"
            )
    lines += ["", "Start-up to ready (median) and memory:"]
    for server, start in summary["startup"].items():
        processes = start.get("processes_at_ready_max")
        lines.append(
            f"  {server}: ready in {_fmt(start['ready_seconds_median'], '.1f')} s "
            f"({start['starts']} starts"
            + (f", {processes} process(es) in its tree" if processes else "")
            + f"); RSS at ready {_fmt(start['rss_ready_mib_median'], '.0f')} MiB, after its "
            f"runs up to {_fmt(start['rss_end_mib_max'], '.0f')} MiB"
        )
    for long_run in _long_runs(results):
        memory = long_run_memory(long_run)
        lines.append(
            f"  long run {long_run['server']} ({long_run['mix']}, "
            f"c={long_run['connections']}): {long_run['requests']:,} requests in "
            f"{long_run['seconds']:.0f} s ({long_run['requests_per_second']:.0f} req/s), errors "
            f"{sum(long_run['errors'].values())}; RSS {memory['rss_ready_mib']:.0f} MiB at "
            f"ready, {memory['rss_after_tenth_mib']:.0f} after 10%, "
            f"{memory['rss_end_mib']:.0f} at the end ({memory['growth_mib']:+.0f}), "
            f"peak {memory['rss_peak_mib']:.0f}; growth over the second half "
            f"{_fmt(memory['growth_per_100k_second_half'], '.1f')} MiB per 100k requests"
        )
    if results.get("training"):
        lines += ["", "Training time (from each shipped model's history.json):"]
        for model, t in results["training"].items():
            lines.append(
                f"  {model} v{t['version']}: {t['epochs_run']} epochs, median epoch "
                f"{_fmt(t['epoch_seconds_median'], '.1f')} s (fastest "
                f"{_fmt(t['epoch_seconds_min'], '.1f')} s), batch {t['batch_size']}, "
                f"whole run {_fmt(t['duration_seconds'], '.0f')} s"
            )
    lines += ["", "Targets (issue 14):"]
    for variant, checks in summary["checks"].items():
        lines.append(f" {variant}:")
        lines += [Check(**c).line() for c in checks]
    for note in summary.get("notes", []):
        lines.append(f" note: {note}")
    return "\n".join(lines)
