"""Retry policy and adaptive concurrency for batched requests (pure, testable without a network).

Why visionkit owns its retry loop instead of the ``openai`` SDK's (``max_retries``): the SDK
retries each request on its own, out of sight, so a batch cannot see a 429 as it happens. A
batch needs to *react* to 429s as a whole -- send fewer requests at once and hold off all
senders for the server's ``Retry-After`` -- and to count retries per row. So ``ask`` builds its
SDK client with ``max_retries=0`` and retries here with the SDK's own shape: exponential
backoff from 0.5 s capped at 8 s with up to 25 % jitter, and ``retry-after-ms`` / ``retry-after``
(seconds or an HTTP date) honoured up to two minutes.

- ``retry_delay(attempt, retry_after=None)`` -> seconds to wait before retry ``attempt``.
- ``classify(exc)`` -> what a failure means for the batch: ``"auth"`` (stop the run),
  ``"rate"`` (429: slow down, retry), ``"retry"`` (5xx, 408, 409, timeouts, dropped
  connections) or ``"fail"`` (any other 4xx: that row fails with the provider's message).
- ``AdaptiveLimiter``: an AIMD limit on requests in flight. Each success adds ``1/limit`` (so
  about +1 per round of requests); a 429 multiplies the limit by ``decrease`` at most once per
  round (only a request started after the last decrease can trigger the next), and a
  ``Retry-After`` pauses every new send until it has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import math
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

__all__ = [
    "INITIAL_RETRY_DELAY",
    "MAX_RETRY_AFTER",
    "MAX_RETRY_DELAY",
    "AdaptiveLimiter",
    "classify",
    "parse_retry_after",
    "retry_delay",
]

INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
MAX_RETRY_AFTER = 120.0  # like the SDK: a longer Retry-After fails the row instead of waiting

Kind = Literal["auth", "rate", "retry", "fail"]


def retry_delay(
    attempt: int, retry_after: float | None = None, *, rand: Callable[[], float] = random.random
) -> float:
    """Seconds to wait before retry number ``attempt`` (1 for the first retry).

    A server's ``retry_after`` (seconds, up to ``MAX_RETRY_AFTER``) wins, plus up to 10 % so
    that many waiting rows do not return in one burst; otherwise ``0.5 * 2**(attempt-1)``
    capped at 8 s, minus up to 25 % jitter.

    >>> [retry_delay(n, rand=lambda: 0.0) for n in (1, 3, 9)]
    [0.5, 2.0, 8.0]
    >>> retry_delay(1, retry_after=3.0, rand=lambda: 0.0)
    3.0
    """
    if retry_after is not None and math.isfinite(retry_after) and retry_after >= 0:
        return min(retry_after, MAX_RETRY_AFTER) * (1.0 + 0.1 * rand())
    n = max(0, min(attempt - 1, 60))
    return min(INITIAL_RETRY_DELAY * 2.0**n, MAX_RETRY_DELAY) * (1.0 - 0.25 * rand())


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from ``retry-after-ms``, else ``retry-after`` (seconds or HTTP date), else None."""
    if not headers:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            continue
        if math.isfinite(seconds):
            return max(0.0, seconds)
    value = headers.get("retry-after")
    if value:
        try:
            parsed = email.utils.parsedate_tz(value)
            if parsed is not None:
                return max(0.0, float(email.utils.mktime_tz(parsed) - time.time()))
        except (TypeError, ValueError, OverflowError):
            return None
    return None


def classify(exc: BaseException) -> Kind:
    """What an ``openai`` SDK error means for a batch (see the module docstring)."""
    import openai

    if isinstance(exc, openai.AuthenticationError):
        return "auth"
    if isinstance(exc, openai.RateLimitError):
        return "rate"
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code >= 500 or exc.status_code in (408, 409):
            return "retry"
        return "fail"
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return "retry"
    return "fail"


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


def headers_of(exc: BaseException) -> Any:
    """The response headers of an SDK status error, or None."""
    response = getattr(exc, "response", None)
    return getattr(response, "headers", None)
