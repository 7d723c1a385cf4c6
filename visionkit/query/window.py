"""How many requests may be in flight, and how fast they may go, learnt from the server's 429s.

``AdaptiveLimiter`` has two modes, as TCP's congestion control has:

- **Window** (until the first 429): a limit on requests in flight. It starts small -- the
  larger of ``INITIAL_WINDOW`` and a quarter of ``concurrency`` -- and grows by one per success
  (*slow start*: it doubles each round trip) up to ``concurrency``; a server with no limit
  reaches full speed in two or three round trips, and a server with a limit nobody told us
  meets the opening burst with a few requests, not ``concurrency`` of them at once.
- **Rate** (after a 429): rate limits are requests per second, and near one the window is a
  request or two, where any step is a jump. So sends are *paced*: the first 429 sets the rate
  to half what the window was sending (``window / rtt``), each later one (from a request sent
  after the last change: one signal per change) cuts it by ``decrease``. Each success raises
  it a little (``gain``), faster (``recover``) while it is below ``plateau`` of the rate the
  last 429 came at, and faster the longer no 429 has come (``accelerate``: a 429 that was a
  passing hiccup, not a limit, is left behind in a few dozen successes). After ``calm``
  seconds without a 429 the limiter goes back to the window, from the rate's equivalent.
- Sends within the window are spread ``spread x rtt / window`` apart once a round trip is
  known, so a window that grows by a round's successes does not go out as one burst -- the
  burst that a token bucket refuses in one go.

A 429's ``Retry-After`` pauses every new send until it has passed. Measured against the
stand-in (a token bucket) by ``benchmarks/bench_ask.py --pacing``; the bookkeeping is pure
(tested without an event loop), ``acquire``/``release`` are its asyncio front end.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Literal

from .retry import MAX_RETRY_AFTER

__all__ = ["INITIAL_WINDOW", "AdaptiveLimiter"]

INITIAL_WINDOW = 4  # requests in flight before anything is known (at least; see the docstring)
MIN_RATE = 0.05  # requests per second: never slower than one every 20 s
MIN_SPREAD = 0.002  # seconds: sends closer than this within the window are not spread


class AdaptiveLimiter:
    """Requests in flight and their pace, adapted to 429s (see the module docstring).

    ``ticket = await limiter.acquire()`` before a send, ``await limiter.release(ticket,
    "ok" | "rate" | "error", retry_after)`` after it. ``limit`` is the window (requests in
    flight; never above ``concurrency``, never below ``minimum``), ``rate`` the pace in
    requests per second once a 429 was seen (``None`` before).
    """

    def __init__(
        self,
        limit: int,
        *,
        minimum: int = 1,
        initial: int | None = None,
        decrease: float = 0.7,
        first_cut: float = 0.5,
        probe: float = 0.02,
        recover: float = 0.15,
        plateau: float = 0.85,
        accelerate: float = 10.0,
        soon: int = 3,
        spread: float = 0.5,
        calm: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1:
            raise ValueError(f"concurrency must be at least 1, but {limit!r} was passed")
        self.max_limit = int(limit)
        self.minimum = max(1, min(int(minimum), self.max_limit))
        start = max(INITIAL_WINDOW, self.max_limit // 2) if initial is None else initial
        self.limit = float(max(self.minimum, min(start, self.max_limit)))
        self.slow_start = self.limit < self.max_limit
        self.rate: float | None = None
        self.lowest = float(limit)
        self.decrease = decrease
        self.first_cut = first_cut
        self.probe = probe
        self.recover = recover
        self.plateau = plateau
        self.accelerate = accelerate
        self.soon = soon
        self.spread = spread
        self.calm = calm
        self._changed = 0.0  # when the rate was last cut
        self._cut_once = False
        self._grown = 0.0  # when it last grew
        self.in_flight = 0
        self.decreases = 0
        self.rtt: float | None = None
        self._clock = clock
        self._paused_until = 0.0
        self._next_send = 0.0  # paced (rate mode): the next send's time
        self._spread_until = 0.0  # window mode: sends spread over the round trip
        self._last_429 = -math.inf
        self._top = 0.0  # recover quickly up to this rate (plateau x the rate of the last 429)
        self._sent: dict[int, float] = {}
        self._issued = 0  # tickets handed out so far
        self._mark = 0  # tickets <= mark were issued before the last change
        self._waiters: dict[asyncio.Future[None], None] = {}  # in arrival order

    # -- pure bookkeeping (tested without an event loop) ---------------------------------
    def allowed(self) -> int:
        """Requests allowed in flight right now."""
        self._settle()
        if self.rate is not None:
            return self.max_limit  # the pace limits them
        return max(self.minimum, int(self.limit))

    @property
    def pacing(self) -> bool:
        """Whether sends are spaced out (after a 429, until ``calm`` seconds without one)."""
        self._settle()
        return self.rate is not None

    def pause_remaining(self, *, spread: bool = True) -> float:
        """Seconds until the next send may start (Retry-After pause, then pacing; ``spread``:
        the window's spreading too -- not when a known limit's pacer already spaces sends)."""
        until = self._paused_until
        if self.pacing:
            until = max(until, self._next_send)
        elif spread and self.spread:
            until = max(until, self._spread_until)
        return max(0.0, until - self._clock())

    def take(self) -> int:
        """Record a send; returns its ticket (call only when ``in_flight < allowed()``)."""
        now = self._clock()
        self.in_flight += 1
        self._issued += 1
        self._sent[self._issued] = now
        if self.pacing:
            assert self.rate is not None
            self._next_send = max(now, self._next_send) + 1.0 / self.rate
        elif self.spread and self.rtt is not None:
            gap = self.spread * self.rtt / self.limit
            if gap >= MIN_SPREAD:  # (a shorter wait costs the event loop more than it spreads)
                self._spread_until = max(now, self._spread_until) + gap
        return self._issued

    def give_back(
        self,
        ticket: int,
        outcome: Literal["ok", "rate", "error"],
        retry_after: float | None = None,
        *,
        adapt: bool = True,
    ) -> None:
        """Record how the request with ``ticket`` ended and adapt (``adapt=False``: a 429 met
        while paced to a known limit -- the pacer widens its own margin; only the Retry-After
        pause applies here)."""
        now = self._clock()
        self.in_flight -= 1
        sent = self._sent.pop(ticket, now)
        if outcome == "ok":
            took = max(now - sent, 1e-4)
            self.rtt = took if self.rtt is None else 0.8 * self.rtt + 0.2 * took
            self._grow()
        elif outcome == "rate":
            if adapt:
                self._last_429 = now
            if adapt and ticket > self._mark:  # sent after the last change: a fresh signal
                self._slow_down()
            if retry_after is not None and retry_after > 0:
                self._paused_until = max(
                    self._paused_until, now + min(retry_after, MAX_RETRY_AFTER)
                )

    def pause(self, seconds: float) -> None:
        """Hold every new send for ``seconds`` (a server said nothing is left until then)."""
        if seconds > 0:
            until = self._clock() + min(seconds, MAX_RETRY_AFTER)
            self._paused_until = max(self._paused_until, until)

    def _grow(self) -> None:
        now = self._clock()
        if self.pacing:
            assert self.rate is not None
            # Rates grow with time, not per success (a slow limit has few successes): back to
            # ``plateau`` of where the last 429 came within a second or two, then a probe of
            # ``probe`` a second, faster the longer no 429 has come (``accelerate`` seconds
            # double it) -- a 429 that was a passing hiccup, not a limit, is soon left behind.
            elapsed = min(max(0.0, now - self._grown), 1.0)
            self._grown = now
            if self.rate < self._top:
                rate = min(self._top, self.rate * math.exp(self.recover * elapsed))
            else:
                quiet = now - self._changed
                rate = self.rate * math.exp(self.probe * elapsed * (1.0 + quiet / self.accelerate))
            ceiling = self.max_limit / self.rtt if self.rtt else math.inf
            self.rate = max(MIN_RATE, min(rate, ceiling))
        elif self.slow_start:
            self.limit = min(float(self.max_limit), self.limit + 1.0)
            self.slow_start = self.limit < self.max_limit
        else:
            self.limit = min(float(self.max_limit), self.limit + 1.0 / max(self.limit, 1.0))

    def _slow_down(self) -> None:
        self.slow_start = False
        if self.rtt is None:
            # nothing answered yet, so no pace is known: halve the window, as TCP does
            self.limit = max(float(self.minimum), self.limit * 0.5)
            self.lowest = min(self.lowest, self.limit)
            self.decreases += 1
            self._mark = self._issued
            return
        rtt = self.rtt
        before = self.rate if self.rate is not None else self.limit / rtt
        if self.rate is None and not self._cut_once:
            # the run's first 429: the window had doubled past the limit; half of it
            self.rate = max(MIN_RATE, before * self.first_cut)
        elif self._issued - self._mark <= self.soon:
            # refused again within a few sends of the last cut: it was far too little
            self.rate = max(MIN_RATE, before * self.first_cut)
        else:
            self.rate = max(MIN_RATE, before * self.decrease)
        self._cut_once = True
        self._top = before * self.plateau
        self._changed = self._grown = self._clock()
        self._next_send = min(self._next_send, self._clock() + 1.0 / self.rate)
        self.lowest = min(self.lowest, max(float(self.minimum), self.rate * rtt))
        self.decreases += 1
        self._mark = self._issued

    def _settle(self) -> None:
        """Back to the window after ``calm`` seconds without a 429."""
        if self.rate is not None and self._clock() - self._last_429 >= self.calm:
            rtt = self.rtt or 1.0
            self.limit = float(max(self.minimum, min(self.max_limit, int(self.rate * rtt) or 1)))
            self.rate = None

    # -- asyncio front end ------------------------------------------------------------
    # No lock and no ``asyncio.Condition``: the bookkeeping above never awaits, so on one
    # event loop each call is atomic already. A waiter waits on a future of its own, which a
    # release (``wake_all``) or the end of its pause resolves; cancelled at any moment it only
    # drops that future. (It was ``asyncio.wait_for(condition.wait(), pause)``: on Python
    # 3.11 that runs the wait as a second task, and a waiter cancelled -- a run stopping --
    # while that task took the lock back after the pause ran out released a lock it did not
    # hold; the second task then kept it for good and every later release waited forever.)
    async def acquire(self, *, spread: bool = True) -> int:
        """Wait for a place in the window and the end of any pause; returns the ticket."""
        while True:
            pause = self.pause_remaining(spread=spread)
            if pause <= 0 and self.in_flight < self.allowed():
                return self.take()
            await self._wait(pause if pause > 0 else None)

    async def _wait(self, timeout: float | None) -> None:
        """Until the next ``wake_all`` or ``timeout`` seconds, whichever is first."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters[waiter] = None
        timer = None if timeout is None else loop.call_later(timeout, _resolve, waiter)
        try:
            await waiter
        finally:
            del self._waiters[waiter]
            if timer is not None:
                timer.cancel()

    def wake_all(self) -> None:
        """Wake every waiter to look again (after a release, or a ticket given back)."""
        for waiter in self._waiters:
            _resolve(waiter)

    async def release(
        self,
        ticket: int,
        outcome: Literal["ok", "rate", "error"],
        retry_after: float | None = None,
        *,
        adapt: bool = True,
    ) -> None:
        self.give_back(ticket, outcome, retry_after, adapt=adapt)
        self.wake_all()

    def __repr__(self) -> str:
        mode = f"rate={self.rate:.2f}/s" if self.rate is not None else f"limit={self.limit:.2f}"
        return f"AdaptiveLimiter({mode}, max={self.max_limit}, in_flight={self.in_flight})"


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
