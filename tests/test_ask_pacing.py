"""Known rate limits paced from the first request (issue 12's single-machine part)."""

from __future__ import annotations

import pandas as pd
import pytest

import visionkit as vk
from tests.test_ask import make_images
from visionkit import offline
from visionkit.providers import RateLimits
from visionkit.query.options import AskOptions
from visionkit.query.pacing import HEADROOM, Pacer
from visionkit.query.plan import make_plan


def test_requests_are_spaced_evenly_just_under_the_limit():
    now = [100.0]
    pacer = Pacer(requests_per_minute=60, clock=lambda: now[0])
    step = 1.0 / HEADROOM
    assert [round(pacer.reserve(), 6) for _ in range(4)] == [
        0.0,
        round(step, 6),
        round(2 * step, 6),
        round(3 * step, 6),
    ]
    now[0] += 10.0  # idle for a while: no burst is saved up
    assert pacer.reserve() == 0.0 and pacer.reserve() == pytest.approx(step)


def test_a_late_send_does_not_make_the_next_one_early():
    now = [0.0]
    pacer = Pacer(requests_per_minute=60, headroom=1.0, clock=lambda: now[0])
    assert pacer.reserve() == 0.0
    now[0] = 0.7
    pacer.started()  # the first send went out 0.7 s late
    assert pacer.reserve() == pytest.approx(1.0)  # 1 s after it, not 0.3 s


def test_tokens_per_minute_book_the_estimate_and_settle_with_the_usage():
    now = [0.0]
    pacer = Pacer(tokens_per_minute=6000, headroom=1.0, clock=lambda: now[0])
    assert pacer.reserve(1000) == 0.0  # 1,000 tokens = 10 s of a 6,000/min budget
    assert pacer.reserve(500) == pytest.approx(10.0)
    pacer.settle(booked=500, used=1100)  # the answer was longer than booked
    assert pacer.reserve(0) == pytest.approx(10.0 + 11.0)


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="requests_per_minute must be a number > 0"):
        Pacer(requests_per_minute=0)
    with pytest.raises(ValueError, match="tokens_per_minute must be a number > 0"):
        AskOptions(tokens_per_minute=-5)


def test_inference_net_tiers_come_from_its_profile(monkeypatch):
    monkeypatch.setenv("INFERENCE_API_KEY", "sk-test")
    assert vk.get_provider("inference.net").tiers == {
        "free": RateLimits(requests_per_minute=30),
        "paid": RateLimits(requests_per_minute=250),
    }
    assert vk.connect("inference.net", tier="paid").rate_limits == RateLimits(250)
    assert vk.connect("inference.net").rate_limits is None  # unknown: adapt to 429s only
    assert vk.connect("inference.net", tier="free", tokens_per_minute=9000).rate_limits == (
        RateLimits(30, 9000)
    )
    with pytest.raises(ValueError, match=r"no tier 'gold'.*'free', 'paid'"):
        vk.connect("inference.net", tier="gold")


def test_ask_overrides_the_clients_limits(tmp_path):
    frame = pd.DataFrame({"path": make_images(tmp_path / "i", 1)})
    client = vk.connect("offline", base_url="http://127.0.0.1:9/v1", requests_per_minute=100)
    with make_plan(frame, "x", AskOptions(client=client, cache=False)) as plan:
        assert plan.rate_limits == RateLimits(100)
    options = AskOptions(client=client, cache=False, requests_per_minute=50, tokens_per_minute=10)
    with make_plan(frame, "x", options) as plan:
        assert plan.rate_limits == RateLimits(50, 10)


def test_a_known_limit_is_not_exceeded_from_the_first_request(tmp_path):
    """A strict limiter (no burst): unpaced, the opening burst is refused; paced, nothing."""
    frame = pd.DataFrame({"path": make_images(tmp_path / "i", 12)})
    results = {}
    for paced in (False, True):
        with offline.serve(latency=0.05, rate_limit=5, burst=1) as url:
            client = vk.connect("offline", base_url=url, api_key="offline")
            result = frame.vision.ask(
                "Describe.",
                client=client,
                cache=False,
                progress=False,
                concurrency=8,
                requests_per_minute=240 if paced else None,
            )
            results[paced] = url.server.stats.status_counts[429]
        if paced:
            assert result["error"].isna().all(), result["error"].dropna().tolist()
    assert results[False] >= 5  # the opening burst of 8 met a bucket of 1
    # The server shares this process (and the GIL) with the client here: a send can reach
    # it a few ms late, the next one on time. Allow for that; the benchmark measures the rest.
    assert results[True] <= 2


def test_a_429_while_paced_widens_the_margin_and_successes_win_it_back():
    pacer = Pacer(requests_per_minute=60, clock=lambda: 0.0)
    pacer.back_off()
    pacer.back_off()
    assert pacer.headroom == pytest.approx(HEADROOM * 0.98 * 0.98)
    pacer.recover()
    assert HEADROOM * 0.98 * 0.98 < pacer.headroom < HEADROOM * 0.98  # slowly
    for _ in range(1000):
        pacer.recover()
    assert pacer.headroom == HEADROOM  # never above where it started
    for _ in range(100):
        pacer.back_off()
    assert pacer.headroom == pytest.approx(0.8)  # never below 80 % of the limit
