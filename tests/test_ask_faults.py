"""Faults against the offline server: 429, 5xx, timeouts, drops, 4xx, 401, interrupts, size."""

from __future__ import annotations

import _thread
import logging

import numpy as np
import openai
import pandas as pd
import pytest
from PIL import Image

import visionkit as vk
from tests.test_ask import make_images
from visionkit import offline
from visionkit.query import run as run_module
from visionkit.query import thread as thread_module

SECRET = "sk-visionkit-test-SECRET-0123456789"


# retries wait 10-50 ms here (conftest.py): what a retry does matters, not how long it waits
pytestmark = pytest.mark.usefixtures("fast_backoff")


@pytest.fixture
def frame(tmp_path):
    return pd.DataFrame({"path": make_images(tmp_path / "imgs", 8)})


def run(frame, url, cache, **kw):
    client = vk.connect("offline", base_url=url, api_key=kw.pop("api_key", "offline"))
    kw.setdefault("progress", False)
    return frame.vision.ask(kw.pop("prompt", "Describe."), client=client, cache=cache, **kw)


def test_429_honours_retry_after_and_lowers_concurrency(frame, cache):
    with offline.serve(latency=0.05) as url:
        url.server.inject(status=429, count=3, retry_after=0.2)
        result = run(frame, url, cache, concurrency=8)
        stats = url.server.stats
    assert result["error"].isna().all()
    usage = result.attrs["usage"]
    assert usage["rate_limited"] == 3 and usage["retries"] == 3
    assert usage["lowest_concurrency"] < 8
    assert result["attempts"].sum() == len(frame) + 3
    assert stats.status_counts[429] == 3 and stats.answered == len(frame)


def test_429_waits_the_servers_retry_after(frame, cache):
    with offline.serve() as url:
        url.server.inject(status=429, count=1, retry_after=0.3)
        result = run(frame.iloc[:1], url, cache, concurrency=1)
        records = sorted(url.server.stats.records, key=lambda r: r.started)
    assert result["attempts"].iloc[0] == 2
    refused, answered = records
    assert refused.status == 429 and answered.status == 200
    # measured on the server's clock: the retry came no sooner than Retry-After said
    assert answered.started - (refused.started + refused.elapsed) >= 0.3 * 0.95


def test_rate_limited_server_is_paced_not_hammered(tmp_path, cache):
    frame = pd.DataFrame({"path": make_images(tmp_path / "many", 30)})
    with offline.serve(latency=0.05, rate_limit=40, burst=4) as url:
        result = run(frame, url, cache, concurrency=16)
        stats = url.server.stats
    assert result["error"].isna().all(), result["error"].dropna().tolist()[:3]
    assert stats.answered == 30, stats.as_dict()
    # AIMD + Retry-After keep refusals a minority even when starting 4x over the burst
    assert stats.status_counts[429] < 30, stats.as_dict()


def test_5xx_dropped_connections_and_timeouts_are_retried(frame, cache):
    with offline.serve() as url:
        url.server.inject(status=500, count=2)
        url.server.inject(status=503, count=1)
        url.server.inject(drop=True, count=1)
        url.server.inject(delay=3.0, count=1)
        result = run(frame, url, cache, concurrency=1, timeout=0.5)
        stats = url.server.stats
    assert result["error"].isna().all(), result["error"].tolist()
    assert result.attrs["usage"]["retries"] == 5
    # concurrency limits requests in flight, so other rows use the slot during a backoff
    assert result["attempts"].sum() == len(frame) + 5
    assert stats.status_counts[500] == 2 and stats.status_counts[503] == 1
    assert stats.dropped == 1


def test_retries_give_up_after_max_retries_with_the_providers_message(frame, cache):
    with offline.serve() as url:
        url.server.inject(status=500, count=3, message="the GPU fell over")
        result = run(frame.iloc[:1], url, cache, max_retries=2)
        url.server.inject(status=500, count=1)
        second = run(frame.iloc[1:2], url, cache, max_retries=2)
    assert result["attempts"].tolist() == [3]
    error = result["error"].iloc[0]
    assert "InternalServerError (500)" in error and "the GPU fell over" in error
    assert "gave up after 3 attempts" in error
    assert second["attempts"].tolist() == [2] and second["error"].iloc[0] is None


def test_other_4xx_fail_the_row_at_once(frame, cache):
    with offline.serve() as url:
        url.server.inject(status=400, count=1, message="bad image, sorry")
        result = run(frame, url, cache, concurrency=1)  # no retries: rows go in order
    failed = result["error"].notna()
    assert failed.sum() == 1
    assert result.loc[failed, "error"].iloc[0] == "BadRequestError (400): bad image, sorry"
    assert (result["attempts"] == 1).all()
    # a failed row is not cached: a re-run asks again
    assert len(cache) == len(frame) - 1


def test_401_stops_the_run_at_once_without_leaking_the_key(frame, cache, caplog, tmp_path):
    many = pd.DataFrame({"path": make_images(tmp_path / "m", 40)})
    caplog.set_level(logging.DEBUG)
    with offline.serve(api_key="the-right-key") as url:
        client = vk.connect("offline", base_url=url, api_key=SECRET)
        with pytest.raises(openai.AuthenticationError) as info:
            many.vision.ask("Describe.", client=client, cache=cache, concurrency=4, progress=False)
        stats = url.server.stats
    assert stats.status_counts[401] <= 4  # one round at most, not 40 failed rows
    assert stats.chat_requests <= 4
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)
    assert SECRET not in repr(client) and SECRET not in str(client)
    assert SECRET not in caplog.text
    assert "authentication failed" in caplog.text
    for part in tmp_path.glob("answers.sqlite*"):
        assert SECRET.encode() not in part.read_bytes()


def test_401_mid_run_keeps_what_was_answered(tmp_path, cache, when):
    frame = pd.DataFrame({"path": make_images(tmp_path / "m", 30)})
    with offline.serve(latency=0.02) as url:
        when(
            lambda: url.server.stats.answered >= 5,
            lambda: setattr(url.server, "api_key", "revoked"),
        )
        with pytest.raises(openai.AuthenticationError):
            run(frame, url, cache, concurrency=2)
        answered = url.server.stats.answered
    assert 5 <= answered < 30
    assert len(cache) == answered  # every answer received was committed


def test_three_images_per_request_fail_before_anything_is_sent(tmp_path, cache):
    paths = make_images(tmp_path / "t", 3)
    frame = pd.DataFrame({"a": paths, "b": paths[::-1], "c": paths})
    with offline.serve() as url:
        with pytest.raises(vk.RequestError, match=r"3 images in each request.*at most 2"):
            run(frame, url, cache, image_column=["a", "b", "c"])
        assert url.server.stats.requests == 0
        pair = run(frame, url, cache, image_column=["a", "b"], prompt="Compare these.")
        assert url.server.stats.images == 6
    assert pair["error"].isna().all()
    assert "image 1 is" in pair["answer"].iloc[0] and "image 2 is" in pair["answer"].iloc[0]


def _noise_png(path, side=1100):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)
    return str(path)


def test_oversized_images_are_reencoded_and_never_meet_a_413(tmp_path, cache):
    big = _noise_png(tmp_path / "noise.png")
    assert (tmp_path / "noise.png").stat().st_size > 3_000_000
    frame = pd.DataFrame({"a": [big], "b": [big]})
    with offline.serve() as url:
        one = run(frame, url, cache, image_column="a")
        two = run(frame, url, cache, image_column=["a", "b"])
        # a prompt so long the images must be squeezed into what is left of the 1 MB
        long = run(frame, url, cache, image_column="a", prompt="Describe. " + "x" * 700_000)
        # and one that leaves no room at all: that row's error, nothing sent
        hopeless = run(frame, url, cache, image_column="a", prompt="x" * 999_000)
        stats = url.server.stats
    for result in (one, two, long):
        assert result["error"].isna().all(), result["error"].tolist()
    assert "RequestError" in hopeless["error"].iloc[0] and "1,000,000" in hopeless["error"].iloc[0]
    assert stats.status_counts[413] == 0 and stats.chat_requests == 3
    assert max(r.body_bytes for r in stats.records) < 1_000_000


def test_interrupt_keeps_every_answer_and_a_rerun_sends_only_the_rest(tmp_path, cache, when):
    frame = pd.DataFrame({"path": make_images(tmp_path / "i", 16)})
    # 16 rows at concurrency 2 take >= 4 s at this latency, the interrupt comes after ~1 s:
    # slack enough that a loaded machine cannot finish the run before Ctrl-C arrives.
    with offline.serve(latency=0.5) as url:
        # interrupt_main is what Ctrl-C / Jupyter's stop button does
        when(lambda: len(cache) >= 4, _thread.interrupt_main)
        with pytest.raises(KeyboardInterrupt, match="re-run the same call to resume"):
            run(frame, url, cache, concurrency=2)
        first = url.server.stats.answered
        assert 4 <= first < 16
        assert len(cache) == first  # the requests in flight finished and were stored
        result = run(frame, url, cache, concurrency=4)
        stats = url.server.stats
    assert result["error"].isna().all()
    assert result["cached"].sum() == first
    assert stats.answered == 16 and stats.chat_requests == 16  # no request sent twice
    assert stats.duplicates == {}


def test_interrupt_in_jupyter_returns_the_partial_frame(tmp_path, cache, monkeypatch, when):
    monkeypatch.setattr(thread_module, "in_ipython", lambda: True)
    frame = pd.DataFrame({"path": make_images(tmp_path / "j", 12)})
    with offline.serve(latency=0.5) as url:  # >= 3 s of work; the interrupt comes after ~0.5 s
        when(lambda: len(cache) >= 2, _thread.interrupt_main)
        with pytest.warns(RuntimeWarning, match="interrupted"):
            partial = run(frame, url, cache, concurrency=2)
    assert partial.attrs["usage"]["interrupted"] is True
    done = partial["answer"].notna()
    assert done.sum() == len(cache) >= 2
    assert (partial.loc[~done, "error"] == run_module.INTERRUPTED).all()
