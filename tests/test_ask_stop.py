"""A stopped run never hangs: sends cancelled at any moment, and a drain that cannot finish."""

from __future__ import annotations

import _thread
import asyncio
import json
import logging
import random
import socket
import threading

import openai
import pandas as pd
import pytest

import visionkit as vk
from tests.hostile_http import Server, drip, raw_server
from tests.test_ask import make_images
from visionkit import offline
from visionkit.query import stopping
from visionkit.query import thread as thread_module
from visionkit.query.outcome import INTERRUPTED
from visionkit.query.pacing import Gate


async def _cancelled_sends(seed: int) -> str | None:
    """Six senders through one ``Gate`` of two, each acquiring as ``Sender._acquire`` does (a
    task of its own, cancelled when the run stops, then waited for); a driver moves the clock,
    pauses the window (a Retry-After) and cancels waiting acquires at random moments. What
    went wrong, or ``None``."""
    rng = random.Random(seed)
    now = [0.0]
    gate = Gate(2, clock=lambda: now[0])
    waiting: dict[int, asyncio.Future[int]] = {}
    errors: list[BaseException] = []

    async def sender(i: int) -> None:
        for _ in range(4):
            acquire = asyncio.ensure_future(gate.acquire())
            waiting[i] = acquire
            try:
                await asyncio.wait({acquire})
            finally:
                del waiting[i]
            if acquire.cancelled():
                continue
            if acquire.exception() is not None:
                errors.append(acquire.exception())  # type: ignore[arg-type]
                return
            for _ in range(rng.randrange(3)):
                await asyncio.sleep(0)
            await gate.release(acquire.result(), "ok")

    async def driver() -> None:
        for _ in range(300):
            now[0] += 1e-5
            r = rng.random()
            if r < 0.3:
                gate.limiter.pause(2e-5)  # the waits time out within a step or two
            elif r < 0.5 and waiting:
                waiting[rng.choice(list(waiting))].cancel()  # a stop, as Sender._acquire does
            await asyncio.sleep(0)

    tasks = [asyncio.ensure_future(sender(i)) for i in range(6)]
    tasks.append(asyncio.ensure_future(driver()))
    _, stuck = await asyncio.wait(tasks, timeout=5)
    if stuck:
        return f"{len(stuck)} sender(s) never got through: {errors}"
    if errors:
        return f"acquire failed: {errors}"
    if gate.in_flight != 0:
        return f"{gate.in_flight} ticket(s) never given back"
    return None


def test_sends_cancelled_at_any_moment_never_leave_the_gate_stuck():
    # Python 3.11's wait_for(condition.wait(), pause), cancelled while the timed-out wait took
    # its lock back, released a lock it did not hold ("Lock is not acquired") and left it taken
    # for good: every later release then waited for ever -- the hang after a stop.
    for seed in range(30):
        # a loop of its own, closed without cancelling what is stuck: a task stuck there may
        # not end when cancelled (the hang this finds), and the test must fail, not hang
        loop = asyncio.new_event_loop()
        try:
            problem = loop.run_until_complete(_cancelled_sends(seed))
        finally:
            loop.close()
        assert problem is None, f"seed {seed}: {problem}"


def test_runs_stopped_by_a_401_at_any_moment_end_with_every_row_accounted_for(
    tmp_path, monkeypatch, caplog
):
    monkeypatch.setattr(stopping, "STOP_GRACE", 1.0)  # a stuck drain is abandoned in 3 s
    frame = pd.DataFrame({"path": make_images(tmp_path / "s", 60)})
    rng = random.Random(8)
    caplog.set_level(logging.INFO, logger="visionkit")
    with offline.serve(latency=0.005) as url:
        for trial in range(12):
            frame["note"] = [f"{trial}-{i}" for i in range(len(frame))]  # nothing cached
            url.server.api_key = "offline"
            # early enough that rows are left to meet the 401 (at most 16 are in flight)
            revoke_at = url.server.stats.answered + rng.randrange(2, 25)

            def revoke(at: int = revoke_at) -> None:
                while url.server.stats.answered < at:
                    threading.Event().wait(0.0005)
                url.server.api_key = "revoked"

            threading.Thread(target=revoke, daemon=True).start()
            client = vk.connect("offline", base_url=url, api_key="offline")
            with pytest.raises(openai.AuthenticationError) as info:
                frame.vision.ask(
                    "Describe {note}.",
                    client=client,
                    cache=False,
                    concurrency=rng.choice([8, 16]),
                    timeout=2,
                    progress=False,
                )
            partial = info.value.partial  # type: ignore[attr-defined]
            errors = partial["error"].dropna()
            # each row answered, refused by the 401, or not run -- none lost to a stuck gate
            assert errors.str.startswith(("AuthenticationError", INTERRUPTED)).all(), (
                trial,
                errors[~errors.str.startswith(("AuthenticationError", INTERRUPTED))].tolist(),
            )
    assert "abandoned" not in caplog.text and "unexpectedly" not in caplog.text


def _read_body(conn: socket.socket, head: bytes) -> None:
    """Read the rest of a request's body (closing with it unread would reset the answer)."""
    top, _, got = head.partition(b"\r\n\r\n")
    length = 0
    for line in top.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    left = length - len(got)
    while left > 0:
        chunk = conn.recv(min(left, 65536))
        if not chunk:
            return
        left -= len(chunk)


def _respond(conn: socket.socket, status: str, body: dict) -> None:
    data = json.dumps(body).encode()
    conn.sendall(
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nConnection: close\r\n"
        f"Content-Length: {len(data)}\r\n\r\n".encode()
        + data
    )


ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 0,
    "model": "m",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "a colour"},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
}
REFUSED = {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}


def _dripping_then(answers: int | None):
    """A provider whose first request's answer dribbles out a byte every 50 ms for 30 s (so no
    read ever times out), the next ``answers`` are answered, the rest refused with a 401
    (``None``: all answered)."""
    count = iter(range(10**6))
    lock = threading.Lock()

    def handler(conn: socket.socket, head: bytes, state: Server) -> None:
        _read_body(conn, head)
        with lock:
            n = next(count)
        if n == 0:
            drip(conn, b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 5000, state, every=0.05, limit=30)
        elif answers is None or n <= answers:
            _respond(conn, "200 OK", ANSWER)
        else:
            _respond(conn, "401 Unauthorized", REFUSED)

    return handler


def test_a_drain_that_cannot_finish_is_abandoned_and_the_401_raised_with_the_answers(
    tmp_path, cache, monkeypatch, caplog
):
    monkeypatch.setattr(stopping, "STOP_GRACE", 0.5)
    frame = pd.DataFrame({"path": make_images(tmp_path / "d", 6)})
    with raw_server(_dripping_then(answers=2)) as srv:
        client = vk.connect("offline", base_url=f"{srv.base}/v1", api_key="offline")
        with pytest.raises(openai.AuthenticationError) as info:
            frame.vision.ask(
                "Describe.",
                client=client,
                model="m",
                cache=cache,
                concurrency=2,
                timeout=1,
                progress=False,
            )
        # the client hung up on the dripping answer: it did not wait it out
        assert srv.gave_up.wait(5)
    partial = info.value.partial  # type: ignore[attr-defined]
    assert partial["answer"].notna().sum() == 2 == len(cache)  # what was paid for is kept
    assert (partial["error"] == INTERRUPTED).sum() >= 1  # the abandoned row: re-run to resume
    assert "abandoned" in caplog.text


def test_an_interrupted_drain_that_cannot_finish_returns_the_partial_frame(
    tmp_path, cache, monkeypatch, when
):
    monkeypatch.setattr(stopping, "STOP_GRACE", 0.5)
    monkeypatch.setattr(thread_module, "in_ipython", lambda: True)
    frame = pd.DataFrame({"path": make_images(tmp_path / "j", 8)})
    with raw_server(_dripping_then(answers=None)) as srv:
        client = vk.connect("offline", base_url=f"{srv.base}/v1", api_key="offline")
        when(lambda: len(cache) >= 3, _thread.interrupt_main)
        with pytest.warns(RuntimeWarning, match="interrupted"):
            partial = frame.vision.ask(
                "Describe.",
                client=client,
                model="m",
                cache=cache,
                concurrency=2,
                timeout=1,
                progress=False,
            )
        assert srv.gave_up.wait(5)
    assert partial.attrs["usage"]["interrupted"] is True
    done = partial["answer"].notna()
    assert done.sum() == len(cache) >= 3
    assert (partial.loc[~done, "error"] == INTERRUPTED).all()
