"""The micro-batcher: concurrent submits share a model call; failures fail the batch."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from app.batching import BatchRun, MicroBatcher, inline_limit
from app.errors import InferenceFailed

pytestmark = pytest.mark.anyio


class RecordingModel:
    """Returns each row's first pixel as a one-class 'probability' and records batch sizes."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batch_sizes: list[int] = []
        self.delay = delay
        self.threads: set[str] = set()

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        self.batch_sizes.append(len(pixels))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        return pixels.reshape(len(pixels), -1)[:, :1].copy()


def images(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32).reshape(-1, 1, 1, 1)


async def started(model: RecordingModel, **kwargs: float) -> MicroBatcher:
    batcher = MicroBatcher(
        model,
        max_batch_size=int(kwargs.get("max_batch_size", 32)),
        max_wait_seconds=kwargs.get("max_wait_seconds", 0.05),
        name="test",
        inline_max_images=int(kwargs.get("inline_max_images", 0)),
    )
    batcher.start()
    return batcher


async def test_concurrent_requests_reach_the_model_as_one_batch() -> None:
    model = RecordingModel()
    batcher = await started(model)
    results = await asyncio.gather(*(batcher.submit(images(i)) for i in range(10)))
    await batcher.stop()
    assert model.batch_sizes == [10]
    assert [float(r[0, 0]) for r in results] == list(range(10))  # each got its own row back


async def test_multi_image_requests_are_split_back_in_order() -> None:
    model = RecordingModel()
    batcher = await started(model)
    first, second = await asyncio.gather(
        batcher.submit(images(1, 2, 3)), batcher.submit(images(4, 5))
    )
    await batcher.stop()
    assert model.batch_sizes == [5]
    assert first[:, 0].tolist() == [1, 2, 3]
    assert second[:, 0].tolist() == [4, 5]


async def test_batches_never_exceed_max_batch_size_and_requests_are_not_split() -> None:
    model = RecordingModel()
    batcher = await started(model, max_batch_size=4)
    results = await asyncio.gather(*(batcher.submit(images(i, i)) for i in range(5)))
    await batcher.stop()
    assert max(model.batch_sizes) <= 4
    assert sum(model.batch_sizes) == 10
    assert [r[:, 0].tolist() for r in results] == [[i, i] for i in range(5)]


async def test_an_idle_request_is_dispatched_when_the_wait_runs_out() -> None:
    # The max-wait contract, without timing it: a lone request in a batcher that could
    # take 32 images is dispatched on its own once the (short) wait runs out, rather
    # than held for a full batch. A batcher that waited for company would hang here
    # (pytest-timeout fails the test).
    model = RecordingModel()
    batcher = await started(model, max_batch_size=32, max_wait_seconds=0.02)
    result = await batcher.submit(images(1))
    await batcher.stop()
    assert model.batch_sizes == [1]
    assert result.shape[0] == 1


async def test_requests_arriving_during_a_batch_form_the_next_batch() -> None:
    model = RecordingModel(delay=0.1)
    batcher = await started(model, max_wait_seconds=0.0)
    first = asyncio.ensure_future(batcher.submit(images(0)))
    await asyncio.sleep(0.03)  # the first batch is now running on the inference thread
    rest = await asyncio.gather(*(batcher.submit(images(i)) for i in range(1, 6)))
    await first
    await batcher.stop()
    assert model.batch_sizes == [1, 5]
    assert [float(r[0, 0]) for r in rest] == [1, 2, 3, 4, 5]


async def test_inference_runs_off_the_event_loop_thread() -> None:
    model = RecordingModel()
    batcher = await started(model)
    await batcher.submit(images(1))
    await batcher.stop()
    assert threading.current_thread().name not in model.threads


class ScriptedModel:
    """Misbehaves as scripted, one misbehaviour per call, then echoes like RecordingModel."""

    def __init__(self, *misbehaviours: Callable[[np.ndarray], np.ndarray]) -> None:
        self.calls = 0
        self.misbehaviours = list(misbehaviours)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.misbehaviours:
            return self.misbehaviours.pop(0)(pixels)
        return pixels.reshape(len(pixels), -1)[:, :1]


def boom(pixels: np.ndarray) -> np.ndarray:
    raise RuntimeError("boom")


def no_rows(pixels: np.ndarray) -> np.ndarray:
    return pixels[:0].reshape(0, 1)  # the wrong count


async def test_a_failing_batch_fails_every_waiting_request_and_the_next_succeeds() -> None:
    flaky = ScriptedModel(boom)
    batcher = MicroBatcher(flaky, max_batch_size=8, max_wait_seconds=0.05, name="flaky")
    batcher.start()
    outcomes = await asyncio.gather(
        *(batcher.submit(images(i)) for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(o, InferenceFailed) for o in outcomes)
    assert "boom" in str(outcomes[0])
    recovered = await batcher.submit(images(7))
    await batcher.stop()
    assert float(recovered[0, 0]) == 7


async def test_a_batch_with_the_wrong_number_of_outputs_fails_with_a_hint() -> None:
    batcher = MicroBatcher(
        lambda pixels: pixels[:1].reshape(1, -1), max_batch_size=8, max_wait_seconds=0.05
    )
    batcher.start()
    outcomes = await asyncio.gather(
        *(batcher.submit(images(i)) for i in range(2)), return_exceptions=True
    )
    await batcher.stop()
    assert all(isinstance(o, InferenceFailed) for o in outcomes)
    assert "one output per input" in str(outcomes[0])


async def test_stop_drains_queued_work_before_stopping() -> None:
    model = RecordingModel(delay=0.05)
    batcher = await started(model, max_batch_size=1, max_wait_seconds=0.0)
    pending = [asyncio.ensure_future(batcher.submit(images(i))) for i in range(3)]
    await asyncio.sleep(0)
    await batcher.stop()
    results = await asyncio.gather(*pending)
    assert [float(r[0, 0]) for r in results] == [0, 1, 2]


async def test_submit_after_stop_is_refused() -> None:
    batcher = await started(RecordingModel())
    await batcher.stop()
    with pytest.raises(InferenceFailed, match="not running"):
        await batcher.submit(images(1))


async def test_a_small_request_to_an_idle_batcher_runs_inline_on_the_event_loop() -> None:
    model = RecordingModel()
    batcher = await started(model, inline_max_images=2, max_wait_seconds=0.0)
    result = await batcher.submit(images(3, 4))
    assert model.threads == {threading.current_thread().name}
    assert result[:, 0].tolist() == [3, 4]
    assert batcher.stats.batches == 1 and batcher.stats.images == 2
    await batcher.stop()


async def test_a_request_over_the_inline_limit_goes_to_the_inference_thread() -> None:
    model = RecordingModel()
    batcher = await started(model, inline_max_images=2, max_wait_seconds=0.0)
    await batcher.submit(images(1, 2, 3))
    await batcher.stop()
    assert threading.current_thread().name not in model.threads


async def test_under_load_requests_queue_for_the_thread_instead_of_running_inline() -> None:
    # The first request finds the batcher idle but is too big to run inline; while it
    # runs on the thread, small requests arrive, find the batcher busy and form one
    # batch on the thread: the loop never runs the model while the thread does.
    model = RecordingModel(delay=0.1)
    batcher = await started(model, inline_max_images=1, max_wait_seconds=0.0)
    first = asyncio.ensure_future(batcher.submit(images(0, 0)))
    await asyncio.sleep(0.03)
    rest = await asyncio.gather(*(batcher.submit(images(i)) for i in range(1, 4)))
    await first
    assert model.batch_sizes == [2, 3]
    assert threading.current_thread().name not in model.threads
    assert [float(r[0, 0]) for r in rest] == [1, 2, 3]
    await batcher.stop()


async def test_an_inline_failure_fails_that_request_and_the_next_is_served() -> None:
    flaky = ScriptedModel(boom, no_rows)
    batcher = MicroBatcher(
        flaky, max_batch_size=8, max_wait_seconds=0.0, name="flaky", inline_max_images=1
    )
    batcher.start()
    with pytest.raises(InferenceFailed, match="boom"):
        await batcher.submit(images(1))
    with pytest.raises(InferenceFailed, match="one output per input"):
        await batcher.submit(images(1))
    recovered = await batcher.submit(images(7))
    await batcher.stop()
    assert float(recovered[0, 0]) == 7
    assert flaky.calls == 3


@pytest.mark.parametrize(
    ("costs", "limit"),
    [
        ({1: 7e-6, 32: 41e-6}, 32),  # the MNIST MLP on LiteRT: every batch is cheap
        ({1: 88e-6, 32: 3980e-6}, 1),  # the X-ray CNN: one image at most
        ({1: 0.6e-3, 32: 1.2e-3}, 0),  # a SavedModel call: never inline
        ({1: 20e-6, 32: 330e-6}, 9),  # 20 us + 10 us per further image: 9 fit in 100 us
        ({}, 0),
    ],
)
def test_the_inline_limit_is_the_largest_batch_warm_up_measured_as_cheap(
    costs: dict[int, float], limit: int
) -> None:
    assert inline_limit(costs, max_seconds=100e-6) == limit


async def test_a_configured_batch_wait_turns_inline_batches_off() -> None:
    # The operator asked lone requests to wait for company: none runs on the loop.
    model = RecordingModel()
    batcher = await started(model, inline_max_images=2, max_wait_seconds=0.01)
    await batcher.submit(images(1))
    await batcher.stop()
    assert threading.current_thread().name not in model.threads


async def test_a_request_runs_on_the_thread_while_other_requests_are_under_way() -> None:
    # Under load (other requests for the model between admission and answer) small
    # requests batch on the inference thread too.
    model = RecordingModel()
    batcher = await started(model, inline_max_images=2, max_wait_seconds=0.0)
    await batcher.submit(images(1), busy=lambda: True)
    await batcher.stop()
    assert threading.current_thread().name not in model.threads


class RecordingTrace:
    """A traced request as the batcher sees it (`BatchTrace`): records what it is told."""

    def __init__(self) -> None:
        self.calls: list[RecordingCall] = []

    def queued(self, at: float, images: int) -> RecordingCall:
        call = RecordingCall(at, images)
        self.calls.append(call)
        return call


class RecordingCall:
    def __init__(self, enqueued: float, images: int) -> None:
        self.enqueued, self.images = enqueued, images
        self.dispatched_at: float | None = None
        self.run: BatchRun | None = None

    def dispatched(self, at: float) -> None:
        self.dispatched_at = at

    def finished(self, run: BatchRun) -> None:
        assert self.dispatched_at == run.dispatched
        self.run = run


async def test_traced_requests_are_told_which_batch_ran_them() -> None:
    model = RecordingModel()
    batcher = await started(model)
    traces = [RecordingTrace() for _ in range(3)]
    await asyncio.gather(
        batcher.submit(images(1, 2), trace=traces[0]),
        batcher.submit(images(3), trace=traces[1]),
        batcher.submit(images(4)),  # untraced, in the same batch
        batcher.submit(images(5), trace=traces[2]),
    )
    await batcher.stop()
    assert model.batch_sizes == [5]
    calls = [call for trace in traces for call in trace.calls]
    assert [call.images for call in calls] == [2, 1, 1]
    runs = [call.run for call in calls]
    assert all(run is not None for run in runs)
    assert len({id(run) for run in runs}) == 1  # one call, told alike to each request
    run = runs[0]
    assert run is not None
    assert (run.images, run.requests, run.inline, run.error) == (5, 4, False, None)
    assert run.batch_id == "test/1"
    assert all(call.enqueued <= run.dispatched <= run.finished for call in calls)


async def test_a_traced_inline_run_has_no_wait_and_a_failed_one_carries_its_error() -> None:
    flaky = ScriptedModel(lambda pixels: pixels.reshape(len(pixels), -1)[:, :1], boom)
    batcher = MicroBatcher(
        flaky, max_batch_size=8, max_wait_seconds=0.0, name="flaky", inline_max_images=1
    )
    batcher.start()
    served, failed = RecordingTrace(), RecordingTrace()
    await batcher.submit(images(1), trace=served)
    with pytest.raises(InferenceFailed):
        await batcher.submit(images(2), trace=failed)
    await batcher.stop()
    [call] = served.calls
    assert call.run is not None and call.run.inline
    assert call.enqueued == call.run.dispatched <= call.run.finished
    [call] = failed.calls
    assert call.run is not None and isinstance(call.run.error, InferenceFailed)
    assert call.run.batch_id == "flaky/2"
