"""A stopped run never hangs: sends cancelled at any moment."""

from __future__ import annotations

import asyncio
import random

from visionkit.query.pacing import Gate


async def _cancelled_sends(seed: int) -> str | None:
    """Six senders through one ``Gate`` of two, each acquiring as ``Sender._acquire`` does (a
    task of its own, cancelled when the run stops, then waited for); a driver moves the clock,
    pauses the window (a Retry-After) and cancels waiting acquires at random moments. What
    went wrong, or ``None``."""
    rng = random.Random(seed)
    now = [0.0]
    gate = Gate(2, clock=lambda: now[0])
    waiting: dict[int, asyncio.Future[int]] = {}
    errors: list[BaseException] = []

    async def sender(i: int) -> None:
        for _ in range(4):
            acquire = asyncio.ensure_future(gate.acquire())
            waiting[i] = acquire
            try:
                await asyncio.wait({acquire})
            finally:
                del waiting[i]
            if acquire.cancelled():
                continue
            if acquire.exception() is not None:
                errors.append(acquire.exception())  # type: ignore[arg-type]
                return
            for _ in range(rng.randrange(3)):
                await asyncio.sleep(0)
            await gate.release(acquire.result(), "ok")

    async def driver() -> None:
        for _ in range(300):
            now[0] += 1e-5
            r = rng.random()
            if r < 0.3:
                gate.limiter.pause(2e-5)  # the waits time out within a step or two
            elif r < 0.5 and waiting:
                waiting[rng.choice(list(waiting))].cancel()  # a stop, as Sender._acquire does
            await asyncio.sleep(0)

    tasks = [asyncio.ensure_future(sender(i)) for i in range(6)]
    tasks.append(asyncio.ensure_future(driver()))
    _, stuck = await asyncio.wait(tasks, timeout=5)
    if stuck:
        return f"{len(stuck)} sender(s) never got through: {errors}"
    if errors:
        return f"acquire failed: {errors}"
    if gate.in_flight != 0:
        return f"{gate.in_flight} ticket(s) never given back"
    return None


def test_sends_cancelled_at_any_moment_never_leave_the_gate_stuck():
    # Python 3.11's wait_for(condition.wait(), pause), cancelled while the timed-out wait took
    # its lock back, released a lock it did not hold ("Lock is not acquired") and left it taken
    # for good: every later release then waited for ever -- the hang after a stop.
    for seed in range(30):
        # a loop of its own, closed without cancelling what is stuck: a task stuck there may
        # not end when cancelled (the hang this finds), and the test must fail, not hang
        loop = asyncio.new_event_loop()
        try:
            problem = loop.run_until_complete(_cancelled_sends(seed))
        finally:
            loop.close()
        assert problem is None, f"seed {seed}: {problem}"
