"""The payload log: sampling, record fields, rotation, stored inputs, drops, shutdown."""

from __future__ import annotations

import asyncio
import base64
import errno
import hashlib
import json
import os
import random
import stat
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from app.contract.images import Upload
from app.main import create_app
from app.payload_log import (
    FileSink,
    InputStore,
    PayloadLog,
    PendingRecord,
    inference_protocol,
)
from app.settings import Settings
from tests.app.images import gray_jpeg, png
from tests.app.tiny_models import TINY_XRAY, copy_with_operating_point

pytestmark = pytest.mark.anyio

PREDICT = "/api/v1/models/tiny-digits/predict"
DIGITS = [str(digit) for digit in range(10)]


class ListSink:
    """Keeps the lines; `delay` makes each write slow, `error` makes it fail."""

    def __init__(self, delay: float = 0.0, error: OSError | None = None) -> None:
        self.lines: list[str] = []
        self.delay = delay
        self.error = error
        self.release = threading.Event()  # with `hold`: no write ends before it is set
        self.hold = False
        self.closed = False

    def open(self) -> None:
        pass

    def write(self, line: str) -> None:
        if self.hold:
            self.release.wait(30)
        time.sleep(self.delay)
        if self.error is not None:
            raise self.error
        self.lines.append(line)

    def close(self) -> None:
        self.closed = True

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]


def counting_drops() -> tuple[Counter[str], Callable[[str], None]]:
    drops: Counter[str] = Counter()
    return drops, lambda reason: drops.update([reason])


def pending(data: bytes = b"\x89PNG...", *, answered: bool = True) -> PendingRecord:
    """A record as the request path leaves it: one upload, answered with a 3-class row."""
    record = PendingRecord("native", "req-1", time.time(), time.perf_counter())
    record.model, record.version = "m", 1
    record.inputs = [Upload("a.png", data)]
    if answered:
        record.probabilities = np.array([[0.2, 0.7, 0.1]], dtype=np.float32)
        record.class_names = ["a", "b", "c"]
        record.positions = [0]
    record.status, record.latency_ms = 200, 1.5
    return record


# Sampling --------------------------------------------------------------------------------


@pytest.mark.parametrize(("rate", "expected"), [(0.0, 0), (1.0, 2000)])
def test_rate_0_samples_none_and_rate_1_all(rate: float, expected: int) -> None:
    log = PayloadLog(ListSink(), sample_rate=rate, random_source=random.Random(1).random)
    assert sum(log.sampled() for _ in range(2000)) == expected


def test_rate_one_half_samples_about_half() -> None:
    log = PayloadLog(ListSink(), sample_rate=0.5, random_source=random.Random(7).random)
    sampled = sum(log.sampled() for _ in range(2000))
    # Binomial(2000, 0.5): standard deviation ~22; the seed makes it exact anyway.
    assert 900 <= sampled <= 1100


@pytest.mark.parametrize(
    ("path", "protocol"),
    [
        ("/api/v1/models/mnist-mlp/predict", "native"),
        ("/api/v1/models/mnist-mlp/versions/3/probabilities", "native"),
        ("/v1/models/mnist-mlp:predict", "tfserving"),
        ("/v1/models/mnist-mlp/versions/3:classify", "tfserving"),
        ("/v2/models/mnist-mlp/infer", "v2"),
        ("/v2/models/mnist-mlp/versions/3/infer", "v2"),
        ("/api/v1/models/mnist-mlp/evaluate", None),
        ("/v1/models/mnist-mlp/metadata", None),
        ("/v2/models/mnist-mlp/ready", None),
        ("/api/v1/models/mnist-mlp/predict/extra", None),
    ],
)
def test_only_inference_paths_are_recorded(path: str, protocol: str | None) -> None:
    assert inference_protocol({"path": path, "root_path": ""}) == protocol
    assert inference_protocol({"path": f"/svc{path}", "root_path": "/svc"}) == protocol


# Record building, queueing and the writer thread -------------------------------------------


def test_a_record_is_one_json_line_with_digest_shape_and_answer() -> None:
    sink = ListSink()
    log = PayloadLog(sink, top_k=2)
    log.start()
    data = png(3)
    log.submit(pending(data))
    log.close()
    [record] = sink.records()
    [entry] = record["inputs"]
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert entry["bytes"] == len(data)
    assert entry["shape"] == [28, 28, 1]
    assert entry["top_k"] == [
        {"label": "b", "probability": 0.7},
        {"label": "a", "probability": 0.2},
    ]
    assert entry["probabilities"] == [0.2, 0.7, 0.1]
    assert record["request_id"] == "req-1"
    assert record["class_names"] == ["a", "b", "c"]
    assert sink.closed


def test_a_full_queue_drops_and_counts_without_waiting() -> None:
    sink = ListSink()
    sink.hold = True  # the writer is stuck on its first record
    drops, count_drop = counting_drops()
    log = PayloadLog(sink, count_drop=count_drop, max_pending_records=2)
    log.start()
    started = time.perf_counter()
    for _ in range(5):
        log.submit(pending())
    submitting = time.perf_counter() - started
    sink.release.set()
    log.close()
    assert drops == {"queue_full": 3}  # two fit: the one being written and one queued
    assert len(sink.lines) == 2
    assert submitting < 0.05, "submitting waited for the slow writer"


def test_the_queue_also_bounds_the_bytes_it_holds() -> None:
    sink = ListSink()
    sink.hold = True
    drops, count_drop = counting_drops()
    log = PayloadLog(sink, count_drop=count_drop, max_pending_bytes=1000)
    log.start()
    log.submit(pending(b"x" * 600))
    log.submit(pending(b"y" * 600))  # 1,200 bytes held: over the bound
    log.submit(pending(b"z" * 300))
    sink.release.set()
    log.close()
    assert drops == {"queue_full": 1}
    assert [r["inputs"][0]["bytes"] for r in sink.records()] == [600, 300]


def test_a_full_disk_drops_and_counts_and_the_writer_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = ListSink(error=OSError(errno.ENOSPC, "No space left on device"))
    drops, count_drop = counting_drops()
    log = PayloadLog(sink, count_drop=count_drop)
    log.start()
    for _ in range(3):
        log.submit(pending())
    deadline = time.monotonic() + 10
    while drops["write_error"] < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    sink.error = None  # space again
    log.submit(pending())
    log.close()
    assert drops == {"write_error": 3}
    assert len(sink.lines) == 1
    warnings = [r.getMessage() for r in caplog.records if r.name == "app.payload_log"]
    assert len(warnings) == 1, warnings  # one a minute, not one per record
    assert "No space left on device" in warnings[0]


def test_close_writes_what_is_queued() -> None:
    sink = ListSink(delay=0.01)
    log = PayloadLog(sink)
    log.start()
    for _ in range(20):
        log.submit(pending())
    log.close()
    assert len(sink.lines) == 20


def test_close_gives_up_on_a_stuck_writer_in_time_and_counts_what_is_lost() -> None:
    sink = ListSink()
    sink.hold = True
    drops, count_drop = counting_drops()
    log = PayloadLog(sink, count_drop=count_drop)
    log.start()
    for _ in range(4):
        log.submit(pending())
    started = time.monotonic()
    log.close(timeout=0.2)
    took = time.monotonic() - started
    log.submit(pending())  # after shutdown
    sink.release.set()
    log._thread.join(5)  # the writer finishes the record it was writing, then stops
    assert took < 2
    assert not log._thread.is_alive()
    # The first record was being written: written, not counted. The 3 behind it were
    # taken off the queue and counted, as was the one after shutdown; none is both.
    assert len(sink.lines) == 1
    assert drops == {"shutdown": 4}


def test_a_record_submitted_while_the_log_closes_is_written_or_counted() -> None:
    """A record that passed `submit`'s check as `close` began must not land behind the
    writer's stop marker, where it would be neither written nor counted."""
    sink = ListSink()
    drops, count_drop = counting_drops()
    log = PayloadLog(sink, count_drop=count_drop)
    log.start()
    real_queue = log._queue
    closing = threading.Thread(target=log.close)

    class CloseDuringPut:
        """Starts `close` just as the record is put, and lets it run first if it can."""

        def put(self, item: object) -> None:
            if isinstance(item, tuple) and closing.ident is None:  # the record, once
                closing.start()
                closing.join(0.5)  # the fix: close waits for the lock `submit` holds
            real_queue.put(item)

        def __getattr__(self, name: str) -> Any:
            return getattr(real_queue, name)

    log._queue = CloseDuringPut()  # type: ignore[assignment]
    log.submit(pending())
    closing.join(10)
    assert not closing.is_alive()
    assert len(sink.lines) + drops["shutdown"] == 1


def test_records_queued_before_a_start_that_never_came_are_counted_at_close() -> None:
    sink = ListSink()
    drops, count_drop = counting_drops()
    log = PayloadLog(sink, count_drop=count_drop)
    for _ in range(3):
        log.submit(pending())
    log.close()
    assert drops == {"shutdown": 3}
    assert sink.closed and sink.lines == []
    assert log._queue.empty()


# The file sink ---------------------------------------------------------------------------


def test_the_file_rotates_and_the_total_stays_bounded(tmp_path: Path) -> None:
    path = tmp_path / "payload.jsonl"
    max_bytes, backups = 2000, 2
    log = PayloadLog(FileSink(path, max_bytes, backups))
    log.start()
    for request in range(100):
        record = pending()
        record.request_id = f"req-{request}"
        log.submit(record)
    log.close()
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["payload.jsonl", "payload.jsonl.1", "payload.jsonl.2"]
    assert all(f.stat().st_size <= max_bytes for f in files)
    assert sum(f.stat().st_size for f in files) <= (backups + 1) * max_bytes
    kept = [json.loads(line) for f in reversed(files) for line in f.read_text().splitlines()]
    ids = [record["request_id"] for record in kept]
    assert ids[-1] == "req-99"  # the newest are kept, in order, the oldest rotated away
    assert ids == [f"req-{n}" for n in range(100 - len(ids), 100)]


def test_a_full_disk_under_the_file_sink_loses_only_the_records_it_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "payload.jsonl"
    disk_full = {"now": False}

    class FillingFile:
        """A file whose writes fail with ENOSPC while the disk is full."""

        def __init__(self, real: Any) -> None:
            self.real = real

        def write(self, text: str) -> int:
            if disk_full["now"]:
                raise OSError(errno.ENOSPC, "No space left on device")
            return int(self.real.write(text))

        def __getattr__(self, name: str) -> Any:
            return getattr(self.real, name)

    from app import payload_log

    original_open = payload_log._RaisingRotatingFileHandler._open
    monkeypatch.setattr(
        payload_log._RaisingRotatingFileHandler,
        "_open",
        lambda self: FillingFile(original_open(self)),
    )
    sink = FileSink(path, 1_000_000, 1)
    sink.open()
    sink.write('{"n": 1}')
    disk_full["now"] = True
    with pytest.raises(OSError, match="No space left"):
        sink.write('{"n": 2}')
    disk_full["now"] = False
    sink.write('{"n": 3}')
    sink.close()
    assert [json.loads(line)["n"] for line in path.read_text().splitlines()] == [1, 3]


@pytest.fixture
def open_umask() -> Any:
    """The usual umask (022: files readable by everyone) for the test, whatever ran before."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("open_umask")
def test_log_files_and_stored_inputs_are_the_service_users_alone(tmp_path: Path) -> None:
    path = tmp_path / "payload.jsonl"
    folder = tmp_path / "deep" / "inputs"
    log = PayloadLog(FileSink(path, 600, 2), inputs=InputStore(folder, max_bytes=10_000))
    log.start()
    for request in range(10):  # several rotations
        log.submit(pending(f"input {request}".encode()))
    log.close()
    files = sorted(tmp_path.glob("payload.jsonl*"))
    assert [f.name for f in files] == ["payload.jsonl", "payload.jsonl.1", "payload.jsonl.2"]
    assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
    assert mode(folder) == 0o700
    stored = list(folder.iterdir())
    assert len(stored) == 10
    assert {f.name: mode(f) for f in stored} == {f.name: 0o600 for f in stored}


# Stored inputs -------------------------------------------------------------------------


def test_inputs_are_stored_only_when_asked_named_by_digest_and_bounded(tmp_path: Path) -> None:
    folder = tmp_path / "inputs"
    (folder).mkdir()
    (folder / "older-file").write_bytes(b"o" * 100)  # counts towards the bound
    drops, count_drop = counting_drops()
    sink = ListSink()
    log = PayloadLog(sink, inputs=InputStore(folder, max_bytes=400), count_drop=count_drop)
    log.start()
    first, second, third = b"1" * 150, b"2" * 150, b"3" * 150
    for data in (first, first, second, third):
        log.submit(pending(data, answered=False))
    log.close()
    stored = [entry["stored"] for r in sink.records() for entry in r["inputs"]]
    assert stored == [True, True, True, False]  # 100 + 150 + 150 = 400: the third is over
    digests = {hashlib.sha256(data).hexdigest(): data for data in (first, second)}
    kept = {f.name: f.read_bytes() for f in folder.iterdir() if f.name != "older-file"}
    assert kept == digests
    assert drops == {"inputs_full": 1}


def test_deleted_inputs_free_the_bound_at_the_next_count_of_the_folder(tmp_path: Path) -> None:
    now = [0.0]
    store = InputStore(tmp_path, max_bytes=300, rescan_seconds=60, clock=lambda: now[0])
    store.open()
    first, second, third = b"1" * 150, b"2" * 150, b"3" * 150
    digest = {data: hashlib.sha256(data).hexdigest() for data in (first, second, third)}
    assert store.store(digest[first], first) and store.store(digest[second], second)
    assert not store.store(digest[third], third)  # full
    (tmp_path / digest[first]).unlink()  # the operator's retention policy
    now[0] = 30.0
    assert not store.store(digest[third], third)  # counted again at most once a minute
    now[0] = 61.0
    assert store.store(digest[third], third)  # the deleted file's bytes are free again
    assert store.used_bytes == 300 == sum(f.stat().st_size for f in tmp_path.iterdir())
    # An input deleted and then sent again is counted once, not twice.
    (tmp_path / digest[second]).unlink()
    now[0] = 200.0
    assert store.store(digest[second], second)
    assert store.used_bytes == 300 == sum(f.stat().st_size for f in tmp_path.iterdir())


def test_without_an_input_folder_records_say_nothing_of_storing() -> None:
    sink = ListSink()
    log = PayloadLog(sink)
    log.start()
    log.submit(pending())
    log.close()
    assert "stored" not in sink.records()[0]["inputs"][0]


def test_a_tensor_input_is_stored_as_its_float32_bytes(tmp_path: Path) -> None:
    sink = ListSink()
    log = PayloadLog(sink, inputs=InputStore(tmp_path, max_bytes=10_000))
    log.start()
    record = pending()
    pixels = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4, 1)
    record.inputs = pixels
    record.probabilities = np.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]], dtype=np.float32)
    record.positions = [0, 1]
    log.submit(record)
    log.close()
    entries = sink.records()[0]["inputs"]
    for row, entry in zip(pixels, entries, strict=True):
        raw = row.astype("<f4").tobytes()
        assert entry["sha256"] == hashlib.sha256(raw).hexdigest()
        assert (entry["kind"], entry["bytes"], entry["shape"]) == ("tensor", 64, [4, 4, 1])
        assert (tmp_path / entry["sha256"]).read_bytes() == raw
    assert entries[1]["top_k"][0] == {"label": "c", "probability": 0.8}


# Through the app ------------------------------------------------------------------------


@asynccontextmanager
async def serving_with_log(
    tiny_model_dir: Path, runtime_cache_dir: Path, sink: ListSink | None = None, **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, PayloadLog]]:
    """The app with a payload log (to `sink`, when given); the log is closed on exit."""
    values: dict[str, Any] = {
        "model_dir": tiny_model_dir,
        "runtime_cache_dir": runtime_cache_dir,
        "payload_log": "stdout",
        **settings,
    }
    app = create_app(Settings(**values))
    payload_log: PayloadLog = app.state.payload_log
    if sink is not None:
        payload_log.sink = sink
    async with app.router.lifespan_context(app):
        await app.state.dataplane.repository.loaded.wait()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client, payload_log


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_records_of_each_protocol_hold_the_fields(
    tiny_model_dir: Path, runtime_cache_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "payload.jsonl"
    good, bad = png(1), b"not an image at all"
    pixels = np.random.default_rng(0).uniform(0, 255, size=(28, 28)).astype(np.float32)
    async with serving_with_log(tiny_model_dir, runtime_cache_dir, payload_log=str(path)) as (
        client,
        _,
    ):
        native = await client.post(
            PREDICT,
            files=[("files", ("g.png", good, "image/png")), ("files", ("b.png", bad, "image/png"))],
            headers={"X-Request-ID": "native-1"},
        )
        tfserving = await client.post(
            "/v1/models/tiny-digits:predict", json={"instances": [pixels.tolist()]}
        )
        v2 = await client.post(
            "/v2/models/tiny-digits/infer",
            json={
                "inputs": [
                    {"name": "pixels", "shape": [1], "datatype": "BYTES", "data": [b64(good)]}
                ]
            },
        )
        await client.get("/api/v1/models")  # not inference: not recorded
    assert native.status_code == tfserving.status_code == v2.status_code == 200
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["protocol"] for r in records] == ["native", "tfserving", "v2"]
    for record, response in zip(records, (native, tfserving, v2), strict=True):
        assert record["request_id"] == response.headers["x-request-id"]
        assert (record["model"], record["version"], record["status"]) == ("tiny-digits", 1, 200)
        assert record["class_names"] == DIGITS
        assert record["latency_ms"] > 0
        logged_at = datetime.fromisoformat(record["time"].replace("Z", "+00:00"))
        assert abs((datetime.now(UTC) - logged_at).total_seconds()) < 120

    answered, unreadable = records[0]["inputs"]
    assert answered["sha256"] == hashlib.sha256(good).hexdigest()
    assert (answered["kind"], answered["bytes"], answered["shape"]) == (
        "image",
        len(good),
        [28, 28, 1],
    )
    prediction = native.json()["predictions"][0]
    assert [c["label"] for c in answered["top_k"]] == [c["label"] for c in prediction["top_k"]]
    assert [c["probability"] for c in answered["top_k"]] == pytest.approx(
        [c["probability"] for c in prediction["top_k"]], abs=1e-6
    )
    assert sum(answered["probabilities"]) == pytest.approx(1, abs=1e-4)
    assert unreadable["sha256"] == hashlib.sha256(bad).hexdigest()
    assert (unreadable["shape"], unreadable["error"]) == (None, "unsupported_media_type")
    assert "probabilities" not in unreadable

    [tensor] = records[1]["inputs"]
    assert tensor["sha256"] == hashlib.sha256(pixels.astype("<f4").tobytes()).hexdigest()
    assert (tensor["kind"], tensor["bytes"], tensor["shape"]) == (
        "tensor",
        28 * 28 * 4,
        [28, 28, 1],
    )
    assert tensor["probabilities"] == pytest.approx(tfserving.json()["predictions"][0], abs=1e-6)

    [image] = records[2]["inputs"]
    assert image["sha256"] == answered["sha256"]  # the same image, whatever the protocol
    assert image["probabilities"] == pytest.approx(answered["probabilities"], abs=1e-6)


async def test_a_request_that_fails_after_reaching_the_model_is_recorded_with_its_status(
    tiny_model_dir: Path, runtime_cache_dir: Path
) -> None:
    sink = ListSink()
    async with serving_with_log(tiny_model_dir, runtime_cache_dir, sink) as (client, _):
        refused = await client.post(
            "/v1/models/tiny-digits:predict", json={"instances": [{"b64": b64(b"text")}]}
        )
        before_the_model = await client.post("/v1/models/tiny-digits:predict", content=b"{")
    assert (refused.status_code, before_the_model.status_code) == (400, 400)
    [record] = sink.records()  # the malformed body never reached a model
    assert record["status"] == 400
    assert record["request_id"] == refused.headers["x-request-id"]
    assert record["inputs"][0]["sha256"] == hashlib.sha256(b"text").hexdigest()


@pytest.mark.parametrize(("rate", "recorded"), [(0.0, 0), (1.0, 4)])
async def test_the_rate_applies_to_requests_and_is_drawn_once_per_inference_request(
    tiny_model_dir: Path, runtime_cache_dir: Path, rate: float, recorded: int
) -> None:
    sink = ListSink()
    draws = []

    def drawing() -> float:
        draws.append(1)
        return 0.5

    async with serving_with_log(
        tiny_model_dir, runtime_cache_dir, sink, payload_log_sample=rate
    ) as (client, payload_log):
        payload_log.random_source = drawing
        for _ in range(4):
            assert (
                await client.post(PREDICT, files={"files": ("d.png", png())})
            ).status_code == 200
        await client.get("/healthz")
        await client.post(
            "/api/v1/models/tiny-digits/evaluate",
            files=[("files", ("d.png", png(), "image/png"))],
            data={"labels": "1"},
        )
    assert len(draws) == 4  # predict only: not health, not evaluate
    assert len(sink.lines) == recorded


async def test_requests_are_answered_200_while_the_disk_is_full_and_drops_show_on_metrics(
    tiny_model_dir: Path, runtime_cache_dir: Path
) -> None:
    sink = ListSink(error=OSError(errno.ENOSPC, "No space left on device"))
    async with serving_with_log(tiny_model_dir, runtime_cache_dir, sink) as (client, _):
        answers = [
            (await client.post(PREDICT, files={"files": ("x.jpg", gray_jpeg(), "image/jpeg")}))
            for _ in range(3)
        ]
        deadline = time.monotonic() + 10
        metrics = ""
        while time.monotonic() < deadline:
            metrics = (await client.get("/metrics")).text
            if 'vision_serving_payload_log_dropped_total{reason="write_error"} 3.0' in metrics:
                break
            await asyncio.sleep(0.02)
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert 'vision_serving_payload_log_dropped_total{reason="write_error"} 3.0' in metrics
    assert 'vision_serving_payload_log_dropped_total{reason="queue_full"} 0.0' in metrics


async def test_a_slow_writer_never_slows_a_request(
    tiny_model_dir: Path, runtime_cache_dir: Path
) -> None:
    sink = ListSink()
    sink.hold = True  # the writer never finishes while requests are served
    async with serving_with_log(tiny_model_dir, runtime_cache_dir, sink) as (client, payload_log):
        payload_log.max_pending_records = 2
        started = time.perf_counter()
        answers = [await client.post(PREDICT, files={"files": ("d.png", png())}) for _ in range(6)]
        took = time.perf_counter() - started
        metrics = (await client.get("/metrics")).text
        sink.release.set()
    assert [a.status_code for a in answers] == [200] * 6
    assert took < 5
    assert 'vision_serving_payload_log_dropped_total{reason="queue_full"} 4.0' in metrics


async def test_the_recorded_top_label_is_the_label_the_client_got(
    model_dir_copy: Path, runtime_cache_dir: Path
) -> None:
    """With an operating point the label can be the less likely class; the record's first
    class must be that label, as the answer's is."""
    picture = {"files": ("x.png", png(seed=5, size=32), "image/png")}
    url = f"/api/v1/models/{TINY_XRAY}/predict"
    async with serving_with_log(model_dir_copy, runtime_cache_dir, ListSink()) as (client, _):
        [answer] = (await client.post(url, files=picture)).json()["predictions"]
    less_likely = min(answer["top_k"], key=lambda c: c["probability"])
    threshold = less_likely["probability"] * 0.9  # so the less likely class is the label
    copy_with_operating_point(
        model_dir_copy, TINY_XRAY, "tiny-xray-point", threshold, less_likely["label"]
    )
    sink = ListSink()
    async with serving_with_log(model_dir_copy, runtime_cache_dir, sink) as (client, _):
        url = "/api/v1/models/tiny-xray-point/predict"
        [answer] = (await client.post(url, files=picture)).json()["predictions"]
    assert answer["label"] == less_likely["label"]
    [entry] = sink.records()[0]["inputs"]
    assert [c["label"] for c in entry["top_k"]] == [c["label"] for c in answer["top_k"]]
    assert entry["top_k"][0]["label"] == less_likely["label"]


async def test_a_failed_start_up_closes_the_log(
    tiny_model_dir: Path, runtime_cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_device(*args: object) -> None:
        raise RuntimeError("no such device")

    monkeypatch.setattr("app.main.configure_devices", no_device)
    settings = Settings(
        model_dir=tiny_model_dir, runtime_cache_dir=runtime_cache_dir, payload_log="stdout"
    )
    app = create_app(settings)
    payload_log: PayloadLog = app.state.payload_log
    sink = payload_log.sink = ListSink()
    with pytest.raises(RuntimeError, match="no such device"):
        async with app.router.lifespan_context(app):
            pass
    assert not payload_log._thread.is_alive()  # no writer thread left behind
    assert sink.closed


def test_an_unusable_destination_is_refused_with_how_to_fix_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist; create it"):
        Settings(payload_log=str(tmp_path / "missing" / "payload.jsonl"))
    with pytest.raises(ValueError, match="is a folder: give a file path"):
        Settings(payload_log=str(tmp_path))
    with pytest.raises(ValueError, match="PAYLOAD_LOG is not set"):
        Settings(payload_log_inputs=tmp_path)
    with pytest.raises(ValueError, match="rotate the same file"):
        Settings(payload_log=str(tmp_path / "p.jsonl"), workers=2)
    with pytest.raises(ValueError, match="less than or equal to 1"):
        Settings(payload_log="stdout", payload_log_sample=1.5)
