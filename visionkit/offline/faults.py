"""Failures on purpose: one-shot injected faults, and the token bucket behind ``rate_limit``."""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass

from .rules import Reply

__all__ = ["Fault", "TokenBucket", "duration_text", "fault_name", "fault_reply", "retry_headers"]


@dataclass
class Fault:
    """A one-shot fault for the next chat request (see ``OfflineServer.inject``)."""

    status: int | None = None
    retry_after: float | None = None
    delay: float = 0.0
    drop: bool = False
    message: str | None = None


class TokenBucket:
    """Requests/second with a burst; a refused request is told when a token will be free *for
    it*: refusals are handed successive future tokens, so clients that honour Retry-After come
    back spread out instead of all at once (a thundering herd of retries)."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()
        self.promised: deque[float] = deque()  # times told to refused requests, ascending

    def take(self) -> float:
        """0.0 when a request may go now (and takes a token), else seconds until one frees."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        while self.promised and self.promised[0] <= now:
            self.promised.popleft()
        wait = (len(self.promised) + 1 - self.tokens) / self.rate
        self.promised.append(now + wait)
        return wait


def retry_headers(seconds: float) -> dict[str, str]:
    # Retry-After is integer seconds by the HTTP spec (rounded up); retry-after-ms is exact and
    # is what the openai SDK reads first.
    return {
        "Retry-After": str(max(1, math.ceil(seconds))),
        "retry-after-ms": str(max(1, math.ceil(seconds * 1000))),
    }


def duration_text(seconds: float) -> str:
    """A duration as OpenAI's ``x-ratelimit-reset-*`` headers write it: ``20ms``, ``1.5s``,
    ``6m0s``, ``1h2m3s``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.3g}s" if secs != int(secs) else f"{int(secs)}s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}"
    return f"{int(minutes)}m{text}" if minutes else text


def fault_name(fault: Fault) -> str:
    if fault.drop:
        return "drop"
    if fault.status is not None:
        return f"status {fault.status}"
    return f"delay {fault.delay:g}s"


def fault_reply(fault: Fault) -> Reply:
    status = int(fault.status or 500)
    headers = retry_headers(fault.retry_after) if fault.retry_after is not None else {}
    if status == 429:
        return Reply(
            429,
            fault.message or "Rate limit reached (injected by the offline stand-in).",
            type="requests",
            code="rate_limit_exceeded",
            headers=headers,
        )
    if status >= 500:
        return Reply(
            status,
            fault.message or "The server had an error (injected by the offline stand-in).",
            type="server_error",
            headers=headers,
        )
    return Reply(
        status,
        fault.message or f"Injected error {status} from the offline stand-in.",
        headers=headers,
    )
