"""What ask says when things go wrong: each message names the real cause (issue 8, messages)."""

from __future__ import annotations

import _thread
import logging
import socket

import openai
import pandas as pd
import pytest

import visionkit as vk
from tests.test_ask import make_images
from tests.test_ask_transport import TRANSPORTS
from visionkit import offline
from visionkit.query import run as run_module
from visionkit.query import thread as thread_module
from visionkit.query.cache import Cache

# retries wait 10-50 ms here (conftest.py): what a retry does matters, not how long it waits
pytestmark = pytest.mark.usefixtures("fast_backoff")


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_connection_refused_says_so_on_both_transports(tmp_path, transport):
    frame = pd.DataFrame({"path": make_images(tmp_path / "i", 1)})
    port = closed_port()
    client = vk.connect(
        "offline",
        base_url=f"http://127.0.0.1:{port}/v1",
        api_key="offline",
        transport=transport,
    )
    result = frame.vision.ask(
        "Describe.", client=client, cache=False, progress=False, max_retries=0
    )
    assert result["error"].iloc[0] == (
        f"APIConnectionError: connection refused by 127.0.0.1:{port} "
        "(gave up after 1 attempt; max_retries=0)"
    )
    again = frame.vision.ask("Describe.", client=client, cache=False, progress=False, max_retries=1)
    assert again["error"].iloc[0].endswith("(gave up after 2 attempts)")


def test_401_with_cache_off_keeps_the_answers_on_the_exception(tmp_path, caplog, when):
    frame = pd.DataFrame({"path": make_images(tmp_path / "m", 20)})
    caplog.set_level(logging.ERROR, logger="visionkit")
    with offline.serve(latency=0.02) as url:
        when(
            lambda: url.server.stats.answered >= 3,
            lambda: setattr(url.server, "api_key", "revoked"),
        )
        client = vk.connect("offline", base_url=url, api_key="offline")
        with pytest.raises(openai.AuthenticationError) as info:
            frame.vision.ask("Describe.", client=client, cache=False, progress=False, concurrency=2)
        answered = url.server.stats.answered
    assert "are in the cache" not in caplog.text
    assert "exception's .partial DataFrame (cache=False)" in caplog.text
    partial = info.value.partial
    assert partial["answer"].notna().sum() == answered >= 3
    # with a cache, the message says where they are
    caplog.clear()
    with offline.serve(api_key="right") as url:
        client = vk.connect("offline", base_url=url, api_key="wrong")
        with pytest.raises(openai.AuthenticationError):
            frame.vision.ask(
                "Describe.", client=client, cache=tmp_path / "c.sqlite", progress=False
            )
    assert "Answers received so far are in the cache" in caplog.text


def test_interrupted_rows_are_not_counted_as_failed(tmp_path, monkeypatch, capsys, when):
    monkeypatch.setattr(thread_module, "in_ipython", lambda: True)
    frame = pd.DataFrame({"path": make_images(tmp_path / "j", 12)})
    with Cache(tmp_path / "c.sqlite") as cache, offline.serve(latency=0.5) as url:
        client = vk.connect("offline", base_url=url, api_key="offline")
        when(lambda: len(cache) >= 2, _thread.interrupt_main)
        with pytest.warns(RuntimeWarning, match="interrupted"):
            partial = frame.vision.ask(
                "Describe.", client=client, cache=cache, concurrency=2, progress=True
            )
    usage = partial.attrs["usage"]
    not_run = (partial["error"] == run_module.INTERRUPTED).sum()
    assert not_run > 0 and usage["not_run"] == not_run
    assert usage["failed"] == 0
    err = capsys.readouterr().err
    assert "failed=0" in err and f"not run={not_run}" in err
