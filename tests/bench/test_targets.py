"""Judging issue 14's targets from made-up measurements: ratios, verdicts, spread, memory.

Pure functions only; no server is started and nothing is timed.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from bench.plan import ServiceVariant, declared_workers
from bench.raw_model import combine_runtimes, litert_file
from bench.report import (
    TARGET_SPREAD_PCT,
    Check,
    at_least,
    at_most,
    ratios_and_checks,
    render,
    spread_stats,
    summarise,
    variant_workers,
)
from bench.run import resolve_workers

ROUNDS = (0, 1, 2)


def point(
    round_index: int,
    server: str,
    workload: str,
    connections: int,
    rps: float,
    *,
    p50: float = 1.0,
    p99: float = 2.0,
    cpu_cores: float = 1.0,
    images: int = 1,
    errors: int = 0,
) -> dict[str, Any]:
    return {
        "round": round_index,
        "server": server,
        "workload": workload,
        "connections": connections,
        "images_per_request": images,
        "requests": int(rps * 10),
        "seconds": 10.0,
        "requests_per_second": rps,
        "images_per_second": rps * images,
        "latency_ms": {"p50": p50, "p90": p50, "p99": p99},
        "errors": {"status": errors},
        "cpu_cores": cpu_cores,
        "rss_peak_mib": 600.0,
    }


def raw_record(round_index: int, litert: float, savedmodel: float) -> dict[str, Any]:
    def runtime(name: str, best: float, threads: list[int | None]) -> dict[str, Any]:
        configs = [
            {
                "num_threads": t,
                "by_batch_size": [
                    {"batch_size": 16, "images_per_second": best / (2 if i else 1) * 0.9},
                    {"batch_size": 64, "images_per_second": best / (2 if i else 1)},
                ],
                "best_batch_size": 64,
                "best_images_per_second": best / (2 if i else 1),
            }
            for i, t in enumerate(threads)
        ]
        return {
            "model": "pneumonia-cnn",
            "version": 2,
            "input": [128, 128, 1],
            "runtime": name,
            "source": "model.tflite" if name == "litert" else "saved_model.pb",
            "configs": configs,
            "best_num_threads": threads[0],
            "best_batch_size": 64,
            "best_images_per_second": best,
        }

    record = combine_runtimes(
        [runtime("litert", litert, [2, 1]), runtime("savedmodel", savedmodel, [None])]
    )
    record["round"] = round_index
    return record


def make_results(
    *,
    service_rps: dict[int, float],
    ceiling_rps: float = 1000.0,
    variants: list[dict[str, Any]] | None = None,
    w2_rps_64: float = 1600.0,
    service_p50_1: float = 1.2,
    service_p50_64: float = 20.0,
    service_p99_64: float = 50.0,
    service_cpu_cores: float = 0.9,
    pneumonia16_images: float = 1760.0,
) -> dict[str, Any]:
    """Three rounds: ceiling at `ceiling_rps`, `service` at `service_rps` by connections."""
    variants = variants or [{"name": "service", "env": {}, "cwd": None, "workers": 1}]
    measurements = []
    for r in ROUNDS:
        for c in (1, 16, 64):
            measurements.append(
                point(r, "ceiling", "ceiling", c, ceiling_rps, p50=1.0, cpu_cores=1.0)
            )
            for variant in variants:
                rps = service_rps[c]
                if variant["name"] == "w2" and c == 64:
                    rps = w2_rps_64
                p50 = service_p50_1 if c == 1 else (service_p50_64 if c == 64 else 10.0)
                p99 = service_p99_64 if c == 64 else 2 * p50
                # CPU per request = cores / rps: scaled so it is `service_cpu_cores` / 1000
                cores = service_cpu_cores * rps / ceiling_rps
                measurements.append(
                    point(r, variant["name"], "mnist", c, rps, p50=p50, p99=p99, cpu_cores=cores)
                )
            measurements.append(
                point(r, "service", "pneumonia-16", c, pneumonia16_images / 16, images=16)
            )
    return {
        "meta": {
            "started": "2026-12-01T00:00:00",
            "commit": "abc1234",
            "load_average_before": 0.5,
            "load_average_after": 0.6,
            "options": {
                "rounds": len(ROUNDS),
                "seconds": 10.0,
                "concurrency": [1, 16, 64],
                "variants": variants,
            },
        },
        "measurements": measurements,
        "starts": [
            {
                "round": r,
                "server": "service",
                "ready_seconds": 3.0,
                "rss_ready_mib": 600.0,
                "rss_end_mib": 610.0,
                "processes_at_ready": 1,
            }
            for r in ROUNDS
        ],
        # LiteRT 2,000 images/s, the SavedModel 1,500: the ratio uses 2,000.
        "raw_models": [raw_record(r, 2000.0, 1500.0) for r in ROUNDS],
        "spread": [],
        "long_runs": [],
        "training": {},
    }


def checks_by_name(results: dict[str, Any], variant: str = "service") -> dict[str, Check]:
    _, checks, _ = ratios_and_checks(results)
    return {c.name: c for c in checks[variant]}


def find(checks: dict[str, Check], text: str) -> Check:
    (match,) = [c for name, c in checks.items() if text in name]
    return match


def test_thresholds_meet_at_the_limit_and_not_below() -> None:
    assert at_least("r", 0.85, 0.9).passed is False
    assert at_least("r", 0.95, 0.9).passed is True
    assert at_least("r", 0.9, 0.9).passed is True
    assert at_least("r", None, 0.9).passed is None
    assert at_most("r", 1.6, 1.5).passed is False
    assert at_most("r", 1.4, 1.5).passed is True
    assert at_most("r", None, 1.5).passed is None
    assert "NOT MET" in at_least("r", 0.85, 0.9).line()
    assert "[MET" in at_least("r", 0.95, 0.9).line()


def test_ceiling_ratio_of_0_85_is_not_met_and_0_95_is_met() -> None:
    results = make_results(service_rps={1: 500.0, 16: 850.0, 64: 950.0})
    checks = checks_by_name(results)
    at16 = find(checks, "vs ceiling at 16 connections")
    at64 = find(checks, "vs ceiling at 64 connections")
    assert at16.value == pytest.approx(0.85)
    assert at16.passed is False
    assert at64.value == pytest.approx(0.95)
    assert at64.passed is True
    assert "950 vs ceiling 1,000 req/s" in at64.detail


def test_ratios_pair_rounds_so_a_slow_round_for_both_cancels() -> None:
    results = make_results(service_rps={1: 500.0, 16: 950.0, 64: 950.0})
    for m in results["measurements"]:  # round 1: the machine at half speed for everyone
        if m["round"] == 1 and m["connections"] == 16:
            m["requests"] //= 2
    ratios, _, _ = ratios_and_checks(results)
    assert ratios["service"]["mnist/ceiling@16"]["rounds"] == pytest.approx([0.95] * 3)


def test_workers_target_applies_only_to_variants_with_workers() -> None:
    variants = [
        {"name": "service", "env": {}, "cwd": None, "workers": 1},
        {"name": "w2", "env": {"VISION_SERVING_WORKERS": "2"}, "cwd": None},  # from env
    ]
    results = make_results(
        service_rps={1: 500.0, 16: 950.0, 64: 950.0}, variants=variants, w2_rps_64=1600.0
    )
    service = checks_by_name(results, "service")
    w2 = checks_by_name(results, "w2")
    assert not [name for name in service if "workers" in name]
    workers = find(w2, "with 2 workers vs the single-process ceiling")
    assert workers.value == pytest.approx(1.6)
    assert workers.passed is True
    # w2 is judged against the one-process targets too.
    assert find(w2, "vs ceiling at 64 connections").passed is True
    assert find(w2, "vs ceiling at 16 connections").passed is True

    results = make_results(
        service_rps={1: 500.0, 16: 950.0, 64: 950.0}, variants=variants, w2_rps_64=1400.0
    )
    assert find(checks_by_name(results, "w2"), "workers").passed is False
    _, _, notes = ratios_and_checks(results)
    assert not [n for n in notes if "no variant with workers" in n]


def test_a_run_without_workers_says_the_workers_target_was_not_judged() -> None:
    _, _, notes = ratios_and_checks(make_results(service_rps={1: 1.0, 16: 1.0, 64: 1.0}))
    assert [n for n in notes if "no variant with workers > 1" in n]


def test_variant_workers_prefers_the_recorded_count_then_the_env() -> None:
    assert variant_workers({"name": "a", "workers": 2, "env": {}}) == 2
    assert variant_workers({"name": "a", "env": {"VISION_SERVING_WORKERS": "3"}}) == 3
    assert variant_workers({"name": "a", "env": {}}) == 1
    assert declared_workers({"VISION_SERVING_WORKERS": " 2 "}) == 2
    assert declared_workers({"VISION_SERVING_WORKERS": "two"}) is None
    assert declared_workers({}) is None


def test_a_variants_worker_count_comes_from_its_own_settings() -> None:
    count, source = resolve_workers(ServiceVariant("w2", {"VISION_SERVING_WORKERS": "2"}))
    assert (count, source) == (2, "the variant's Settings")


@pytest.mark.parametrize(("p50_ms", "met"), [(1.4, True), (1.6, False)])
def test_p50_at_one_connection_is_judged_against_the_ceilings_same_round(
    p50_ms: float, met: bool
) -> None:
    results = make_results(service_rps={1: 500.0, 16: 950.0, 64: 950.0}, service_p50_1=p50_ms)
    check = find(checks_by_name(results), "p50 at 1 connection")
    assert check.value == pytest.approx(p50_ms)  # the ceiling's p50 is 1 ms
    assert check.passed is met


@pytest.mark.parametrize(("p99_ms", "met"), [(58.0, True), (62.0, False)])
def test_p99_at_64_is_judged_against_its_own_p50(p99_ms: float, met: bool) -> None:
    results = make_results(
        service_rps={1: 500.0, 16: 950.0, 64: 950.0}, service_p50_64=20.0, service_p99_64=p99_ms
    )
    check = find(checks_by_name(results), "p99 at 64 connections")
    assert check.value == pytest.approx(p99_ms / 20.0)
    assert check.passed is met


@pytest.mark.parametrize(("cpu", "met"), [(0.95, True), (1.1, False)])
def test_cpu_per_request_is_judged_against_the_ceilings(cpu: float, met: bool) -> None:
    results = make_results(service_rps={1: 500.0, 16: 950.0, 64: 950.0}, service_cpu_cores=cpu)
    checks = checks_by_name(results)
    for c in ("1 connection ", "16 connections", "64 connections"):
        check = find(checks, f"CPU per request vs the ceiling's at {c}")
        assert check.value == pytest.approx(cpu)
        assert check.passed is met


def test_raw_ratio_uses_the_fastest_runtime_of_each_round() -> None:
    results = make_results(service_rps={1: 1.0, 16: 1.0, 64: 1.0}, pneumonia16_images=1760.0)
    check = find(checks_by_name(results), "pneumonia 16-image upload")
    assert check.value == pytest.approx(0.88)  # 1,760 / LiteRT's 2,000, not / 1,500
    assert check.passed is True
    assert "litert 2 thr. b64" in check.detail
    ratios, _, _ = ratios_and_checks(results)
    assert ratios["service"]["pneumonia-16 images/s / raw savedmodel best@16"][
        "median"
    ] == pytest.approx(1760 / 1500)
    results = make_results(service_rps={1: 1.0, 16: 1.0, 64: 1.0}, pneumonia16_images=1500.0)
    assert find(checks_by_name(results), "pneumonia 16-image").passed is False


def test_combined_raw_record_names_the_best_runtime_and_thread_count() -> None:
    record = raw_record(0, litert=900.0, savedmodel=1200.0)
    assert record["best_runtime"] == "savedmodel"
    assert record["best_images_per_second"] == 1200.0
    assert record["best_num_threads"] is None
    record = raw_record(0, litert=2000.0, savedmodel=1200.0)
    assert (record["best_runtime"], record["best_num_threads"]) == ("litert", 2)
    assert record["by_batch_size"][-1] == {"batch_size": 64, "images_per_second": 2000.0}
    with pytest.raises(ValueError, match="no runtime"):
        combine_runtimes([])


def test_litert_model_is_found_through_the_cards_artifacts(tmp_path: Path) -> None:
    card = {"artifacts": {"litert_model": "other.tflite"}}
    assert litert_file(tmp_path, card) == tmp_path / "other.tflite"
    assert litert_file(tmp_path, {"artifacts": {}}) == tmp_path / "model.tflite"


def test_spread_is_the_farthest_point_from_the_median() -> None:
    stats = spread_stats([100.0, 110.0, 90.0, 105.0, 95.0, 100.0])
    assert stats is not None
    assert (stats["min"], stats["median"], stats["max"]) == (90.0, 100.0, 110.0)
    assert stats["max_deviation_pct"] == pytest.approx(10.0)
    wide = spread_stats([100.0, 100.0, 100.0, 100.0, 80.0, 120.0])
    assert wide is not None and wide["max_deviation_pct"] == pytest.approx(20.0)
    assert spread_stats([]) is None


def test_spread_is_judged_for_the_service_and_the_ceiling() -> None:
    results = make_results(service_rps={1: 1.0, 16: 1.0, 64: 1.0})

    def entry(server: str, workload: str, rates: list[float]) -> dict[str, Any]:
        points = [point(0, server, workload, 16, r) for r in rates]
        return {
            "server": server,
            "workload": workload,
            "connections": 16,
            "seconds": 5.0,
            "points": points,
        }

    results["spread"] = [
        entry("ceiling", "ceiling", [1000, 1050, 950, 1000, 1020, 990]),  # 5%
        entry("service", "mnist", [700, 400, 700, 720, 690, 710]),  # 43%
    ]
    _, checks, _ = ratios_and_checks(results)
    (ceiling,) = checks["ceiling"]
    assert ceiling.passed is True
    assert ceiling.value == pytest.approx(5.0)
    service = find({c.name: c for c in checks["service"]}, "spread")
    assert service.passed is False
    assert service.value is not None and service.value > TARGET_SPREAD_PCT
    assert "min 400 / median 700 / max 720" in service.detail


def test_memory_after_each_variants_long_run_is_reported_and_judged() -> None:
    results = make_results(service_rps={1: 1.0, 16: 1.0, 64: 1.0})
    flat = [(float(t), 600.0 + (5.0 if t > 2 else 0.0)) for t in range(100)]
    results["long_runs"] = [
        {
            "server": "service",
            "mix": "9:1",
            "connections": 64,
            "requests": 100_000,
            "seconds": 100.0,
            "requests_per_second": 1000.0,
            "errors": {"status": 0},
            "latency_ms": {"p50": 1.0},
            "rss_samples_mib": flat,
        }
    ]
    checks = checks_by_name(results)
    growth = find(checks, "RSS growth")
    assert growth.passed is True
    assert growth.value == pytest.approx(0.0)
    assert "600 MiB at ready, 605 MiB after 100,000 requests (+5 MiB" in growth.detail
    assert find(checks, "long run: errors").passed is True
    summary = summarise(results)
    assert summary["memory"]["service"]["growth_mib"] == pytest.approx(5.0)


def test_the_report_renders_every_section() -> None:
    results = make_results(service_rps={1: 500.0, 16: 950.0, 64: 850.0})
    results["summary"] = summarise(results)
    text = render(results)
    assert "Targets (issue 14):" in text
    assert "litert: best 2,000" in text
    assert "savedmodel: best 1,500" in text
    assert "2 threads: 16:1800  64:2000" in text
    assert "[NOT MET] mnist req/s vs ceiling at 64 connections" in text
    assert "[MET    ] mnist req/s vs ceiling at 16 connections" in text
    json.dumps(results)  # the summary is plain JSON


def test_a_run_saved_before_litert_and_spread_still_reports() -> None:
    """`--report` on an older JSON: raw = the SavedModel only, one `long_run`, no spread."""
    results = make_results(service_rps={1: 500.0, 16: 950.0, 64: 950.0})
    old = copy.deepcopy(results)
    old["raw_models"] = [
        {
            "model": "pneumonia-cnn",
            "version": 1,
            "input": [128, 128, 1],
            "by_batch_size": [{"batch_size": 64, "images_per_second": 2000.0}],
            "best_batch_size": 64,
            "best_images_per_second": 2000.0,
            "round": r,
        }
        for r in ROUNDS
    ]
    del old["spread"], old["long_runs"]
    for start in old["starts"]:
        del start["processes_at_ready"]
    old["long_run"] = None
    old["meta"]["options"]["variants"] = [{"name": "service", "env": {}, "cwd": None}]
    old["summary"] = summarise(old)
    text = render(old)
    assert "savedmodel: best 2,000" in text
    check = find(checks_by_name(old), "pneumonia 16-image upload")
    assert check.value == pytest.approx(0.88)
