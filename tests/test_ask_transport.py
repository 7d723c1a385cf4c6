"""Both HTTP transports (the SDK's aiohttp one and httpx) behave the same under faults, and each
run's aiohttp session lives and dies in the event loop that uses it."""

from __future__ import annotations

import asyncio
import gc

import aiohttp
import openai
import pandas as pd
import pytest

import visionkit as vk
from tests.test_ask import make_images
from visionkit import offline
from visionkit.query import client as client_module

TRANSPORTS = [
    pytest.param(
        "aiohttp",
        marks=pytest.mark.skipif(
            not client_module.aiohttp_available(), reason="openai[aiohttp] not installed"
        ),
    ),
    "httpx",
]


# retries wait 10-50 ms here (conftest.py): what a retry does matters, not how long it waits
pytestmark = pytest.mark.usefixtures("fast_backoff")


@pytest.fixture
def sessions(monkeypatch):
    """Every aiohttp ClientSession made during the test (to see it was used and closed)."""
    made: list[aiohttp.ClientSession] = []
    real_init = aiohttp.ClientSession.__init__

    def spy(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(aiohttp.ClientSession, "__init__", spy)
    return made


@pytest.fixture
def frame(tmp_path):
    return pd.DataFrame({"path": make_images(tmp_path / "imgs", 6)})


def ask(frame, url, transport, **kw):
    client = vk.connect(
        "offline", base_url=url, api_key=kw.pop("api_key", "offline"), transport=transport
    )
    assert client.transport == transport
    kw.setdefault("progress", False)
    kw.setdefault("cache", False)
    return frame.vision.ask("Describe.", client=client, **kw)


def check_sessions(transport, sessions):
    if transport == "aiohttp":
        assert len(sessions) == 1  # one per run, made lazily inside the run's loop
    else:
        assert sessions == []
    assert all(s.closed for s in sessions)


@pytest.mark.filterwarnings("error::ResourceWarning")
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    "fault",
    ["none", "429", "500", "timeout", "drop"],
)
def test_faults_are_handled_alike_on_both_transports(frame, transport, fault, sessions):
    with offline.serve(latency=0.01) as url:
        if fault == "429":
            url.server.inject(status=429, count=2, retry_after=0.05)
        elif fault == "500":
            url.server.inject(status=500, count=2)
        elif fault == "timeout":
            url.server.inject(delay=3.0, count=1)
        elif fault == "drop":
            url.server.inject(drop=True, count=1)
        result = ask(frame, url, transport, concurrency=2, timeout=0.5)
        stats = url.server.stats
    gc.collect()  # an unclosed session would warn (an error here) when collected
    assert result["error"].isna().all(), result["error"].dropna().tolist()
    assert result["answer"].str.len().gt(0).all()
    extra = {"none": 0, "429": 2, "500": 2, "timeout": 1, "drop": 1}[fault]
    # (the server may still answer the request the client gave up waiting for)
    assert len(frame) <= stats.answered <= len(frame) + (fault == "timeout")
    assert result["attempts"].sum() == len(frame) + extra
    if fault == "429":
        assert result.attrs["usage"]["rate_limited"] == 2
    if fault == "drop":
        assert stats.dropped == 1
    check_sessions(transport, sessions)


@pytest.mark.filterwarnings("error::ResourceWarning")
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_401_stops_the_run_on_both_transports(tmp_path, transport, sessions):
    many = pd.DataFrame({"path": make_images(tmp_path / "m", 20)})
    with offline.serve(api_key="the-right-key") as url:
        with pytest.raises(openai.AuthenticationError):
            ask(many, url, transport, api_key="wrong", concurrency=4)
        stats = url.server.stats
    gc.collect()
    assert stats.status_counts[401] <= 4 and stats.answered == 0
    check_sessions(transport, sessions)


@pytest.mark.filterwarnings("error::ResourceWarning")
def test_auto_uses_aiohttp_when_installed_with_a_session_per_run(frame, sessions):
    """Two ``ask`` calls on one client (each in its own worker-thread loop), then ``ask_async``
    in the caller's loop: each run gets its own session, made in its loop and closed."""
    if not client_module.aiohttp_available():
        pytest.skip("openai[aiohttp] not installed")
    with offline.serve() as url:
        client = vk.connect("offline", base_url=url, api_key="offline")
        assert client.transport == "aiohttp"
        first = frame.vision.ask("Describe.", client=client, cache=False, progress=False)
        second = frame.vision.ask("Describe.", client=client, cache=False, progress=False)

        async def in_a_running_loop():
            return await frame.vision.ask_async(
                "Describe.", client=client, cache=False, progress=False
            )

        third = asyncio.run(in_a_running_loop())
        answered = url.server.stats.answered
    gc.collect()
    for result in (first, second, third):
        assert result["error"].isna().all(), result["error"].dropna().tolist()
    assert answered == 3 * len(frame)
    assert len(sessions) == 3 and all(s.closed for s in sessions)
    assert len({id(s._loop) for s in sessions}) == 3  # three loops, one session each


def test_a_callers_http_client_is_used_and_left_open(frame, sessions):
    with offline.serve() as url:

        async def main():
            mine = openai.DefaultAsyncHttpxClient()
            client = vk.connect("offline", base_url=url, api_key="offline", http_client=mine)
            assert client.transport == "custom"
            result = await frame.vision.ask_async(
                "Describe.", client=client, cache=False, progress=False
            )
            assert not mine.is_closed  # it is the caller's to close
            again = await frame.vision.ask_async(
                "Describe.", client=client, cache=False, progress=False
            )
            await mine.aclose()
            return result, again

        result, again = asyncio.run(main())
        answered = url.server.stats.answered
    assert result["error"].isna().all() and again["error"].isna().all()
    assert answered == 2 * len(frame)
    assert sessions == []  # no aiohttp session behind the caller's httpx client


def test_transport_choices_are_checked(monkeypatch):
    with pytest.raises(ValueError, match="transport must be"):
        vk.connect("offline", base_url="http://127.0.0.1:9/v1", transport="curl")
    with pytest.raises(ValueError, match="not both"):
        vk.connect(
            "offline",
            base_url="http://127.0.0.1:9/v1",
            transport="httpx",
            http_client=openai.DefaultAsyncHttpxClient(),
        )
    monkeypatch.setattr(client_module, "aiohttp_available", lambda: False)
    assert vk.connect("offline", base_url="http://127.0.0.1:9/v1").transport == "httpx"
    with pytest.raises(ImportError, match=r"visionkit\[aiohttp\]"):
        vk.connect("offline", base_url="http://127.0.0.1:9/v1", transport="aiohttp")
