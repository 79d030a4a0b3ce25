"""Turn a run's raw measurements into medians, paired ratios, target checks and a table.

Ratios are taken within a round (the service and its baseline measured minutes apart)
and the median over rounds is reported, so the machine's drift cancels out.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

TARGET_CEILING_RATIO = 0.8
TARGET_NAIVE_RATIO = 50.0
TARGET_P50_MS = 1.5
TARGET_RAW_RATIO = 0.8
GROWTH_LIMIT_MIB_PER_100K = 10.0


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


@dataclass
class Check:
    name: str
    value: float | None
    target: str
    passed: bool | None  # None: could not be measured in this run

    def line(self) -> str:
        verdict = {True: "MET", False: "NOT MET", None: "n/a"}[self.passed]
        shown = "n/a" if self.value is None else f"{self.value:,.3g}"
        return f"  [{verdict:7s}] {self.name}: {shown} (target {self.target})"


def ratios_and_checks(results: dict[str, Any]) -> tuple[dict[str, Any], dict[str, list[Check]]]:
    """Paired ratios and target checks for every service variant in the run."""
    measurements = results["measurements"]
    raw = results["raw_models"]
    concurrency = results["meta"]["options"]["concurrency"]
    variants = [v["name"] for v in results["meta"]["options"]["variants"]]
    ratios: dict[str, Any] = {}
    checks: dict[str, list[Check]] = {}

    def rps(server: str, workload: str, c: int) -> dict[int, float]:
        return {r: ok_rate(m) for r, m in _per_round(measurements, server, workload, c).items()}

    def ips(server: str, workload: str, c: int) -> dict[int, float]:
        return {
            r: ok_image_rate(m) for r, m in _per_round(measurements, server, workload, c).items()
        }

    for variant in variants:
        ours: dict[str, Any] = {}
        for c in concurrency:
            ours[f"mnist/ceiling@{c}"] = paired_ratio(
                rps(variant, "mnist", c), rps("ceiling", "ceiling", c)
            )
            ours[f"mnist/naive@{c}"] = paired_ratio(
                rps(variant, "mnist", c), rps("naive", "naive", c)
            )
            for workload in ("pneumonia", "pneumonia-full", "pneumonia-16"):
                ours[f"{workload} images/s / raw best@{c}"] = paired_ratio(
                    ips(variant, workload, c), _raw_best(raw, "pneumonia-cnn")
                )
            ours[f"mnist-16 images/s / raw best@{c}"] = paired_ratio(
                ips(variant, "mnist-16", c), _raw_best(raw, "mnist-mlp")
            )
        ratios[variant] = {k: {"median": v[0], "rounds": v[1]} for k, v in ours.items()}

        mnist_errors = sum(
            sum(m["errors"].values())
            for m in measurements
            if m["server"] == variant and m["workload"] == "mnist"
        )
        p50_c1 = _median(
            [m["latency_ms"]["p50"] for m in _per_round(measurements, variant, "mnist", 1).values()]
        )
        variant_checks = []
        for c in (16, 64):
            value = ours.get(f"mnist/ceiling@{c}", (None, []))[0]
            variant_checks.append(
                Check(
                    f"mnist-mlp req/s vs ceiling at {c} connections",
                    value,
                    f">= {TARGET_CEILING_RATIO}x",
                    None if value is None else value >= TARGET_CEILING_RATIO,
                )
            )
        has_mnist = bool(_per_round(measurements, variant, "mnist", 16))
        variant_checks.append(
            Check(
                "mnist-mlp errors (all concurrencies, all rounds)",
                float(mnist_errors) if has_mnist else None,
                "0",
                (mnist_errors == 0) if has_mnist else None,
            )
        )
        variant_checks.append(
            Check(
                "mnist-mlp p50 at 1 connection (ms)",
                p50_c1,
                f"<= {TARGET_P50_MS} ms",
                None if p50_c1 is None else p50_c1 <= TARGET_P50_MS,
            )
        )
        value = ours.get("mnist/naive@16", (None, []))[0]
        variant_checks.append(
            Check(
                "mnist-mlp req/s vs naive model.predict at 16 connections",
                value,
                f">= {TARGET_NAIVE_RATIO:g}x",
                None if value is None else value >= TARGET_NAIVE_RATIO,
            )
        )
        value = ours.get("pneumonia-16 images/s / raw best@16", (None, []))[0]
        variant_checks.append(
            Check(
                "pneumonia-cnn 16-image upload images/s vs raw model best, 16 connections",
                value,
                f">= {TARGET_RAW_RATIO}x",
                None if value is None else value >= TARGET_RAW_RATIO,
            )
        )
        checks[variant] = variant_checks

    long_run = results.get("long_run")
    if long_run:
        growth = growth_per_100k(long_run["rss_samples_mib"], long_run["requests_per_second"])
        errors = sum(long_run["errors"].values())
        checks.setdefault(long_run["server"], []).extend(
            [
                Check(
                    "long run: RSS growth over its second half (MiB per 100k requests)",
                    growth,
                    f"< {GROWTH_LIMIT_MIB_PER_100K:g}",
                    None if growth is None else growth < GROWTH_LIMIT_MIB_PER_100K,
                ),
                Check("long run: errors", float(errors), "0", errors == 0),
            ]
        )
        ratios.setdefault(long_run["server"], {})["long run RSS growth MiB/100k"] = growth
    return ratios, checks


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
        }
        for server, starts in by_server.items()
    }


def raw_summary(results: dict[str, Any]) -> dict[str, Any]:
    by_model: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in results["raw_models"]:
        by_model[r["model"]].append(r)
    summary = {}
    for model, runs in by_model.items():
        sizes = [row["batch_size"] for row in runs[0]["by_batch_size"]]
        per_size = {
            size: _median(
                [
                    row["images_per_second"]
                    for r in runs
                    for row in r["by_batch_size"]
                    if row["batch_size"] == size
                ]
            )
            for size in sizes
        }
        summary[model] = {
            "input": runs[0]["input"],
            "best_images_per_second_median": _median([r["best_images_per_second"] for r in runs]),
            "best_batch_sizes": [r["best_batch_size"] for r in runs],
            "images_per_second_by_batch_size": per_size,
        }
    return summary


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    ratios, checks = ratios_and_checks(results)
    return {
        "table": summarise_measurements(results["measurements"]),
        "ratios": ratios,
        "checks": {v: [c.__dict__ for c in cs] for v, cs in checks.items()},
        "startup": startup_summary(results),
        "raw_models": raw_summary(results),
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
    """The human-readable report: table, raw model, ratios, targets, memory, training."""
    summary = results["summary"]
    meta = results["meta"]
    options = meta["options"]
    lines = [
        f"Benchmark {meta['started']} (commit {meta['commit']}): {options['rounds']} rounds, "
        f"{options['seconds']:g} s per point, medians over rounds; load average "
        f"{meta['load_average_before']:.2f} before, {meta['load_average_after']:.2f} after",
        "",
        *_table(summary["table"]),
    ]
    if summary["raw_models"]:
        lines += ["", "Raw model (signature call in-process), median images/s by batch size:"]
        for model, raw in summary["raw_models"].items():
            by_size = "  ".join(
                f"{size}:{_fmt(v, '.0f')}"
                for size, v in raw["images_per_second_by_batch_size"].items()
            )
            best = _fmt(raw["best_images_per_second_median"], ".0f")
            at = raw["best_batch_sizes"]
            lines.append(f"  {model} {raw['input']}: best {best} (batch {at}); {by_size}")
    lines += ["", "Ratios (median over rounds of same-round ratios):"]
    for variant, ratios in summary["ratios"].items():
        for name, value in ratios.items():
            if isinstance(value, dict) and value["median"] is not None:
                rounds = ", ".join(f"{r:.3g}" for r in value["rounds"])
                lines.append(f"  {variant}: {name} = {value['median']:.3g}  (rounds: {rounds})")
    lines += ["", "Start-up to ready (median) and memory:"]
    for server, start in summary["startup"].items():
        lines.append(
            f"  {server}: ready in {_fmt(start['ready_seconds_median'], '.1f')} s "
            f"({start['starts']} starts); RSS at ready "
            f"{_fmt(start['rss_ready_mib_median'], '.0f')} MiB, after its runs up to "
            f"{_fmt(start['rss_end_mib_max'], '.0f')} MiB"
        )
    long_run = results.get("long_run")
    if long_run:
        samples = long_run["rss_samples_mib"]
        tenth = samples[len(samples) // 10][1]
        lines.append(
            f"  long run ({long_run['mix']}, c={long_run['connections']}): "
            f"{long_run['requests']:,} requests in {long_run['seconds']:.0f} s "
            f"({long_run['requests_per_second']:.0f} req/s), errors "
            f"{sum(long_run['errors'].values())}; RSS {samples[0][1]:.0f} MiB at ready, "
            f"{tenth:.0f} after 10%, {samples[-1][1]:.0f} at the end, "
            f"peak {max(s[1] for s in samples):.0f}"
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
    lines += ["", "Targets:"]
    for variant, checks in summary["checks"].items():
        lines.append(f" {variant}:")
        lines += [Check(**c).line() for c in checks]
    return "\n".join(lines)
