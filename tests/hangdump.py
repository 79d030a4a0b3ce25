"""pytest plugin: before pytest-timeout ends a hung test, print what its asyncio tasks await.

pytest-timeout (`timeout_method = "thread"` in pyproject.toml) prints the stack of every
*thread* and exits. In a hung asyncio test those show the event loop's thread asleep in
`epoll_wait`, which says nothing: what hangs is a task. So at 90% and again at 95% of a
test's time limit this plugin prints every asyncio task's stack, the future it waits on
and its pending cancel requests. A task with a pending cancel swallowed a cancellation;
one that waits on a different future in the two dumps is looping, not stuck (the same id
twice proves less: a new future may reuse a freed one's address). The dumps are written
from a timer thread, which runs while the loop's thread sleeps with nothing to wake it.

It goes to stderr: pytest captures it, and pytest-timeout prints the captured stderr
just before the thread stacks (with `-s`, it appears as it is written).

Vendored from the workplace's shared/tools/pytest/hangdump.py (not part of this
repository), adapted: the dumps follow each test's pytest-timeout limit instead of a
HANGDUMP_AFTER variable, and leave thread stacks to pytest-timeout.
"""

from __future__ import annotations

import asyncio
import io
import sys
import threading

import pytest

DUMP_AT = (0.90, 0.95)  # fractions of a test's time limit; both before it ends the run
_TIMERS = pytest.StashKey[list[threading.Timer]]()


@pytest.hookimpl(optionalhook=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: object) -> None:
    """Start this test's dump timers beside pytest-timeout's own (returning None lets
    pytest-timeout's implementation of this first-result hook run too)."""
    limit = float(getattr(settings, "timeout", 0) or 0)
    timers = [
        threading.Timer(limit * fraction, _dump_tasks, args=(item.nodeid, limit * fraction))
        for fraction in DUMP_AT
    ]
    for timer in timers:
        timer.daemon = True
        timer.name = f"hangdump {item.nodeid}"
        timer.start()
    item.stash[_TIMERS] = timers


@pytest.hookimpl(optionalhook=True)
def pytest_timeout_cancel_timer(item: pytest.Item) -> None:
    for timer in item.stash.get(_TIMERS, []):
        timer.cancel()


def _dump_tasks(nodeid: str, seconds: float) -> None:
    out = io.StringIO()
    out.write(f"\n=== hangdump: {nodeid} still running after {seconds:g} s; its asyncio tasks:\n")
    for task in _every_task():
        waiter = getattr(task, "_fut_waiter", None)
        waits_on = "nothing (ready to run)" if waiter is None else f"id {id(waiter):#x} {waiter!r}"
        out.write(
            f"--- task {task.get_name()!r}: pending cancels {task.cancelling()}, "
            f"waits on {waits_on}\n"
        )
        try:
            task.print_stack(file=out)
        except Exception as error:  # the task moved on while we looked
            out.write(f"    (stack unavailable: {error})\n")
    out.write("=== hangdump: end\n")
    sys.stderr.write(out.getvalue())
    sys.stderr.flush()


def _every_task() -> list[asyncio.Task[object]]:
    """Every task of every event loop: `asyncio.all_tasks()` sees only the running loop's,
    and this thread runs none. `_all_tasks` is asyncio's weak registry of tasks (3.11 and
    3.12, the Pythons this project supports)."""
    for _ in range(10):
        try:
            return list(asyncio.tasks._all_tasks)  # type: ignore[attr-defined]
        except RuntimeError:  # the loop's thread changed the set while we copied it
            continue
    return []
