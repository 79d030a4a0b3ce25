"""A cancelled task is told, wherever it waits: batcher stop, unload, sync, close, lifespan.

Python 3.11's `asyncio.wait_for` returns the result instead of raising when a cancel and
the completion of what it waits for meet in one loop step, and `suppress(CancelledError)`
around awaiting a task one cancelled also swallows a cancel of the caller itself. Either
leaves a task cancelled but never told: shutting down then waited forever for a model
watcher that went on polling (the occasional hang of test_repository.py's watcher test,
and of a SIGTERM during a hot reload). These windows are a few loop steps wide, so each
test cancels the same work after 0, 1, 2, ... loop steps; one of them lands in each.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path

import numpy as np
import pytest

from app.batching import MicroBatcher
from app.errors import InferenceFailed
from app.main import create_app
from app.repository import ModelRepository, ModelState, ServedModel
from app.settings import Settings
from app.tasks import cancel_and_wait
from tests.app.conftest import ServeFn
from tests.app.test_repository import add_version, repository_of
from tests.app.tiny_models import TINY_DIGITS

pytestmark = pytest.mark.anyio

STEPS = range(8)  # loop steps between the start of the work and the cancel
# Every task cancelled here ends within a few loop steps; one still running after this
# long never will (it swallowed the cancel). A bound for a hang, not a speed limit.
HANG_SECONDS = 5.0

CANCELLED = "cancelled"
FINISHED_FIRST = "finished before the cancel"
SWALLOWED = "returned normally though cancelled"
KEPT_RUNNING = "still running after the cancel"


async def loop_steps(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def until_unloading(entry: ServedModel) -> None:
    """Return in the loop step after `entry` starts unloading (checked every step)."""
    async with asyncio.timeout(60):
        # Polled every step on purpose: the cancel must land a known number of steps in.
        while entry.state is not ModelState.UNLOADING:  # noqa: ASYNC110
            await asyncio.sleep(0)


async def cancel_after(task: asyncio.Task[None], steps: int) -> str:
    """Cancel `task` `steps` loop steps from now and say how it ended."""
    await loop_steps(steps)
    if not task.cancel():
        return FINISHED_FIRST
    done, _ = await asyncio.wait({task}, timeout=HANG_SECONDS)
    if not done:
        task.cancel()  # it now waits elsewhere, where a second cancel ends it
        await asyncio.wait({task}, timeout=HANG_SECONDS)
        return KEPT_RUNNING
    if task.cancelled():
        return CANCELLED
    task.result()  # an error is a failure of its own, not an outcome of the cancel
    return SWALLOWED


def assert_no_cancel_was_lost(outcomes: dict[int, str]) -> None:
    lost = {k: outcome for k, outcome in outcomes.items() if outcome in (SWALLOWED, KEPT_RUNNING)}
    assert not lost, f"cancels lost, by loop steps before the cancel: {outcomes}"
    assert CANCELLED in outcomes.values(), f"no cancel landed while the work ran: {outcomes}"


def identity_model(pixels: np.ndarray) -> np.ndarray:
    return pixels.reshape(len(pixels), -1)[:, :1].copy()


def image() -> np.ndarray:
    return np.zeros((1, 1, 1, 1), dtype=np.float32)


def started_batcher(max_wait_seconds: float = 0.05) -> MicroBatcher:
    batcher = MicroBatcher(
        identity_model, max_batch_size=8, max_wait_seconds=max_wait_seconds, name="test"
    )
    batcher.start()
    return batcher


# The helper ----------------------------------------------------------------------------


async def cleans_up_then_ends_cancelled() -> None:
    try:
        await asyncio.Event().wait()
    finally:
        await loop_steps(3)  # a child that takes a few steps to stop, as the batcher does


async def ignores_its_cancel() -> None:
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()
    await loop_steps(3)


async def test_cancel_and_wait_swallows_the_cancel_it_sent() -> None:
    child = asyncio.create_task(cleans_up_then_ends_cancelled())
    await loop_steps(1)
    await cancel_and_wait(child)
    assert child.cancelled()


async def test_cancel_and_wait_raises_when_its_caller_is_cancelled_meanwhile() -> None:
    for child_body in (cleans_up_then_ends_cancelled, ignores_its_cancel):
        child = asyncio.create_task(child_body())
        await loop_steps(1)
        stopping = asyncio.create_task(cancel_and_wait(child))
        assert await cancel_after(stopping, 2) == CANCELLED, child_body.__name__


async def test_cancel_and_wait_still_stops_children_while_the_caller_cleans_up() -> None:
    child = asyncio.create_task(cleans_up_then_ends_cancelled())
    stopped = False

    async def cancelled_owner() -> None:
        nonlocal stopped
        try:
            await asyncio.Event().wait()
        finally:  # cleaning up after its own cancel, as a lifespan may
            await cancel_and_wait(child)
            stopped = True

    owner = asyncio.create_task(cancelled_owner())
    assert await cancel_after(owner, 1) == CANCELLED
    assert stopped and child.cancelled()


async def test_cancel_and_wait_raises_what_the_task_failed_with() -> None:
    async def fails_when_cancelled() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            raise RuntimeError("cleanup failed")

    child = asyncio.create_task(fails_when_cancelled())
    await loop_steps(1)
    with pytest.raises(RuntimeError, match="cleanup failed"):
        await cancel_and_wait(child)


# The batcher ---------------------------------------------------------------------------


async def test_stopping_an_idle_batcher_can_be_cancelled_at_any_step() -> None:
    outcomes = {}
    for steps in STEPS:
        batcher = started_batcher()
        outcomes[steps] = await cancel_after(asyncio.create_task(batcher.stop()), steps)
        await batcher.stop()  # whatever the cancel interrupted, a second stop completes
        with pytest.raises(InferenceFailed, match="not running"):
            await batcher.submit(image())
    assert_no_cancel_was_lost(outcomes)


async def test_a_request_arriving_as_stop_cancels_the_worker_does_not_keep_it_running() -> None:
    # The worker waits (up to 10 s) for company for a first request; a second one arrives
    # in the loop steps in which stop() cancels the worker. The worker must end anyway,
    # or stop() waits for it forever.
    hung = []
    for steps in STEPS:
        batcher = started_batcher(max_wait_seconds=10)
        first = asyncio.ensure_future(batcher.submit(image()))
        await loop_steps(3)  # the worker holds the first request and waits for more
        stopping = asyncio.create_task(batcher.stop(drain_seconds=0))
        await loop_steps(steps)
        second = asyncio.ensure_future(batcher.submit(image()))
        done, _ = await asyncio.wait({stopping}, timeout=HANG_SECONDS)
        if not done:
            hung.append(steps)
            stopping.cancel()
            await asyncio.wait({stopping}, timeout=HANG_SECONDS)
        # Each request is answered or refused, none is left waiting.
        async with asyncio.timeout(HANG_SECONDS):
            answers = await asyncio.gather(first, second, return_exceptions=True)
        refusals = [a for a in answers if isinstance(a, BaseException)]
        assert all(isinstance(refusal, InferenceFailed) for refusal in refusals), refusals
    assert hung == [], f"stop() never returned when the request came after {hung} steps"


async def test_a_stop_cancelled_while_draining_leaves_the_batcher_serving() -> None:
    release = threading.Event()

    def blocked_model(pixels: np.ndarray) -> np.ndarray:
        release.wait(HANG_SECONDS)
        return identity_model(pixels)

    batcher = MicroBatcher(blocked_model, max_batch_size=1, max_wait_seconds=0, name="test")
    batcher.start()
    requests = [asyncio.ensure_future(batcher.submit(image())) for _ in range(2)]
    await loop_steps(3)  # the first runs on the inference thread, the second is queued
    stopping = asyncio.create_task(batcher.stop())
    assert await cancel_after(stopping, 2) == CANCELLED
    release.set()
    answers = await asyncio.gather(*requests)  # a cancelled stop dropped no request
    await batcher.stop()
    assert [a.shape for a in answers] == [(1, 1), (1, 1)]


# The repository ------------------------------------------------------------------------


async def test_unloading_a_model_can_be_cancelled_at_any_step(tmp_path: Path) -> None:
    outcomes = {}
    for steps in STEPS:
        entry = ServedModel(
            name="m", version=1, path=tmp_path, state=ModelState.READY, batcher=started_batcher()
        )
        batcher = entry.batcher
        outcomes[steps] = await cancel_after(asyncio.create_task(entry.unload()), steps)
        await entry.unload()  # what close() does with a version whose unload was cut short
        assert entry.batcher is None and entry.state is ModelState.UNLOADING
        with pytest.raises(InferenceFailed, match="not running"):
            await batcher.submit(image())
    assert_no_cancel_was_lost(outcomes)


async def test_a_sync_unloading_the_superseded_version_can_be_cancelled_at_any_step(
    serve: ServeFn, model_dir_copy: Path
) -> None:
    outcomes = {}
    async with serve(model_dir=model_dir_copy, poll_interval_seconds=0) as client:
        repository = repository_of(client)
        for steps in STEPS:
            superseded = repository.served(TINY_DIGITS)
            assert superseded is not None
            add_version(model_dir_copy, superseded.version + 1)
            syncing = asyncio.create_task(repository.sync())
            await until_unloading(superseded)
            outcomes[steps] = await cancel_after(syncing, steps)
    assert_no_cancel_was_lost(outcomes)


async def test_closing_the_repository_can_be_cancelled_at_any_step(serve: ServeFn) -> None:
    outcomes = {}
    for steps in STEPS:
        async with serve(poll_interval_seconds=0) as client:
            closing = asyncio.create_task(repository_of(client).close())
            outcomes[steps] = await cancel_after(closing, steps)
        # leaving `serve` closed the repository again, which unloaded what was left
    assert_no_cancel_was_lost(outcomes)


# The lifespan --------------------------------------------------------------------------


def watcher_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if "_load_and_watch" in repr(t.get_coro())]


async def test_leaving_the_lifespan_during_a_hot_reload_stops_the_watcher(
    model_dir_copy: Path,
) -> None:
    # The hang of test_the_watcher_picks_up_a_new_version_by_itself, made certain: the
    # lifespan exits (cancelling the watcher) 0, 1, 2, ... loop steps into the unload of
    # the version the watcher has just replaced.
    hung = []
    for steps in STEPS:
        app = create_app(Settings(model_dir=model_dir_copy, poll_interval_seconds=0.01))
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        repository: ModelRepository = app.state.dataplane.repository
        await repository.loaded.wait()
        superseded = repository.served(TINY_DIGITS)
        assert superseded is not None
        add_version(model_dir_copy, superseded.version + 1)
        await until_unloading(superseded)
        await loop_steps(steps)
        leaving = asyncio.create_task(lifespan.__aexit__(None, None, None))
        done, _ = await asyncio.wait({leaving}, timeout=HANG_SECONDS)
        if not done:
            hung.append(steps)
            leaving.cancel()  # cancels the watcher again, in a wait that does end it
            await asyncio.wait({leaving}, timeout=HANG_SECONDS)
        assert watcher_tasks() == []
    assert hung == [], f"the lifespan never exited when it began {hung} steps into the unload"
