"""One request through the SDK: wait for the gate, send, and retry as the policy says.

``Sender.send`` is a run's way to the provider for one checked row: it books the request with
the gate (``visionkit.query.pacing.Gate``: known and announced limits, the adaptive window),
sends the exact bytes that were checked through the SDK's ``post``, reads the limits the
answer announces, and on a failure asks ``visionkit.query.retry.decide`` what to do -- stop the
run (a 401), fail the row, or retry after a delay. Waits end early when the run stops starting
requests (``wake``), so an interrupt is never held up by a pacing slot or a Retry-After.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .client import Session, raw_response
from .limits import announced
from .messages import describe_error
from .outcome import INTERRUPTED, RowResult, Tally
from .plan import Plan
from .retry import classify, decide, headers_of, parse_retry_after
from .rows import RowPlan

__all__ = ["Sender"]

logger = logging.getLogger("visionkit")


@dataclass
class Sender:
    """What a run's sends share: the plan, the gate, the tally, the SDK client, and the run's
    stop signals (``wake`` is set, ``stopping()`` true, once no new request may start;
    ``stop(exc)`` stops the run for good, for a 401)."""

    plan: Plan
    gate: Any
    tally: Tally
    session: Session
    wake: asyncio.Event
    stopping: Callable[[], bool]
    stop: Callable[[BaseException], None]

    async def send(self, row: RowPlan, result: RowResult) -> Any:
        """Send ``row``'s request, retrying as the policy says: the SDK's response, or
        ``None`` with ``result.error`` saying why not; ``result.latency_s`` is the seconds the
        answering attempt took."""
        import openai
        from openai.types.chat import ChatCompletion

        plan = self.plan
        max_retries = plan.options.max_retries
        prepared = row.request
        assert prepared is not None and row.key is not None
        result.estimated_tokens = prepared.estimated_tokens
        self.tally.estimated_tokens += prepared.estimated_tokens
        # What a tokens-per-minute limit is booked for before the answer says: the prompt's
        # estimate plus the completion the request allows at most, if it says.
        max_tokens = plan.options.request_options.get("max_tokens")
        booked = prepared.estimated_tokens + (max_tokens if isinstance(max_tokens, int) else 0)
        attempt = 0
        while True:
            if self.stopping():
                if attempt == 0:
                    result.error = INTERRUPTED
                else:
                    result.error = f"{result.error} (not retried: interrupted)"
                return None
            ticket = await self._acquire(booked)
            if ticket is None:  # stopping: the top of the loop says why
                continue
            if self.stopping():
                await self.gate.release(ticket, "error")
                continue
            attempt += 1
            result.attempts = attempt
            self.tally.requests += 1
            try:
                # The body goes out verbatim through the SDK's documented ``post`` (auth,
                # errors and response types are the SDK's): the JSON bytes serialised -- once,
                # in the thread pool -- and measured in ``prepare_request``. That skips
                # ``create``'s per-call re-typing of every field and a second serialisation
                # on the event loop, which together cost more CPU than everything else
                # visionkit does per row. The raw response is asked for (as the SDK's
                # ``with_raw_response`` does) to read the rate limits the server announces.
                started = time.perf_counter()
                raw = await self.session.sdk().post(
                    "/chat/completions",
                    cast_to=ChatCompletion,
                    content=prepared.payload,
                    options=raw_response(),
                )
                result.latency_s = time.perf_counter() - started  # this attempt's, if it answers
                self.gate.learn(announced(raw.headers))
                response = raw.parse()
            except openai.APIError as exc:
                kind = classify(exc)
                self.gate.learn(announced(headers_of(exc)))
                retry_after = parse_retry_after(headers_of(exc))
                if kind == "rate":
                    self.tally.rate_limited += 1
                    await self.gate.report_429(ticket, retry_after)
                else:
                    await self.gate.release(ticket, "error")
                verdict = decide(kind, attempt, max_retries, retry_after)
                if verdict.action == "stop":
                    self.stop(exc)
                    return None
                result.error = describe_error(exc)
                if verdict.action == "fail":
                    if verdict.note:
                        result.error = f"{result.error} ({verdict.note})"
                    return None
                self.tally.retries += 1
                logger.info(
                    "row %r: %s; retry %d of %d in %.2f s",
                    row.label,
                    result.error,
                    attempt,
                    max_retries,
                    verdict.delay,
                )
                with contextlib.suppress(asyncio.TimeoutError):  # woken early by a stop
                    await asyncio.wait_for(self.wake.wait(), timeout=verdict.delay)
                continue
            except BaseException:
                await self.gate.release(ticket, "error")
                raise
            usage = getattr(response, "usage", None)
            used = getattr(usage, "total_tokens", None)
            await self.gate.release(ticket, "ok", booked=booked, tokens=used)
            result.error = None
            return response

    async def _acquire(self, tokens: int) -> int | None:
        """The gate's ticket for a send, or ``None`` if the run stops while waiting for it
        (a pacing slot or a Retry-After pause can be long: an interrupt must not wait)."""
        if self.stopping():
            return None
        acquire = asyncio.ensure_future(self.gate.acquire(tokens))
        stop = asyncio.ensure_future(self.wake.wait())
        try:
            await asyncio.wait({acquire, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not acquire.done():
                acquire.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await acquire
        if acquire.cancelled():
            return None
        ticket: int = acquire.result()
        return ticket
