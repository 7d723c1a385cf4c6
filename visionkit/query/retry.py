"""The retry policy for batched requests (pure functions, testable without a network).

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
- ``decide(kind, attempt, max_retries, retry_after)`` -> a ``Verdict``: stop the run, fail the
  row (with a note saying why it was not retried), or retry after a delay.

The reaction of the whole batch to 429s (the adaptive window) is ``visionkit.query.window``.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "INITIAL_RETRY_DELAY",
    "MAX_RETRY_AFTER",
    "MAX_RETRY_DELAY",
    "Verdict",
    "classify",
    "decide",
    "gave_up",
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


@dataclass(frozen=True)
class Verdict:
    """What to do after a failed attempt: ``"stop"`` the run, ``"fail"`` the row (``note``:
    why it was not retried, for its error) or ``"retry"`` after ``delay`` seconds."""

    action: Literal["stop", "fail", "retry"]
    delay: float = 0.0
    note: str | None = None


def decide(
    kind: Kind,
    attempt: int,
    max_retries: int,
    retry_after: float | None = None,
    *,
    rand: Callable[[], float] = random.random,
) -> Verdict:
    """The policy after attempt number ``attempt`` failed as ``kind`` (see ``classify``).

    >>> decide("retry", 1, 6, rand=lambda: 0.0)
    Verdict(action='retry', delay=0.5, note=None)
    >>> decide("rate", 3, 2).note
    'gave up after 3 attempts'
    """
    if kind == "auth":
        return Verdict("stop")
    if kind == "fail":
        return Verdict("fail")
    if attempt > max_retries:
        return Verdict("fail", note=gave_up(attempt, max_retries))
    if retry_after is not None and retry_after > MAX_RETRY_AFTER:
        return Verdict("fail", note=f"server asked to wait {retry_after:.0f} s; not retried")
    return Verdict("retry", delay=retry_delay(attempt, retry_after, rand=rand))


def gave_up(attempts: int, max_retries: int) -> str:
    """``gave up after 3 attempts``; ``gave up after 1 attempt; max_retries=0``."""
    text = f"gave up after {attempts} attempt{'s' if attempts != 1 else ''}"
    return f"{text}; max_retries=0" if max_retries == 0 else text


def headers_of(exc: BaseException) -> Any:
    """The response headers of an SDK status error, or None."""
    response = getattr(exc, "response", None)
    return getattr(response, "headers", None)
