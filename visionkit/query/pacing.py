"""Known rate limits, paced from the first request; and the ``Gate`` every send goes through.

Why pace: a provider's limit is usually documented (inference.net: 30 requests a minute on the
free tier, 250 on the paid one), and a run that only *reacts* to 429s starts with a burst the
limiter refuses -- measured against a strict limiter at 250/min with 800 ms latency and
concurrency 16, 19 % of requests were refused, most of them the opening burst. Given the limit
(``ask(..., requests_per_minute=250)``, or ``vk.connect(..., tier="paid")``), sends are spaced
evenly from the first one, a little under the limit (``HEADROOM``), so nothing is refused and
the limit is still used almost fully.

``Pacer`` is the pure schedule (tested without an event loop): requests ``60 / rpm`` seconds
apart, and with ``tokens_per_minute`` each request also books ``tokens * 60 / tpm`` seconds of
token budget -- its estimated prompt tokens plus ``max_tokens`` when the request sets one,
corrected by ``settle`` with the usage the provider reports once the answer is in (completion
tokens are not known before). Providers enforce per-minute limits with windows or buckets that
allow some burst; spacing evenly is within any of them.

``Gate`` is what a run asks before each send. It composes the pacer with the adaptive limit on
requests in flight (``visionkit.query.window.AdaptiveLimiter``: AIMD on 429s, the server's
``Retry-After`` pause, pacing after a 429), so the stricter of the two always wins: a known limit
that is wrong (a free key told it is paid) still meets the 429 machinery.

Limits the server announces in its headers (``visionkit.query.limits``: OpenAI's
``x-ratelimit-*`` or the IETF's ``RateLimit-Policy``) are read from every answer and paced to
as if they had been given (``Gate.learn``), the stricter of the two where both are known.

**The seam for a cluster-wide limit (Dask).** A run uses exactly four calls, so a ``Gate``
backed by ``distributed`` can replace this one without touching the run:

    ticket = await gate.acquire(tokens)          # wait until this request may start
    await gate.release(ticket, "ok", tokens=usage_tokens)   # or "error" (5xx, timeout, 4xx)
    await gate.report_429(ticket, retry_after)   # a 429: ends the ticket, slows everyone
    gate.learn(announced(response.headers))      # limits the server announced: pace to them

``tokens`` is the request's booked estimate (``acquire``) and, on release, the tokens the
provider reported (``None`` if unknown). A cluster version would keep the ``Pacer``'s next-slot
times and the AIMD state in one place (a ``distributed`` Actor on the scheduler, or a
``Variable`` + ``Lock``), hand out slots and tickets to workers, and broadcast a 429's pause; the
cost is one round trip to that coordinator per ``acquire`` and per ``release``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ..providers import RateLimits
from .limits import Announced
from .window import AdaptiveLimiter

__all__ = ["HEADROOM", "Announced", "Gate", "Pacer", "RateLimits"]

# Pace at this fraction of a known limit: clocks, network jitter and the provider's own window
# boundaries make sends land a little early or late; 3 % is enough to stay clear of a strict
# limiter and still uses 97 % of the limit. A 429 met while paced widens the margin by 2 % (to
# at most 20 %): the limit is stricter than documented, or arrivals bunch up on the way; each
# accepted request wins back a hundredth of that, so a moment of jitter does not slow a long
# run for good and the margin settles where about 1 % of requests meet a 429.
HEADROOM = 0.97
MIN_HEADROOM = 0.8
RECOVER = 0.0002  # margin won back per accepted request (see Pacer.recover)


@dataclass
class Pacer:
    """Even spacing under known per-minute limits (either may be ``None``: not limited)."""

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    headroom: float = HEADROOM
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        for name in ("requests_per_minute", "tokens_per_minute"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"{name} must be a number > 0 or None, not {value!r}")
        self._next_request = -math.inf
        self._next_tokens = -math.inf
        self._initial_headroom = self.headroom

    @classmethod
    def from_limits(cls, limits: RateLimits | None, **kwargs: object) -> Pacer | None:
        """A pacer for ``limits``, or ``None`` when nothing is known."""
        if limits is None or (
            limits.requests_per_minute is None and limits.tokens_per_minute is None
        ):
            return None
        return cls(limits.requests_per_minute, limits.tokens_per_minute, **kwargs)  # type: ignore[arg-type]

    @property
    def request_interval(self) -> float:
        rpm = self.requests_per_minute
        return 0.0 if rpm is None else 60.0 / (rpm * self.headroom)

    def token_seconds(self, tokens: int) -> float:
        tpm = self.tokens_per_minute
        return 0.0 if tpm is None else max(0, tokens) * 60.0 / (tpm * self.headroom)

    def reserve(self, tokens: int = 0) -> float:
        """Book the next send (``tokens`` of budget); returns seconds to wait before it."""
        now = self.clock()
        start = max(now, self._next_request, self._next_tokens)
        self._next_request = start + self.request_interval
        # A request may start once the token budget of those before it has been spread out;
        # its own tokens push the next one back.
        self._next_tokens = start + self.token_seconds(tokens)
        return start - now

    def started(self) -> None:
        """A booked send really started now: the next one keeps a full interval from it, so
        a send that woke up late is not followed by one that is early."""
        self._next_request = max(self._next_request, self.clock() + self.request_interval)

    def back_off(self) -> None:
        """A 429 although paced: the limit is stricter than we were told, or arrivals bunch up
        on the way (scheduling jitter). Widen the margin by 2 %, down to 80 % of the limit."""
        self.headroom = max(MIN_HEADROOM, self.headroom * 0.98)

    def recover(self) -> None:
        """An accepted request: win back a little of the margin (up to the initial one).

        Slowly on purpose: with -2 % per 429 and +0.02 points per success the margin settles
        where about one request in a hundred is refused -- the equilibrium ``p * 2 % = (1 - p)
        * 0.02 %`` -- instead of oscillating into a steady stream of 429s.
        """
        self.headroom = min(self._initial_headroom, self.headroom + RECOVER)

    def settle(self, booked: int, used: int | None) -> None:
        """Correct the token schedule once the provider reported what a request used."""
        if used is None or self.tokens_per_minute is None:
            return
        shift = self.token_seconds(abs(used - booked))
        self._next_tokens += shift if used > booked else -shift


class Gate:
    """The one place a run asks before sending: known-limit pacing + adaptive concurrency.

    See the module docstring for the three calls and for making it cluster-wide.
    """

    def __init__(
        self,
        concurrency: int,
        limits: RateLimits | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limiter = AdaptiveLimiter(concurrency, clock=clock)
        self.pacer = Pacer.from_limits(limits, clock=clock)
        self.given = limits  # what the caller said; announced limits never loosen it
        self.announced: Announced | None = None
        self._clock = clock
        self._pace_lock: asyncio.Lock | None = None

    @property
    def in_flight(self) -> int:
        return self.limiter.in_flight

    @property
    def lowest(self) -> float:
        return self.limiter.lowest

    async def acquire(self, tokens: int = 0) -> int:
        """Wait until a request of ``tokens`` may start; returns its ticket.

        Pacing comes first, one waiter at a time (so no one books a slot far ahead), then a
        place in the concurrency window; a send therefore never starts before its slot. A
        waiter that came before the limits were learnt is paced once it has its place.
        """
        paced = self.pacer is not None
        if paced:
            await self._pace(tokens)
        # (the pacer spaces paced sends: the window's own spreading would only delay them
        # past their slots, and the next one's slot then comes early after them)
        ticket = await self.limiter.acquire(spread=not paced)
        if self.pacer is not None:
            if not paced:
                try:
                    await self._pace(tokens)
                except BaseException:
                    await self.limiter.release(ticket, "error")
                    raise
            self.pacer.started()
        return ticket

    async def _pace(self, tokens: int) -> None:
        assert self.pacer is not None
        if self._pace_lock is None:
            self._pace_lock = asyncio.Lock()
        async with self._pace_lock:
            delay = self.pacer.reserve(tokens)
            if delay > 0:
                await asyncio.sleep(delay)

    async def release(
        self,
        ticket: int,
        outcome: Literal["ok", "error"],
        *,
        booked: int = 0,
        tokens: int | None = None,
    ) -> None:
        """The request with ``ticket`` ended without a 429; ``tokens``: what it really used."""
        if self.pacer is not None and outcome == "ok":
            self.pacer.settle(booked, tokens)
            self.pacer.recover()
        await self.limiter.release(ticket, outcome)

    def learn(self, found: Announced | None) -> None:
        """Pace to the limits a server announced (``visionkit.query.limits``), as if the
        caller had passed them -- the stricter of the two where both are known."""
        if found is None:
            return
        if found.exhausted_for and not (found.requests_per_minute or found.tokens_per_minute):
            # nothing left and no rate to pace to: hold until the server says (with a rate,
            # the pace already spreads what is left; "reset" there means "whole again")
            self.limiter.pause(found.exhausted_for)
        if found == self.announced or (
            found.requests_per_minute is None and found.tokens_per_minute is None
        ):
            return
        self.announced = found
        given = self.given or RateLimits()
        requests = _stricter(given.requests_per_minute, found.requests_per_minute)
        tokens = _stricter(given.tokens_per_minute, found.tokens_per_minute)
        if self.pacer is None:
            self.pacer = Pacer(requests, tokens, clock=self._clock)
        else:
            self.pacer.requests_per_minute = requests
            self.pacer.tokens_per_minute = tokens

    async def report_429(self, ticket: int, retry_after: float | None = None) -> None:
        """The request with ``ticket`` was refused with a 429 (ends the ticket)."""
        if self.pacer is not None:
            # paced to a known limit: the pacer widens its margin; the window stays as it is
            # (cutting it too would pace below the limit the pacer already holds to)
            self.pacer.back_off()
            await self.limiter.release(ticket, "rate", retry_after, adapt=False)
            return
        await self.limiter.release(ticket, "rate", retry_after)


def _stricter(a: float | None, b: float | None) -> float | None:
    known = [x for x in (a, b) if x]
    return min(known) if known else None
