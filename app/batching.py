"""Micro-batching: concurrent requests for one model share one call of its signature.

Each request submits its images (`[k, H, W, C]`) and awaits a future. One worker task
per model takes the first waiting request, then whatever else is already queued, and
waits at most `max_wait` for more, up to `max_batch_size` images. While a batch runs on
the inference thread, new requests queue up and form the next batch, so batches grow
with load by themselves and an idle server adds at most `max_wait` to a request.

A batch must return one output row per input row; if the model raises, or returns the
wrong count, every request in that batch fails and the next batch starts afresh.

Inline batches: a request that finds its model idle (nothing queued or running on the
thread, no other request for the model under way) and is no larger than
`inline_max_images` runs at once on the event loop instead, after one turn of the loop.
Handing a batch to the inference thread and back costs ~70 us of latency and ~60 us of
CPU on the machines this was measured on (docs/performance.md); a model call that warm-up
measured at a few microseconds (the MNIST MLP on LiteRT: ~7 us) is cheaper run where it
is. Under load other requests are under way, and requests queue and batch on the thread
as before: that also keeps uvloop serving every connection (always running inline, some
connections waited ~0.5 s at 64 connections). A model or batch over the limit always goes
to the thread, so the loop is never blocked for long. A configured `max_wait` asks lone
requests to wait for company, so it turns inline batches off.

Traced requests (`app.tracing`) bring a `BatchTrace`; the batcher tells it when their
images were queued, when their batch was dispatched and, once it has run, its times and
make-up (`BatchRun`). Untraced requests bring None and cost a comparison or two.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from app.errors import InferenceFailed, ServingError
from app.request_ids import current_request_id
from app.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

PredictFn = Callable[[NDArray[np.float32]], NDArray[np.float32]]


class BatchObserver(Protocol):
    """Receives the figures of every batch that ran (for metrics)."""

    def observe_batch(
        self, size: int, queue_seconds: Sequence[float], inference_seconds: float
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class BatchRun:
    """One model call, as the traced requests it served see it; times are perf_counter."""

    dispatched: float
    finished: float
    images: int  # in the whole batch
    requests: int  # sharing it
    batch_id: str  # "<batcher name>/<number>": the same for every request of the batch
    inline: bool = False  # run on the event loop, without queueing (see the module docstring)
    error: BaseException | None = None  # the call failed, and so did these requests


class TracedCall(Protocol):
    """One model call of a traced request: told when its batch left the queue and how it
    ran."""

    def dispatched(self, at: float) -> None: ...

    def finished(self, run: BatchRun) -> None: ...


class BatchTrace(Protocol):
    """A traced request (`app.tracing.RequestTrace`): each time `images` of it are queued
    at `at`, it hands back the `TracedCall` that follows them."""

    def queued(self, at: float, images: int) -> TracedCall: ...


@dataclass
class _Request:
    pixels: NDArray[np.float32]
    future: asyncio.Future[NDArray[np.float32]]
    enqueued: float = field(default_factory=time.perf_counter)
    trace: TracedCall | None = None
    # The batch runs in the batcher's task, outside the request's context: keep its id
    # for the log line of a failed batch.
    request_id: str | None = field(default_factory=current_request_id)

    @property
    def size(self) -> int:
        return int(self.pixels.shape[0])


@dataclass
class BatchStats:
    """What the batcher has done, for metadata, metrics and tests."""

    batches: int = 0
    images: int = 0
    batch_sizes: list[int] = field(default_factory=list)

    def record(self, size: int) -> None:
        self.batches += 1
        self.images += size
        self.batch_sizes.append(size)
        del self.batch_sizes[:-1000]  # keep the recent history only


class MicroBatcher:
    """Collects concurrent `submit` calls into batched calls of `predict`."""

    def __init__(
        self,
        predict: PredictFn,
        *,
        max_batch_size: int,
        max_wait_seconds: float,
        name: str = "model",
        observer: BatchObserver | None = None,
        inline_max_images: int = 0,
    ) -> None:
        self._predict = predict
        self._observer = observer
        self.max_batch_size = max_batch_size
        self.max_wait_seconds = max_wait_seconds
        self.inline_max_images = 0 if max_wait_seconds else inline_max_images
        self.name = name
        self.stats = BatchStats()
        self._batch_numbers = itertools.count(1)  # every model call, failed ones too
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._carried: _Request | None = None
        self._idle = asyncio.Event()  # set while nothing is queued or running
        self._idle.set()
        self._worker: asyncio.Task[None] | None = None
        # One thread per model: TensorFlow parallelises inside the op, and a single
        # thread keeps batches in order and the signature free of concurrent calls.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"infer-{name}")

    def start(self) -> None:
        """Start the worker task on the running event loop."""
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(
                self._run(), name=f"batcher-{self.name}"
            )

    async def stop(self, drain_seconds: float = 10.0) -> None:
        """Let queued work finish (up to `drain_seconds`), then stop the worker.

        Whatever is still queued after that fails with an `InferenceFailed` error.
        Cancelled while draining, the batcher goes on serving and a later `stop` does the
        job; cancelled later, the worker is gone all the same, and so is the queue.
        """
        # `asyncio.timeout`, not `wait_for`: Python 3.11's wait_for returns instead of
        # raising when a cancel meets the end of the wait in one loop step.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_seconds):
                await self._idle.wait()
        worker, self._worker = self._worker, None  # from here on `submit` refuses
        try:
            if worker is not None:
                await cancel_and_wait(worker)
        finally:
            # The worker has ended either way (a cancel of this stop reaches it too), so
            # nothing would ever take what it left queued.
            self._fail_leftovers()
            self._executor.shutdown(wait=False)

    def _fail_leftovers(self) -> None:
        pending = [self._carried] if self._carried else []
        self._carried = None
        while not self._queue.empty():
            pending.append(self._queue.get_nowait())
        _fail(pending, InferenceFailed(f"model {self.name} was unloaded before the request ran"))
        self._idle.set()  # nothing queued or running: a second stop has nothing to drain

    async def submit(
        self,
        pixels: NDArray[np.float32],
        busy: Callable[[], bool] = lambda: False,
        trace: BatchTrace | None = None,
    ) -> NDArray[np.float32]:
        """Queue `[k, H, W, C]` pixels and wait for their `[k, classes]` probabilities.

        `busy` says whether other requests for the model are under way; a request runs
        inline only when it is not, and the batcher is idle, after one turn of the loop.
        `trace`, for a traced request, is told what happened to it.
        """
        if self._worker is None:
            raise InferenceFailed(f"the batcher of model {self.name} is not running")
        if self._idle.is_set() and len(pixels) <= self.inline_max_images and not busy():
            # One turn of the loop first: requests that arrived meanwhile get to say they
            # are there, and the loop never serves connections in long inline runs.
            await asyncio.sleep(0)
            if self._idle.is_set() and not busy():
                return self._run_inline(pixels, trace)
        future: asyncio.Future[NDArray[np.float32]] = asyncio.get_running_loop().create_future()
        self._idle.clear()
        request = _Request(pixels=pixels, future=future)
        if trace is not None:
            request.trace = trace.queued(request.enqueued, request.size)
        self._queue.put_nowait(request)
        return await future

    def _run_inline(
        self, pixels: NDArray[np.float32], trace: BatchTrace | None = None
    ) -> NDArray[np.float32]:
        """Run one request's batch on the event loop; only while the batcher is idle.

        Nothing else can start meanwhile (the loop is busy here, and the worker thread
        has nothing to run), so the model is never called twice at once.
        """
        started = time.perf_counter()
        number = next(self._batch_numbers)
        call = trace.queued(started, len(pixels)) if trace is not None else None
        if call is not None:
            call.dispatched(started)
        failure: ServingError | None = None
        try:
            outputs = self._checked(self._predict(pixels), pixels)
        except Exception as error:
            logger.exception("batch of %d images failed for model %s", len(pixels), self.name)
            failure = _as_serving_error(error, self.name)
            if failure is error:
                raise
            raise failure from error
        finally:
            finished = time.perf_counter()
            if call is not None:
                batch_id = self._batch_id(number)
                call.finished(BatchRun(started, finished, len(pixels), 1, batch_id, True, failure))
        self._record(len(pixels), [0.0], finished - started)
        return outputs

    def _batch_id(self, number: int) -> str:
        return f"{self.name}/{number}"

    def _tell_traces(
        self,
        requests: Sequence[_Request],
        dispatched: float,
        finished: float,
        number: int,
        error: BaseException | None = None,
    ) -> None:
        """Tell the traced requests of a batch how it ran; an untraced one costs a comparison."""
        run: BatchRun | None = None
        for request in requests:
            if request.trace is None:
                continue
            if run is None:
                images = sum(r.size for r in requests)
                batch_id = self._batch_id(number)
                run = BatchRun(dispatched, finished, images, len(requests), batch_id, error=error)
            request.trace.finished(run)

    def _checked(
        self, outputs: NDArray[np.float32], pixels: NDArray[np.float32]
    ) -> NDArray[np.float32]:
        if len(outputs) != len(pixels):
            raise InferenceFailed(
                f"model {self.name} returned {len(outputs)} outputs for {len(pixels)} "
                "inputs; a batch must return one output per input"
            )
        return outputs

    def _record(self, size: int, queue_seconds: list[float], inference_seconds: float) -> None:
        self.stats.record(size)
        if self._observer is not None:
            self._observer.observe_batch(size, queue_seconds, inference_seconds)

    async def _run(self) -> None:
        while True:
            batch: list[_Request] = []
            try:
                await self._collect_batch(batch)
            except asyncio.CancelledError:
                _fail(batch, InferenceFailed(f"model {self.name} was unloaded before it ran"))
                raise
            await self._run_batch(batch)
            if self._carried is None and self._queue.empty():
                self._idle.set()

    async def _collect_batch(self, batch: list[_Request]) -> None:
        """Fill `batch` in place, so a cancelled collection can still fail what it took."""
        loop = asyncio.get_running_loop()
        first = self._carried or await self._queue.get()
        self._carried = None
        batch.append(first)
        size = first.size
        deadline = loop.time() + self.max_wait_seconds
        while size < self.max_batch_size:
            try:
                request = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:  # not `wait_for`, which can swallow the worker's cancel (see `stop`)
                    async with asyncio.timeout(remaining):
                        request = await self._queue.get()
                except TimeoutError:
                    break
            if size + request.size > self.max_batch_size:
                self._carried = request  # starts the next batch; never split a request
                break
            batch.append(request)
            size += request.size

    async def _run_batch(self, batch: list[_Request]) -> None:
        live = [r for r in batch if not r.future.done()]  # skip requests already cancelled
        if not live:
            return
        pixels = live[0].pixels if len(live) == 1 else np.concatenate([r.pixels for r in live])
        loop = asyncio.get_running_loop()
        dispatched = time.perf_counter()
        number = next(self._batch_numbers)
        for request in live:
            if request.trace is not None:
                request.trace.dispatched(dispatched)
        try:
            outputs = self._checked(
                await loop.run_in_executor(self._executor, self._predict, pixels), pixels
            )
        except asyncio.CancelledError:
            unloaded = InferenceFailed(f"model {self.name} was unloaded while the batch ran")
            _fail(live, unloaded)
            self._tell_traces(live, dispatched, time.perf_counter(), number, unloaded)
            raise
        except Exception as error:
            ids = ",".join(dict.fromkeys(r.request_id for r in live if r.request_id is not None))
            logger.exception(
                "batch of %d images failed for model %s",
                len(pixels),
                self.name,
                extra={"request_id": ids or None},
            )
            failure = _as_serving_error(error, self.name)
            _fail(live, failure)
            self._tell_traces(live, dispatched, time.perf_counter(), number, failure)
            return
        finished = time.perf_counter()
        self._record(
            len(pixels), [dispatched - request.enqueued for request in live], finished - dispatched
        )
        self._tell_traces(live, dispatched, finished, number)
        offset = 0
        for request in live:
            if not request.future.done():
                request.future.set_result(outputs[offset : offset + request.size])
            offset += request.size


def inline_limit(costs: Mapping[int, float], max_seconds: float) -> int:
    """The largest batch whose estimated cost is within `max_seconds` (0: none is).

    `costs` maps batch sizes to the seconds warm-up measured; sizes between two measured
    ones are estimated on the straight line between them, and nothing beyond the
    largest measured size is ever run inline.
    """
    sizes = sorted(costs)
    if not sizes or costs[sizes[0]] > max_seconds:
        return 0
    for small, large in itertools.pairwise(sizes):
        if costs[large] > max_seconds:  # `small` fits, so the line between them rises
            per_image = (costs[large] - costs[small]) / (large - small)
            return small + int((max_seconds - costs[small]) / per_image)
    return sizes[-1]


def _as_serving_error(error: Exception, name: str) -> ServingError:
    if isinstance(error, ServingError):
        return error
    return InferenceFailed(f"inference failed for model {name}: {error}")


def _fail(requests: list[_Request], error: Exception) -> None:
    for request in requests:
        if not request.future.done():
            request.future.set_exception(error)
