"""The adaptive window: how many requests may be in flight, learnt from the server's 429s.

``AdaptiveLimiter`` is an AIMD limit on requests in flight. Each success adds ``1/limit`` (so
about +1 per round of requests); a 429 multiplies the limit by ``decrease`` at most once per
round (only a request started after the last decrease can trigger the next), and a
``Retry-After`` pauses every new send until it has passed. The bookkeeping is pure (tested
without an event loop); ``acquire``/``release`` are its asyncio front end.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from typing import Literal

from .retry import MAX_RETRY_AFTER

__all__ = ["AdaptiveLimiter"]


class AdaptiveLimiter:
    """AIMD limit on requests in flight, paced after 429s, with a shared ``Retry-After`` pause.

    ``ticket = await limiter.acquire()`` before a send, ``await limiter.release(ticket,
    "ok" | "rate" | "error", retry_after)`` after it. The limit starts at ``limit`` (the
    caller's ``concurrency``), never exceeds it and never drops below ``minimum``.

    Rate limits are usually requests per second, and near them the limit is small (4 requests
    in flight at 20 req/s and 200 ms), where "+1 per round" is a 25 % jump and every probe is
    a 429. So once a 429 has been seen: sends are *paced* at ``limit / rtt`` per second (rtt:
    the smoothed duration of successful requests), which makes a fractional limit meaningful,
    and while 429s are recent (``calm`` seconds) the limit grows ten times more slowly.
    """

    def __init__(
        self,
        limit: int,
        *,
        minimum: int = 1,
        decrease: float = 0.7,
        calm: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1:
            raise ValueError(f"concurrency must be at least 1, but {limit!r} was passed")
        self.max_limit = int(limit)
        self.minimum = max(1, min(int(minimum), self.max_limit))
        self.limit = float(limit)
        self.lowest = float(limit)
        self.decrease = decrease
        self.calm = calm
        self.in_flight = 0
        self.decreases = 0
        self.rtt: float | None = None
        self._clock = clock
        self._paused_until = 0.0
        self._next_send = 0.0
        self._last_429 = -math.inf
        self._sent: dict[int, float] = {}
        self._issued = 0  # tickets handed out so far
        self._mark = 0  # tickets <= mark were issued before the last decrease
        self._cond: asyncio.Condition | None = None

    # -- pure bookkeeping (tested without an event loop) ---------------------------------
    def allowed(self) -> int:
        """Requests allowed in flight right now."""
        return max(self.minimum, math.ceil(self.limit) if self.pacing else int(self.limit))

    @property
    def pacing(self) -> bool:
        """Whether sends are spaced out (after the first 429, once a round trip is measured)."""
        return self._last_429 > -math.inf and self.rtt is not None

    def pause_remaining(self) -> float:
        """Seconds until the next send may start (Retry-After pause, then pacing)."""
        until = self._paused_until
        if self.pacing:
            until = max(until, self._next_send)
        return max(0.0, until - self._clock())

    def take(self) -> int:
        """Record a send; returns its ticket (call only when ``in_flight < allowed()``)."""
        now = self._clock()
        self.in_flight += 1
        self._issued += 1
        self._sent[self._issued] = now
        if self.pacing:
            assert self.rtt is not None
            self._next_send = max(now, self._next_send) + self.rtt / max(self.limit, 1e-9)
        return self._issued

    def give_back(
        self, ticket: int, outcome: Literal["ok", "rate", "error"], retry_after: float | None = None
    ) -> None:
        """Record how the request with ``ticket`` ended and adapt the limit."""
        now = self._clock()
        self.in_flight -= 1
        sent = self._sent.pop(ticket, now)
        if outcome == "ok":
            took = max(now - sent, 1e-4)
            self.rtt = took if self.rtt is None else 0.8 * self.rtt + 0.2 * took
            gain = 0.1 if now - self._last_429 < self.calm else 1.0
            self.limit = min(float(self.max_limit), self.limit + gain / max(self.limit, 1.0))
        elif outcome == "rate":
            self._last_429 = now
            if ticket > self._mark:  # started after the last decrease: a fresh signal
                self.limit = max(float(self.minimum), self.limit * self.decrease)
                self.lowest = min(self.lowest, self.limit)
                self.decreases += 1
                self._mark = self._issued
            if retry_after is not None and retry_after > 0:
                self._paused_until = max(
                    self._paused_until, now + min(retry_after, MAX_RETRY_AFTER)
                )

    # -- asyncio front end ------------------------------------------------------------
    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    async def acquire(self) -> int:
        cond = self._condition()
        async with cond:
            while True:
                pause = self.pause_remaining()
                if pause > 0:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(cond.wait(), timeout=pause)
                    continue
                if self.in_flight < self.allowed():
                    return self.take()
                await cond.wait()

    async def release(
        self, ticket: int, outcome: Literal["ok", "rate", "error"], retry_after: float | None = None
    ) -> None:
        cond = self._condition()
        async with cond:
            self.give_back(ticket, outcome, retry_after)
            cond.notify_all()

    def __repr__(self) -> str:
        return (
            f"AdaptiveLimiter(limit={self.limit:.2f}, max={self.max_limit}, "
            f"in_flight={self.in_flight})"
        )
