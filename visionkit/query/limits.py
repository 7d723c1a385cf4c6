"""Rate limits a server announces in its response headers, read so a run paces to them.

Two conventions are read, from any response (an answer or a 429):

- OpenAI's, which many OpenAI-compatible servers copy: ``x-ratelimit-limit-requests`` and
  ``x-ratelimit-limit-tokens`` (per minute), ``x-ratelimit-remaining-requests`` /
  ``-tokens`` and ``x-ratelimit-reset-requests`` / ``-tokens`` (a duration: ``20ms``,
  ``1.5s``, ``6m0s``: when the limit is whole again);
- the IETF's (draft-ietf-httpapi-ratelimit-headers-08): ``RateLimit-Policy: "default";q=100;
  w=60`` (a quota ``q`` per window of ``w`` seconds; ``qu`` other than ``"requests"`` is
  not a request limit) and ``RateLimit: "default";r=50;t=30`` (``r`` left, ``t`` seconds to
  reset); and the earlier drafts' ``RateLimit-Policy: 100;w=60``.

``announced(headers)`` gives an ``Announced`` (or ``None``): the limits per minute, as if the
user had passed ``requests_per_minute=``/``tokens_per_minute=`` (``visionkit.query.pacing``
paces to them), and, when nothing is left, how long until there is again.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Announced", "announced", "parse_duration"]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


@dataclass(frozen=True)
class Announced:
    """Limits a server announced: per minute (``None``: not said), and ``exhausted_for``:
    seconds until requests or tokens are available again when none are left now."""

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    exhausted_for: float | None = None


def parse_duration(text: str) -> float | None:
    """Seconds in an OpenAI-style duration (``"20ms"``, ``"1.5s"``, ``"6m0s"``, ``"1h2m"``) or
    a bare number of seconds; ``None`` if it is neither.

    >>> parse_duration("6m0s"), parse_duration("20ms"), parse_duration("2")
    (360.0, 0.02, 2.0)
    """
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    total, end = 0.0, 0
    for match in _DURATION.finditer(text):
        if match.start() != end:
            return None
        value, unit = float(match.group(1)), match.group(2)
        total += value * {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}[unit]
        end = match.end()
    return total if end and end == len(text) else None


def _number(value: Any) -> float | None:
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _members(field: str) -> list[tuple[str, dict[str, str]]]:
    """The list members of a structured field: (item, parameters), leniently parsed."""
    out = []
    for member in field.split(","):
        parts = [p.strip() for p in member.split(";")]
        if not parts or not parts[0]:
            continue
        params = {}
        for p in parts[1:]:
            key, _, value = p.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
        out.append((parts[0].strip('"'), params))
    return out


def _ietf_requests_per_minute(policy: str) -> float | None:
    """The strictest request quota of a ``RateLimit-Policy`` field, per minute."""
    rates = []
    for item, params in _members(policy):
        if params.get("qu", "requests") != "requests":
            continue  # a quota of bytes or of concurrent requests: not a rate of requests
        quota = _number(params["q"]) if "q" in params else _number(item)  # draft-08 / earlier
        window = _number(params.get("w", ""))
        if quota and window:
            rates.append(quota * 60.0 / window)
    return min(rates) if rates else None


def _ietf_exhausted_for(field: str) -> float | None:
    for _, params in _members(field):
        left, reset = _number(params.get("r", "")), _number(params.get("t", ""))
        if left is not None and left < 1 and reset:
            return reset
    return None


def announced(headers: Mapping[str, str] | None) -> Announced | None:
    """The limits ``headers`` announce (see the module docstring), or ``None``."""
    if not headers:
        return None
    get = {str(k).lower(): v for k, v in headers.items()}.get  # names are case-insensitive
    requests = _number(get("x-ratelimit-limit-requests") or "")
    tokens = _number(get("x-ratelimit-limit-tokens") or "")
    exhausted: float | None = None
    for kind in ("requests", "tokens"):
        left = _number(get(f"x-ratelimit-remaining-{kind}") or "")
        reset = parse_duration(get(f"x-ratelimit-reset-{kind}") or "")
        if left is not None and left < 1 and reset:
            exhausted = max(exhausted or 0.0, reset)
    policy = get("ratelimit-policy")
    if policy:
        ietf = _ietf_requests_per_minute(policy)
        if ietf is not None:
            requests = ietf if requests is None else min(requests, ietf)
    state = get("ratelimit")
    if state:
        reset = _ietf_exhausted_for(state)
        if reset:
            exhausted = max(exhausted or 0.0, reset)
    if not requests and not tokens and exhausted is None:
        return None
    return Announced(requests or None, tokens or None, exhausted)
