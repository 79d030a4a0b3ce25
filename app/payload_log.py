"""The sampled payload log: what was asked of a model and what it answered, as JSON lines.

Off unless `VISION_SERVING_PAYLOAD_LOG` names a destination (`stdout` or a file). A
record answers "what did the model see and say for request X": its request id, time,
model, version, protocol, status and latency, and per input the sha256 and size of its
bytes, its decoded shape and the model's answer (top-k classes and every class's
probability), or the error code of an input that could not be read. The format and its
privacy implications are in docs/observability.md.

The request path only gathers references; everything that costs is done by a writer
thread:

1. `PayloadLogMiddleware` (installed only when the log is on) picks the inference
   requests of every protocol, decides once whether to sample one (before anything is
   hashed, so a request left out costs nothing more) and, if so, opens a
   `PendingRecord` in a context variable.
2. The data plane, the one core every protocol calls, notes on it the inputs it was
   given (`note_inputs`) and the answer (`note_answer`); with no record open (the log
   is off, or this request was not sampled) each is one context-variable read.
3. When the request has been answered, the middleware adds status and latency and
   hands the record to `PayloadLog.submit`, which queues it without waiting.
4. The writer thread hashes the inputs, reads image headers, writes the JSON line and,
   if asked (`PAYLOAD_LOG_INPUTS`), stores the input bytes named by their sha256.

The queue is bounded in records and in bytes held. A full queue, a failed write (a full
disk) or a record still queued at shutdown drops the record, counted on /metrics as
`vision_serving_payload_log_dropped_total{reason}`; a request never waits for the log
and never fails because of it.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import io
import json
import logging
import os
import queue
import random
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.contract.decision import OperatingPoint, rank_classes
from app.contract.images import Upload
from app.logs import iso_utc
from app.request_ids import current_request_id

if TYPE_CHECKING:
    from app.dataplane import Classification
    from app.settings import Settings

logger = logging.getLogger(__name__)

ApiProtocol = Literal["native", "tfserving", "v2"]
DropReason = Literal[
    "queue_full", "write_error", "record_error", "shutdown", "inputs_full", "inputs_write_error"
]
DROP_REASONS: tuple[DropReason, ...] = get_args(DropReason)
"""Why a record (or, for `inputs_*`, a stored input) was dropped: the queue was full, the
sink failed (e.g. ENOSPC), the record could not be built, it was still queued when
shutdown's deadline passed; the input folder was full, or writing an input failed."""

MAX_PENDING_RECORDS = 1000
MAX_PENDING_BYTES = 64 * 1024 * 1024
"""Input bytes the queued records may hold: the log's bound on the service's memory."""
CLOSE_TIMEOUT_SECONDS = 5.0
INPUTS_RESCAN_SECONDS = 60.0
"""Least time between two counts of the input folder's files once it is full."""
PRIVATE_FILE_MODE = 0o600
PRIVATE_FOLDER_MODE = 0o700
"""Records and stored inputs are personal data: the service's user alone may read them
(the modes new files and folders get, whatever the process umask would allow)."""
_WARNING_INTERVAL_SECONDS = 60.0

# The inference endpoints of each protocol, with or without a pinned version.
_INFERENCE_PATH = re.compile(
    r"/(?:"
    r"(?P<native>api/v1)/models/[^/]+(?:/versions/\d+)?/(?:predict|probabilities)"
    r"|(?P<tfserving>v1)/models/[^/:]+(?:/versions/\d+)?:(?:predict|classify)"
    r"|(?P<v2>v2)/models/[^/]+(?:/versions/\d+)?/infer"
    r")"
)


# What the request path gathers ---------------------------------------------------------


@dataclass(slots=True)
class PendingRecord:
    """One sampled request, as the request path leaves it for the writer thread."""

    protocol: ApiProtocol
    request_id: str | None
    started_at: float  # Unix time
    started: float  # perf_counter
    model: str | None = None
    version: int | None = None
    inputs: Sequence[Upload] | NDArray[np.float32] | None = None
    probabilities: NDArray[np.float32] | None = None
    class_names: Sequence[str] = ()
    operating_point: OperatingPoint | None = None  # the card's: it decides the top label
    positions: Sequence[int] = ()
    failures: dict[int, str] = field(default_factory=dict)  # position -> error code
    status: int = 500
    latency_ms: float = 0.0

    def input_bytes(self) -> int:
        """Bytes of request data this record keeps alive until it is written."""
        if self.inputs is None:
            return 0
        if isinstance(self.inputs, np.ndarray):
            return int(self.inputs.nbytes)
        return sum(len(upload.data) for upload in self.inputs)


_pending: contextvars.ContextVar[PendingRecord | None] = contextvars.ContextVar(
    "vision_serving_payload_record", default=None
)


def note_inputs(model: str, version: int, inputs: Sequence[Upload] | NDArray[np.float32]) -> None:
    """Note what the model is given, if the current request is being recorded."""
    record = _pending.get()
    if record is not None:
        record.model, record.version, record.inputs = model, version, inputs


def note_answer(result: Classification) -> None:
    """Note the data plane's answer, if the current request is being recorded."""
    record = _pending.get()
    if record is not None:
        record.probabilities = result.probabilities
        record.class_names = result.card.class_names
        record.operating_point = result.card.operating_point
        record.positions = result.positions
        record.failures = {failure.position: failure.error.code for failure in result.failures}


def inference_protocol(scope: Scope) -> ApiProtocol | None:
    """The protocol of an inference request's path, or None for any other path."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        path = path[len(root_path) :]
    match = _INFERENCE_PATH.fullmatch(path)
    if match is None:
        return None
    if match["native"]:
        return "native"
    return "tfserving" if match["tfserving"] else "v2"


class PayloadLogMiddleware:
    """ASGI middleware opening a `PendingRecord` for each sampled inference request."""

    def __init__(self, app: ASGIApp, payload_log: PayloadLog) -> None:
        self.app = app
        self.payload_log = payload_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        protocol = inference_protocol(scope)
        if protocol is None or not self.payload_log.sampled():
            await self.app(scope, receive, send)
            return
        record = PendingRecord(protocol, current_request_id(), time.time(), time.perf_counter())
        status = 500  # unless a response starts: an error no layer answered

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        token = _pending.set(record)
        try:
            await self.app(scope, receive, send_with_status)
        finally:
            _pending.reset(token)
            if record.model is not None:  # refused before reaching a model: nothing to say
                record.status = status
                record.latency_ms = (time.perf_counter() - record.started) * 1000
                self.payload_log.submit(record)


# Where records and inputs go -------------------------------------------------------------


class Sink(Protocol):
    """Where the writer thread puts JSON lines; `write` raises OSError when it fails."""

    def open(self) -> None: ...

    def write(self, line: str) -> None: ...

    def close(self) -> None: ...


class StdoutSink:
    """Records as lines on the process's stdout, for a container's log collector."""

    def open(self) -> None:
        pass

    def write(self, line: str) -> None:
        stream = sys.stdout  # looked up each time: it may be replaced (tests, daemons)
        stream.write(line + "\n")
        stream.flush()

    def close(self) -> None:
        pass


class _RaisingRotatingFileHandler(RotatingFileHandler):
    """logging's size-based rotation, letting write errors out (logging would print and
    swallow them) so the writer counts the record as dropped, and creating each file
    (the first, and the new one after every rotation) with `PRIVATE_FILE_MODE`."""

    def handleError(self, record: logging.LogRecord) -> None:
        raise  # re-raises the error `emit` is handling

    def _open(self) -> io.TextIOWrapper:
        # os.open applies the mode when it creates the file; the process umask is no
        # help, being process-wide. A file that exists keeps its mode.
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE_MODE)
        try:
            return open(fd, "a", encoding=self.encoding, errors=self.errors)
        except BaseException:
            os.close(fd)
            raise


class FileSink:
    """Records in a file rotated by size: `path`, `path.1` ... `path.<backups>`.

    Rotation is logging's `RotatingFileHandler`: before a line would take the file past
    `max_bytes`, it becomes `path.1` (the oldest is deleted), so the files together hold
    at most (backups + 1) x max_bytes, plus one record.
    """

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._handler: RotatingFileHandler | None = None

    def open(self) -> None:
        self._handler = _RaisingRotatingFileHandler(
            self.path, maxBytes=self.max_bytes, backupCount=self.backups, encoding="utf-8"
        )

    def write(self, line: str) -> None:
        assert self._handler is not None, "open the sink first"
        try:
            self._handler.emit(logging.makeLogRecord({"msg": line}))
        except OSError:
            # Whatever the failed write left buffered goes with the stream; the handler
            # reopens the file (appending) for the next record.
            self.close()
            raise

    def close(self) -> None:
        if self._handler is not None:
            with contextlib.suppress(OSError):  # a full disk fails the final flush too
                self._handler.close()


class InputStore:
    """Input bytes in a folder, each file named by its sha256, up to `max_bytes` in all.

    Files already there count towards the bound, so a restart does not start afresh. An
    input stored before is not written again. Each file is written beside its final
    name and renamed into place, so a failed write leaves no partial file. The folder is
    made `PRIVATE_FOLDER_MODE` and each file `PRIVATE_FILE_MODE`.

    `used_bytes` adds up what this store wrote. Files deleted since (the operator's
    retention policy) free their bytes when the bound is next reached: the folder is
    counted again then, at most once every `rescan_seconds`, so a full folder is not
    listed for every input.
    """

    def __init__(
        self,
        folder: Path,
        max_bytes: int,
        *,
        rescan_seconds: float = INPUTS_RESCAN_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.rescan_seconds = rescan_seconds
        self.clock = clock
        self.used_bytes = 0
        self._counted_at = -float("inf")  # clock time of the last count of the folder

    def open(self) -> None:
        # mkdir's mode is for the last folder only: parents are ordinary folders.
        self.folder.mkdir(mode=PRIVATE_FOLDER_MODE, parents=True, exist_ok=True)
        self._count_folder()

    def _count_folder(self) -> None:
        """Set `used_bytes` to the size of the files in the folder now."""
        used = 0
        with os.scandir(self.folder) as entries:
            for entry in entries:
                # A file deleted between the listing and its stat simply counts nothing.
                with contextlib.suppress(FileNotFoundError):
                    if entry.is_file():
                        used += entry.stat().st_size
        self.used_bytes = used
        self._counted_at = self.clock()

    def store(self, digest: str, data: bytes | memoryview) -> bool:
        """Keep `data` as `<folder>/<digest>`; False when that would pass the bound.

        Raises OSError when writing fails.
        """
        target = self.folder / digest
        if target.exists():
            return True
        size = len(data)  # bytes, or a memoryview cast to bytes
        if (
            self.used_bytes + size > self.max_bytes
            and self.clock() - self._counted_at >= self.rescan_seconds
        ):
            self._count_folder()
        if self.used_bytes + size > self.max_bytes:
            return False
        partial = self.folder / f".{digest}.partial"
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
            with open(fd, "wb") as file:
                file.write(data)
            os.replace(partial, target)
        except OSError:
            partial.unlink(missing_ok=True)
            raise
        self.used_bytes += size
        return True


# The log ---------------------------------------------------------------------------------


_STOP = object()


class PayloadLog:
    """Samples requests, queues their records and writes them on a thread of its own.

    `sample_rate` is the share of inference requests recorded (`random_source` draws
    the decision: tests pass a seeded one); `top_k` classes are listed per input beside
    all the probabilities; `count_drop(reason)` is told of every record dropped and
    every input not stored.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        sample_rate: float = 1.0,
        top_k: int = 3,
        inputs: InputStore | None = None,
        count_drop: Callable[[DropReason], None] = lambda reason: None,
        random_source: Callable[[], float] = random.random,
        max_pending_records: int = MAX_PENDING_RECORDS,
        max_pending_bytes: int = MAX_PENDING_BYTES,
    ) -> None:
        self.sink = sink
        self.sample_rate = sample_rate
        self.top_k = top_k
        self.inputs = inputs
        self.count_drop = count_drop
        self.random_source = random_source
        self.max_pending_records = max_pending_records
        self.max_pending_bytes = max_pending_bytes
        # SimpleQueue never blocks a put; the bounds are kept by these counts instead.
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending_records = 0
        self._pending_bytes = 0
        self._closing = False
        self._last_warning = -_WARNING_INTERVAL_SECONDS
        self._thread = threading.Thread(target=self._drain, name="payload-log", daemon=True)

    @classmethod
    def from_settings(
        cls, settings: Settings, count_drop: Callable[[DropReason], None]
    ) -> PayloadLog | None:
        """The log `settings` ask for, not yet started; None when it is off."""
        if settings.payload_log is None:
            return None
        sink: Sink
        if settings.payload_log == "stdout":
            sink = StdoutSink()
        else:
            sink = FileSink(
                Path(settings.payload_log),
                settings.payload_log_max_bytes,
                settings.payload_log_backups,
            )
        store = None
        if settings.payload_log_inputs is not None:
            store = InputStore(settings.payload_log_inputs, settings.payload_log_inputs_max_bytes)
        return cls(
            sink,
            sample_rate=settings.payload_log_sample,
            top_k=settings.default_top_k,
            inputs=store,
            count_drop=count_drop,
        )

    def start(self) -> None:
        """Open the sink and the input folder, and start the writer thread.

        Raises OSError, saying which setting to fix, when either cannot be opened.
        """
        try:
            self.sink.open()
        except OSError as error:
            raise OSError(
                f"cannot open the payload log (VISION_SERVING_PAYLOAD_LOG): {error}"
            ) from error
        if self.inputs is not None:
            try:
                self.inputs.open()
            except OSError as error:
                raise OSError(
                    "cannot use the payload log's input folder "
                    f"(VISION_SERVING_PAYLOAD_LOG_INPUTS): {error}"
                ) from error
        self._thread.start()

    def sampled(self) -> bool:
        """Whether to record the request being decided on (once per request)."""
        return self.random_source() < self.sample_rate

    def submit(self, record: PendingRecord) -> None:
        """Queue `record` for the writer, or drop it (counted) if the queue is full."""
        size = record.input_bytes()
        with self._lock:
            if self._closing:
                reason: DropReason | None = "shutdown"
            elif (
                self._pending_records >= self.max_pending_records
                or self._pending_bytes + size > self.max_pending_bytes
            ):
                reason = "queue_full"
            else:
                reason = None
                self._pending_records += 1
                self._pending_bytes += size
                # Under the lock, so no record can follow `close`'s stop marker.
                self._queue.put((record, size))
        if reason is not None:
            self.count_drop(reason)

    def close(self, timeout: float = CLOSE_TIMEOUT_SECONDS) -> None:
        """Write what is queued, within `timeout` seconds, and close the sink.

        Records still queued when the time is up are taken off the queue and counted as
        dropped (`shutdown`), each once; the record being written then is left to the
        writer thread, which stops after it (a daemon thread, it does not hold up the
        process's exit). Every submitted record is written or counted, never both.
        """
        with self._lock:
            if self._closing:
                return
            self._closing = True
            if self._thread.is_alive():
                self._queue.put(_STOP)  # after every queued record: `submit` puts under the lock
        if self._thread.is_alive():
            self._thread.join(timeout)
        left = self._drop_queued()
        if self._thread.is_alive():
            self._queue.put(_STOP)  # `_drop_queued` took the first one
            logger.warning(
                "payload log: %d records not written within %g s of shutdown", left, timeout
            )
            return
        self.sink.close()

    def _drop_queued(self) -> int:
        """Take every record off the queue, counting each as dropped; how many there were.

        The writer may be taking records at the same time: the queue hands each to one
        of the two, so none is both written and counted.
        """
        left = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return left
            if item is _STOP:
                continue
            _, size = item
            with self._lock:
                self._pending_records -= 1
                self._pending_bytes -= size
            self.count_drop("shutdown")
            left += 1

    # The writer thread -----------------------------------------------------------------

    def _drain(self) -> None:
        while (item := self._queue.get()) is not _STOP:
            record, size = item
            try:
                self._write(record)
            finally:
                with self._lock:
                    self._pending_records -= 1
                    self._pending_bytes -= size

    def _write(self, record: PendingRecord) -> None:
        try:
            line = json.dumps(self._entry(record), separators=(",", ":"))
        except Exception:  # a bug, not the disk: say so loudly, keep the writer alive
            logger.exception("payload log: could not build the record of %s", record.request_id)
            self.count_drop("record_error")
            return
        try:
            self.sink.write(line)
        except Exception as error:  # OSError mostly (a full disk); the writer lives on
            self.count_drop("write_error")
            self._warn(f"payload log: a record could not be written, and is dropped: {error}")

    def _entry(self, record: PendingRecord) -> dict[str, Any]:
        """The JSON record of `record` (docs/observability.md lists its fields)."""
        assert record.inputs is not None
        inputs = [self._input_entry(record, position) for position in range(len(record.inputs))]
        if record.probabilities is not None:
            for row, position in zip(record.probabilities, record.positions, strict=True):
                answer = _answer(row, record.class_names, record.operating_point, self.top_k)
                inputs[position].update(answer)
        for position, code in record.failures.items():
            inputs[position]["error"] = code
        return {
            "request_id": record.request_id,
            "time": iso_utc(record.started_at),
            "model": record.model,
            "version": record.version,
            "protocol": record.protocol,
            "status": record.status,
            "latency_ms": round(record.latency_ms, 3),
            "class_names": list(record.class_names) or None,
            "inputs": inputs,
        }

    def _input_entry(self, record: PendingRecord, position: int) -> dict[str, Any]:
        assert record.inputs is not None
        data: bytes | memoryview
        if isinstance(record.inputs, np.ndarray):
            row = np.ascontiguousarray(record.inputs[position], dtype="<f4")
            data = row.data.cast("B")  # the float32 bytes, as the model saw them
            entry: dict[str, Any] = {"kind": "tensor", "dtype": "float32"}
            shape: list[int] | None = list(row.shape)
        else:
            data = record.inputs[position].data
            entry = {"kind": "image"}
            readable = position not in record.failures
            shape = _image_shape(data) if readable else None
        digest = hashlib.sha256(data).hexdigest()
        entry.update(sha256=digest, bytes=len(data), shape=shape)
        if self.inputs is not None:
            entry["stored"] = self._store(digest, data)
        return entry

    def _store(self, digest: str, data: bytes | memoryview) -> bool:
        assert self.inputs is not None
        try:
            stored = self.inputs.store(digest, data)
        except OSError as error:
            self.count_drop("inputs_write_error")
            self._warn(f"payload log: an input could not be stored: {error}")
            return False
        if not stored:
            self.count_drop("inputs_full")
            self._warn(
                f"payload log: the input folder {self.inputs.folder} holds "
                f"{self.inputs.used_bytes:,} bytes, near its bound of "
                f"{self.inputs.max_bytes:,} (VISION_SERVING_PAYLOAD_LOG_INPUTS_MAX_BYTES); "
                "new inputs are not stored"
            )
        return stored

    def _warn(self, message: str) -> None:
        """Log a warning, at most one a minute: a full disk fails every record."""
        now = time.monotonic()
        if now - self._last_warning >= _WARNING_INTERVAL_SECONDS:
            self._last_warning = now
            logger.warning(message)


def _answer(
    row: NDArray[np.float32],
    class_names: Sequence[str],
    operating_point: OperatingPoint | None,
    top_k: int,
) -> dict[str, Any]:
    """One input's answer: its `top_k` classes, the label the client got first (ranked as
    every API ranks them, by the card's operating point), and every probability."""
    # 7 significant digits hold a float32 exactly enough, without float64's noise.
    probabilities = [float(f"{p:.7g}") for p in row.tolist()]
    ranked = rank_classes(row[np.newaxis], class_names, operating_point)[0, :top_k].tolist()
    top = [{"label": class_names[i], "probability": probabilities[i]} for i in ranked]
    return {"top_k": top, "probabilities": probabilities}


def _image_shape(data: bytes) -> list[int] | None:
    """`[height, width, channels]` of an image file, from its header (nothing decoded)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            return [height, width, len(image.getbands())]
    except Exception:  # the data plane read it; a header Pillow now refuses is no record's loss
        return None
