"""The command line connects as ``vk.connect`` does, and a provider's error is one line (issue
18, item 18): ``--api-key-env NAME`` (never the key itself), every openai SDK error (a refused
key, a 5xx, no connection) one line on stderr and a non-zero exit, never a traceback or a key.
Real ``python -m visionkit`` processes against the offline stand-in demanding a key, and small
hostile servers (tests/hostile_http.py) for what the stand-in would never say."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from hostile_http import Server, raw_server
from image_factory import photo, save

from visionkit import offline

TOKEN = "tok-cli-Vq83nXe2"  # the server's key: never in any output
KEY_ENV = "VK_TEST_SERVER_KEY"
MODEL = offline.DEFAULT_MODEL


@pytest.fixture
def folder(tmp_path) -> Path:
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        save(photo(120 + 20 * i, 90, seed=i), tmp_path / "imgs" / f"p{i}.jpg")
    return tmp_path / "imgs"


@pytest.fixture
def server() -> Iterator[offline.OfflineServer]:
    with offline.OfflineServer(api_key=TOKEN, upload_interval=0) as srv:
        yield srv


def visionkit(*argv: object, cwd: Path, key: bool = False) -> subprocess.CompletedProcess[str]:
    """``python -m visionkit ARGV`` in a fresh process (the key in ``KEY_ENV`` when ``key``)."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.pop("VISIONKIT_DEBUG", None)
    env["VISIONKIT_CACHE_DIR"] = str(cwd / "cache")
    if key:
        env[KEY_ENV] = TOKEN
    return subprocess.run(
        [sys.executable, "-m", "visionkit", *map(str, argv)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def one_error_line(done: subprocess.CompletedProcess[str], command: str) -> str:
    """The run failed with exactly one error line, no traceback and no key anywhere."""
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and TOKEN not in done.stderr + done.stdout
    errors = [line for line in done.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and errors[0].startswith(f"visionkit {command}: error: "), done.stderr
    return errors[0]


def test_ask_takes_the_key_by_its_variables_name_and_a_refusal_is_one_line(
    folder, server, tmp_path
):
    out = tmp_path / "answers.csv"
    ask = ["ask", folder, "Describe this image.", "--out", out, "--base-url", server.base_url]
    # no key: the server refuses; one line saying so and how to pass one
    line = one_error_line(visionkit(*ask, "--no-progress", cwd=tmp_path), "ask")
    assert "AuthenticationError (401)" in line and f"{server.base_url}/models" in line
    assert "--api-key-env MY_KEY" in line
    # the same with a model named: the run stops at the first refusal, still one line
    with_model = visionkit(*ask, "--model", MODEL, "--no-progress", cwd=tmp_path)
    assert "AuthenticationError (401)" in one_error_line(with_model, "ask")
    assert not out.exists()
    # the key by its variable's name
    keyed = [*ask, "--api-key-env", KEY_ENV, "--model", MODEL, "--no-progress"]
    done = visionkit(*keyed, cwd=tmp_path, key=True)
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(out)
    assert len(table) == 3 and table.answer.str.startswith(offline.PREFIX).all()
    assert TOKEN not in done.stderr + done.stdout + out.read_text()
    # the variable unset, or a key given where the name goes: one line, the value never shown
    unset = visionkit(*ask, "--api-key-env", KEY_ENV, "--no-progress", cwd=tmp_path)
    assert f"{KEY_ENV} is not set" in one_error_line(unset, "ask")
    mistaken = visionkit(*ask, "--api-key-env", TOKEN, "--no-progress", cwd=tmp_path)
    assert "not shown: it may be the key itself" in one_error_line(mistaken, "ask")
    sent = server.stats.requests
    # the key itself as an argument is refused before anything runs, without echoing it
    typed = visionkit(*ask, "--api-key", TOKEN, cwd=tmp_path)
    assert typed.returncode == 2 and TOKEN not in typed.stderr + typed.stdout
    assert "never goes on the command line" in typed.stderr and "--api-key-env" in typed.stderr
    assert server.stats.requests == sent


def echo_the_key(conn: socket.socket, head: bytes, state: Server) -> None:
    """A 401 whose message repeats the Authorization header it was sent."""
    sent = [h for h in head.decode("latin-1").split("\r\n") if h.lower().startswith("auth")]
    body = json.dumps({"error": {"message": f"Incorrect API key provided: {sent}"}}).encode()
    conn.sendall(
        b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nConnection: close\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


def server_error(conn: socket.socket, head: bytes, state: Server) -> None:
    body = b"<html>upstream exploded</html>"
    conn.sendall(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/html\r\nConnection: close\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


@pytest.mark.parametrize(
    "handler, expected",
    [(echo_the_key, "AuthenticationError (401)"), (server_error, "InternalServerError (503)")],
)
def test_a_hostile_servers_error_is_one_line_without_the_key(folder, tmp_path, handler, expected):
    out = tmp_path / "a.csv"
    with raw_server(handler) as srv:
        base = f"{srv.base}/v1"
        argv = ["ask", folder, "Describe.", "--out", out, "--base-url", base, "--no-progress"]
        done = visionkit(*argv, "--api-key-env", KEY_ENV, cwd=tmp_path, key=True)
        assert any(TOKEN.encode() in r for r in srv.requests)  # it was sent, and echoed
    line = one_error_line(done, "ask")
    assert expected in line and base in line
    if handler is echo_the_key:
        assert "Incorrect API key provided" in line and "***" in line


def test_no_server_at_the_url_is_one_line(folder, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    base = f"http://127.0.0.1:{port}/v1"
    argv = ["ask", folder, "Describe.", "--out", tmp_path / "a.csv", "--base-url", base]
    line = one_error_line(visionkit(*argv, "--no-progress", cwd=tmp_path), "ask")
    assert "APIConnectionError" in line and f"127.0.0.1:{port}" in line


def test_batch_commands_take_the_key_by_its_variables_name(folder, server, tmp_path):
    common = ["--base-url", server.base_url, "--model", MODEL, "--no-progress"]
    submit = ["batch", "submit", folder, "Describe.", "--upload-interval", "0", *common]
    line = one_error_line(visionkit(*submit, cwd=tmp_path), "batch")
    assert "AuthenticationError (401)" in line and "--api-key-env" in line
    done = visionkit(*submit, "--api-key-env", KEY_ENV, cwd=tmp_path, key=True)
    assert done.returncode == 0, done.stderr
    job = done.stdout.strip()
    assert job.startswith("job-") and TOKEN not in done.stderr
    status = visionkit("batch", "status", job, *common, cwd=tmp_path)
    assert "AuthenticationError (401)" in one_error_line(status, "batch")
    out = tmp_path / "answers.csv"
    results = ["batch", "results", job, "--out", out, "--wait", *common]
    done = visionkit(*results, "--api-key-env", KEY_ENV, cwd=tmp_path, key=True)
    assert done.returncode == 0, done.stderr
    assert pd.read_csv(out).answer.notna().sum() == 3
    assert TOKEN not in done.stderr + done.stdout + out.read_text()


def test_the_command_line_records_and_replays(folder, server, tmp_path):
    """``--record DIR`` then ``--replay DIR``: the replay needs no key and sends nothing."""
    answers, out = tmp_path / "answers", tmp_path / "a.csv"
    ask = ["ask", folder, "Describe.", "--base-url", server.base_url, "--model", MODEL]
    recorded = visionkit(
        *ask, "--out", out, "--api-key-env", KEY_ENV, "--record", answers, cwd=tmp_path, key=True
    )
    assert recorded.returncode == 0, recorded.stderr
    assert TOKEN not in (answers / "answers.jsonl").read_text()
    sent = server.stats.requests
    replayed = visionkit(
        "ask", folder, "Describe.", "--out", tmp_path / "b.csv", "--replay", answers, cwd=tmp_path
    )
    assert replayed.returncode == 0, replayed.stderr
    assert server.stats.requests == sent
    columns = ["path", "answer", "prompt_tokens"]
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "b.csv")[columns], pd.read_csv(out)[columns]
    )
