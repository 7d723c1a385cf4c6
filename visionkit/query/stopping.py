"""How long a stopped run waits for what is still going, and how it gives up on it.

After a stop (an interrupt, a 401, a broken cache) the requests in flight are let finish: they
were sent before the stop and may be paid for. But a stopped run must never hang, whatever
goes wrong below it (a server that drips its answer a byte at a time, so no read ever times
out; a bug in a wait): it waits at most one request's timeout and ``STOP_GRACE`` more
(``drain_deadline``), then abandons what is left as a second interrupt does (``watch``). The
thread the run's event loop runs on ends as surely: ``run_loop`` is ``asyncio.run`` whose
clean-up gives tasks that outlive the run ``STOP_GRACE`` seconds to end, not for ever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Coroutine
from typing import Any, TypeVar

__all__ = [
    "LONGEST_REQUEST",
    "STOP_GRACE",
    "cancel_and_wait",
    "drain_deadline",
    "run_loop",
    "wait_all",
    "watch",
]

T = TypeVar("T")

logger = logging.getLogger("visionkit")

STOP_GRACE = 10.0  # seconds a stopped run waits past one request's timeout
LONGEST_REQUEST = 600.0  # what one request's timeout is taken to be with ``timeout=None``


def drain_deadline(timeout: float | None) -> float:
    """Seconds a stopped run waits for the work still going, with requests of ``timeout``."""
    return (LONGEST_REQUEST if timeout is None else float(timeout)) + STOP_GRACE


async def watch(stopped: asyncio.Event, deadline: float, expire: Callable[[], None]) -> None:
    """Once ``stopped`` is set, wait ``deadline`` seconds, then call ``expire()`` (run as a
    task; the run cancels it when it ends in time)."""
    await stopped.wait()
    await asyncio.sleep(deadline)
    expire()


async def wait_all(tasks: Collection[asyncio.Task[object]]) -> None:
    """Wait for ``tasks`` to end. Not ``gather``: a cancel of the waiting task reaches it at
    once, where ``gather`` passes it on to ``tasks`` and waits for them -- for ever, if one
    does not end when cancelled, and the run could not be abandoned."""
    if not tasks:
        return
    done, _ = await asyncio.wait(tasks)
    for task in done:
        if not task.cancelled():
            task.exception()  # (retrieved: a row's own errors are in its result)


async def cancel_and_wait(tasks: Collection[asyncio.Task[object]]) -> None:
    """Cancel ``tasks`` and wait for them to end -- at most ``STOP_GRACE`` seconds: a task that
    does not end when cancelled must not hold the run."""
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    done, pending = await asyncio.wait(tasks, timeout=STOP_GRACE)
    for task in done:
        if not task.cancelled():
            task.exception()  # (retrieved: a row's own errors are in its result)
    if pending:
        logger.error("%d task(s) did not end when cancelled; left behind", len(pending))


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on a new event loop, except that the tasks still alive when
    ``main`` ends get ``STOP_GRACE`` seconds to end when cancelled (``asyncio.run`` waits for
    them for ever: one that does not end would hold the caller after its answer is ready)."""
    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main)
    finally:
        try:
            left = asyncio.all_tasks(loop)
            if left:
                loop.run_until_complete(cancel_and_wait(left))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
