"""The benchmark harness's own logic: bodies, wrk output, variants, ratios, memory trend.

No server is started and nothing is timed here; `python -m bench` does that.
"""

from __future__ import annotations

import email.parser
import email.policy
from pathlib import Path

import pytest

from bench.payloads import encode_multipart
from bench.plan import ServiceVariant
from bench.report import growth_per_100k, ok_rate, paired_ratio, summarise_measurements
from bench.wrk import Target, parse_wrk_output

WRK_STDOUT = """Running 10s test @ http://127.0.0.1:8000/upload
  1 threads and 16 connections
BENCH_JSON {"requests": 12000, "duration_us": 10000000, "bytes": 5, "errors": {"connect": 0, \
"read": 1, "write": 0, "status": 2, "timeout": 0}, "latency_us": {"p50": 1500, "p90": 2500, \
"p99": 9000, "mean": 1700.5, "max": 12000}}
"""


def test_multipart_body_holds_each_file_intact() -> None:
    files = [
        ("a.png", b"\x89PNG\r\n\x1a\n\x00\xff", "image/png"),
        ("b.jpeg", b"\xff\xd8", "image/jpeg"),
    ]
    body, content_type = encode_multipart(files)
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    parts = list(message.iter_parts())
    assert [p.get_filename() for p in parts] == ["a.png", "b.jpeg"]
    assert [p.get_content_type() for p in parts] == ["image/png", "image/jpeg"]
    assert [p.get_payload(decode=True) for p in parts] == [data for _, data, _ in files]
    assert all(p.get_param("name", header="content-disposition") == "files" for p in parts)


def test_wrk_summary_is_read_from_the_lua_line() -> None:
    result = parse_wrk_output(WRK_STDOUT)
    assert result.requests == 12000
    assert result.requests_per_second == pytest.approx(1200)
    assert result.error_count == 3
    assert result.latency_ms["p50"] == pytest.approx(1.5)
    assert result.latency_ms["p99"] == pytest.approx(9.0)


def test_wrk_without_summary_is_an_error_with_its_output() -> None:
    with pytest.raises(RuntimeError, match="cannot open"):
        parse_wrk_output("", "multipart.lua: cannot open /missing", 1)


def test_target_lists_one_request_per_line(tmp_path: Path) -> None:
    from bench.payloads import Payload

    payload = Payload("digit", tmp_path / "d.body", "multipart/form-data; boundary=x", 1, 3, "")
    target = Target((("/a", payload), ("/b", payload)))
    lines = target.env().splitlines()
    assert lines == [
        f"/a|{tmp_path / 'd.body'}|multipart/form-data; boundary=x",
        f"/b|{tmp_path / 'd.body'}|multipart/form-data; boundary=x",
    ]


def test_service_variant_parses_env_and_cwd() -> None:
    variant = ServiceVariant.parse("wait0:VISION_SERVING_MAX_BATCH_WAIT_MS=0,cwd=/tmp/before")
    assert variant.name == "wait0"
    assert variant.env == {"VISION_SERVING_MAX_BATCH_WAIT_MS": "0"}
    assert variant.cwd == "/tmp/before"
    assert ServiceVariant.parse("service") == ServiceVariant("service")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        ServiceVariant.parse("bad:novalue")


def test_ratios_pair_rounds_and_take_the_median() -> None:
    service = {0: 900.0, 1: 500.0, 2: 1000.0}
    ceiling = {0: 1000.0, 1: 1000.0, 2: 1000.0, 3: 50.0}  # round 3 has no partner
    median, ratios = paired_ratio(service, ceiling)
    assert ratios == [0.9, 0.5, 1.0]
    assert median == 0.9
    assert paired_ratio({}, ceiling) == (None, [])


def test_memory_growth_is_the_slope_of_the_second_half() -> None:
    flat_then_growing = [(float(t), 500.0) for t in range(10)] + [
        (float(t), 500.0 + (t - 10)) for t in range(10, 20)
    ]
    # 1 MiB per second at 1,000 req/s: 100 MiB per 100k requests.
    assert growth_per_100k(flat_then_growing, 1000.0) == pytest.approx(100.0)
    assert growth_per_100k([(float(t), 600.0) for t in range(20)], 1000.0) == 0.0
    assert growth_per_100k([(0.0, 1.0)], 1000.0) is None


def test_table_rows_are_medians_over_rounds_with_errors_summed() -> None:
    def run(round_index: int, rps: float, errors: int) -> dict[str, object]:
        return {
            "round": round_index,
            "server": "service",
            "workload": "mnist",
            "connections": 16,
            "requests_per_second": rps,
            "images_per_second": rps,
            "latency_ms": {"p50": rps / 100, "p90": 1.0, "p99": 2.0},
            "errors": {"read": errors, "status": 0},
            "requests": int(rps * 10),
            "seconds": 10.0,
            "images_per_request": 1,
            "cpu_cores": 1.0,
            "rss_peak_mib": 500.0 + round_index,
        }

    (row,) = summarise_measurements([run(0, 1000, 0), run(1, 800, 2), run(2, 1200, 1)])
    assert row["requests_per_second"] == 1000
    assert row["p50_ms"] == 10
    assert row["errors"] == 3
    assert row["rss_peak_mib"] == 502
    assert row["cpu_ms_per_request"] == pytest.approx(1.0)


def test_throughput_counts_only_successful_responses() -> None:
    # 1,000 answers in 10 s, 400 of them quick 503s: 60 successful requests per second.
    run = {"requests": 1000, "seconds": 10.0, "errors": {"status": 400, "read": 3}}
    assert ok_rate(run) == 60.0
