"""Stopping a task without swallowing a cancel meant for the one who stops it.

`task.cancel()` followed by `with suppress(CancelledError): await task` is the usual
spelling, and it is wrong: while the caller waits, a cancel of the caller itself is
passed on to `task` and comes back as the same `CancelledError`, which the `suppress`
then swallows. The caller runs on, cancelled but never told; whoever cancelled it waits
for it forever (a shutdown that hung for good behind a model watcher, issue item 7).
"""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel `task` and return once it has ended; raise if the caller was cancelled meanwhile.

    The `CancelledError` that `task` ends with is the one asked for and is not raised.
    One caused by a cancel of the calling task is: cancels are counted from this call on
    (`Task.cancelling()`), as `asyncio.timeout` and `TaskGroup` count them, so a caller
    already cleaning up after a cancel (in a `finally`) can still stop its children.
    A `task` that swallows its cancel and returns does not swallow the caller's with it.
    Any other error `task` ended with is raised.
    """
    caller = asyncio.current_task()
    if caller is None:
        raise RuntimeError("cancel_and_wait must be awaited in a task")
    cancels_before = caller.cancelling()
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        if caller.cancelling() > cancels_before:
            raise
        return
    if caller.cancelling() > cancels_before:
        raise asyncio.CancelledError
