"""The retry policy and the adaptive (AIMD) concurrency limit, without a network."""

from __future__ import annotations

import asyncio
import email.utils
import time

import httpx2
import openai
import pytest

from visionkit.query.retry import (
    MAX_RETRY_AFTER,
    classify,
    parse_retry_after,
    retry_delay,
)
from visionkit.query.window import AdaptiveLimiter


def test_retry_delay_is_exponential_capped_and_jittered():
    lo = [retry_delay(n, rand=lambda: 0.0) for n in range(1, 8)]
    assert lo == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    hi = [retry_delay(n, rand=lambda: 0.999999) for n in range(1, 8)]
    for a, b in zip(lo, hi, strict=True):
        assert 0.75 * a - 1e-6 <= b < a
    assert retry_delay(10_000, rand=lambda: 0.0) == 8.0  # no overflow
    samples = {retry_delay(3) for _ in range(50)}
    assert len(samples) > 1 and all(1.5 <= s <= 2.0 for s in samples)


def test_retry_delay_honours_retry_after_with_a_little_spread():
    assert retry_delay(1, retry_after=2.5, rand=lambda: 0.0) == 2.5
    assert 2.5 <= retry_delay(5, retry_after=2.5) <= 2.75
    assert retry_delay(1, retry_after=0.0, rand=lambda: 0.5) == 0.0
    assert retry_delay(1, retry_after=10_000, rand=lambda: 0.0) == MAX_RETRY_AFTER
    assert retry_delay(2, retry_after=float("nan"), rand=lambda: 0.0) == 1.0


def test_parse_retry_after_prefers_milliseconds_then_seconds_then_dates():
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "3"}) == 0.25
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= parse_retry_after({"retry-after": future}) <= 31
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None and parse_retry_after(None) is None


def _status_error(status: int) -> openai.APIStatusError:
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx2.Response(status, request=request, json={"error": {"message": "m"}})
    client = openai.OpenAI(api_key="x", base_url="http://127.0.0.1/v1")
    return client._make_status_error_from_response(response)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, "auth"),
        (429, "rate"),
        (500, "retry"),
        (503, "retry"),
        (408, "retry"),
        (400, "fail"),
        (404, "fail"),
        (413, "fail"),
        (422, "fail"),
    ],
)
def test_classify_status_errors(status, kind):
    assert classify(_status_error(status)) == kind


def test_classify_connection_errors_and_others():
    request = httpx2.Request("POST", "http://127.0.0.1/")
    assert classify(openai.APITimeoutError(request=request)) == "retry"
    assert classify(openai.APIConnectionError(request=request)) == "retry"
    assert classify(ValueError("x")) == "fail"


def test_limiter_decreases_once_per_round_paces_and_recovers():
    now = [0.0]
    lim = AdaptiveLimiter(16, decrease=0.5, calm=5.0, clock=lambda: now[0])
    tickets = [lim.take() for _ in range(16)]
    assert not lim.pacing  # no 429 yet: no pacing, full concurrency
    # a burst of 429s from requests sent in the same round lowers the limit once
    for t in tickets[:8]:
        lim.give_back(t, "rate")
    assert lim.limit == 8.0 and lim.decreases == 1
    # a request started after the decrease that is refused again lowers it again
    t = lim.take()
    lim.give_back(t, "rate", retry_after=2.0)
    assert lim.limit == 4.0 and lim.decreases == 2 and lim.lowest == 4.0
    assert lim.pause_remaining() == pytest.approx(2.0)
    now[0] = 2.2  # the first round's successes come back after 2.2 s
    for t in tickets[8:]:
        lim.give_back(t, "ok")
    assert lim.rtt == pytest.approx(2.2)
    assert 4.0 < lim.limit < 4.3  # 429s are recent: probe up slowly (0.1 per round)
    # paced: after a 429, sends are spaced rtt / limit apart
    assert lim.pacing and lim.pause_remaining() == 0.0
    t = lim.take()
    assert lim.pause_remaining() == pytest.approx(2.2 / lim.limit, rel=0.05)
    lim.give_back(t, "ok")
    now[0] = 60.0  # long after the last 429: recover a round at a time, up to the maximum
    for _ in range(400):
        lim.give_back(lim.take(), "ok")
    assert lim.limit == 16.0
    for _ in range(50):
        lim.give_back(lim.take(), "rate")
    assert lim.allowed() == 1  # never below one


def test_limiter_never_lets_more_than_the_limit_in_flight():
    async def main():
        lim = AdaptiveLimiter(3)
        peak = 0

        async def one(i):
            nonlocal peak
            ticket = await lim.acquire()
            peak = max(peak, lim.in_flight)
            await asyncio.sleep(0.001)
            await lim.release(ticket, "rate" if i == 5 else "ok")

        await asyncio.gather(*(one(i) for i in range(30)))
        return peak, lim

    peak, lim = asyncio.run(main())
    assert peak == 3 and lim.in_flight == 0 and lim.decreases == 1


def test_limiter_pause_holds_new_sends():
    async def main():
        lim = AdaptiveLimiter(4)
        t = await lim.acquire()
        await lim.release(t, "rate", retry_after=0.15)
        start = time.monotonic()
        t = await lim.acquire()
        waited = time.monotonic() - start
        await lim.release(t, "ok")
        return waited

    assert asyncio.run(main()) >= 0.1


def test_the_retry_decision_is_a_pure_function_of_kind_attempt_and_retry_after():
    from visionkit.query.retry import Verdict, decide

    assert decide("auth", 1, 6) == Verdict("stop")
    assert decide("fail", 1, 6) == Verdict("fail")
    assert decide("retry", 2, 6, rand=lambda: 0.0) == Verdict("retry", delay=1.0)
    assert decide("rate", 1, 6, retry_after=3.0, rand=lambda: 0.0) == Verdict("retry", delay=3.0)
    assert decide("rate", 7, 6).note == "gave up after 7 attempts"
    assert decide("retry", 1, 0).note == "gave up after 1 attempt; max_retries=0"
    too_long = decide("rate", 1, 6, retry_after=MAX_RETRY_AFTER + 1)
    assert too_long.action == "fail" and "server asked to wait 121 s" in (too_long.note or "")
