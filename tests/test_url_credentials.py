"""Credentials inside a base URL (``https://user:token@host/v1``, ``?api-key=...``): the live
client sends them (on both transports), and nothing visionkit writes, prints, logs or keys on
holds them. Against the offline stand-in demanding the key as HTTP Basic auth or a query
parameter, over real HTTP through the real openai SDK."""

from __future__ import annotations

import base64
import io
import logging
import os
from collections.abc import Iterator

import openai
import pandas as pd
import pytest
from image_factory import photo, save

import visionkit as vk
from visionkit import offline
from visionkit.batch.job import BatchJob
from visionkit.images.encode import encode_series
from visionkit.query.client import aiohttp_available
from visionkit.redact import public_url, redact_text, redact_url, split_url

TOKEN = "tok-Zq7uXv93hKe"  # what must never be found
USER = "alice"
MODEL = "visionkit-offline"
PROMPT = "Describe this image."


@pytest.fixture
def server() -> Iterator[offline.OfflineServer]:
    with offline.OfflineServer(
        api_key=TOKEN, key_in=("basic", "query:api-key"), upload_interval=0
    ) as srv:
        yield srv


def userinfo_url(server: offline.OfflineServer) -> str:
    return server.base_url.replace("http://", f"http://{USER}:{TOKEN}@")


def query_url(server: offline.OfflineServer) -> str:
    return f"{server.base_url}?api-version=2024-10-21&api-key={TOKEN}"


URLS = {"userinfo": userinfo_url, "query": query_url}


@pytest.fixture
def images(tmp_path) -> pd.DataFrame:
    paths = [save(photo(200 + 8 * i, 150, seed=i), tmp_path / f"p{i}.jpg") for i in range(4)]
    return pd.DataFrame({"path": [str(p) for p in paths]}, index=[f"r{i}" for i in range(4)])


def forms_of_the_token() -> list[str]:
    """The token as it could leak: itself, and inside the Basic header's base64."""
    basic = base64.b64encode(f"{USER}:{TOKEN}".encode()).decode()
    return [TOKEN, basic, basic.rstrip("=")]


def assert_nowhere(texts: dict[str, str]) -> None:
    found = {
        name: form for name, text in texts.items() for form in forms_of_the_token() if form in text
    }
    assert not found, f"the token leaked into {found}"


def test_the_url_helpers_mask_drop_and_split_credentials():
    url = f"https://{USER}:{TOKEN}@h.example:8443/v1/?api-version=2024&api-key={TOKEN}&sig=s1"
    assert redact_url(url) == "https://***@h.example:8443/v1/?api-version=2024&api-key=***&sig=***"
    assert public_url(url) == "https://h.example:8443/v1?api-version=2024"
    base, query, auth = split_url(url)
    assert base == "https://h.example:8443/v1/"
    assert query == {"api-version": "2024", "api-key": TOKEN, "sig": "s1"}
    assert auth == "Basic " + base64.b64encode(f"{USER}:{TOKEN}".encode()).decode()
    assert redact_text(f"GET {url} failed") == f"GET {redact_url(url)} failed"
    assert redact_url("https://h/v1") == "https://h/v1"  # nothing to hide: unchanged
    with pytest.raises(ValueError, match="credentials were removed"):
        split_url(redact_url(url))  # a masked URL cannot connect, and says so


TRANSPORTS = [
    "httpx",
    pytest.param(
        "aiohttp",
        marks=pytest.mark.skipif(
            not aiohttp_available(), reason="the SDK's aiohttp transport is not installed"
        ),
    ),
]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("form", sorted(URLS))
def test_ask_sends_a_urls_credentials_on_both_transports(server, images, form, transport):
    client = vk.connect(base_url=URLS[form](server), model=MODEL, transport=transport)
    result = images.vision.ask(PROMPT, client=client, cache=False, progress=False)
    assert result.error.isna().all(), result.error.dropna().tolist()
    assert result.answer.str.startswith(offline.PREFIX).all()
    assert server.stats.status_counts[200] == len(images)
    # the stand-in does demand it: the same server without the credential refuses the run
    bare = vk.connect(base_url=server.base_url, model=MODEL, transport=transport)
    with pytest.raises(openai.AuthenticationError):
        images.vision.ask(PROMPT, client=bare, cache=False, progress=False)


def test_a_key_and_a_user_password_in_the_url_are_refused_up_front(server):
    with pytest.raises(ValueError, match="Basic auth") as caught:
        vk.connect(base_url=userinfo_url(server), api_key="sk-other", model=MODEL)
    assert TOKEN not in str(caught.value) and "***@" in str(caught.value)


@pytest.mark.parametrize("form", sorted(URLS))
def test_no_file_log_repr_or_message_of_a_run_holds_the_token(
    server, images, tmp_path, monkeypatch, capfd, form
):
    monkeypatch.setenv("VISIONKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        bad = images.copy()
        bad.loc["broken"] = str(tmp_path / "missing.jpg")  # one row's error message too
        client = vk.connect(base_url=URLS[form](server), model=MODEL, record="answers/")
        asked = bad.vision.ask(PROMPT, client=client, cache=True, progress=True)
        assert asked.answer.notna().sum() == len(images)
        more = images.rename(index=lambda r: r + "b")
        more["path"] = [
            save(photo(90, 60 + i, seed=9 + i), tmp_path / f"q{i}.jpg") for i in range(4)
        ]
        more["path"] = more["path"].astype(str)
        job = more.vision.submit(PROMPT, client=client, upload_interval=0, progress=True)
        job.wait(progress=True)
        result = job.result()
        assert result.error.isna().all(), result.error.dropna().tolist()
        result.to_csv(tmp_path / "out.csv")
        asked.to_parquet(tmp_path / "out.parquet")
        with pytest.raises(ValueError) as reload_error:
            BatchJob.load(job.id)  # the manifest cannot reconnect: it says so, masked
        texts = {
            "repr(client)": repr(client),
            "repr(job)": repr(job),
            "job.batches": job.batches.to_string(),
            "errors": " ".join(asked.error.dropna()) + str(reload_error.value),
        }
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    assert "***" in repr(client) and "credentials visionkit does not store" in texts["errors"]
    captured = capfd.readouterr()
    texts["stdout"], texts["stderr"], texts["log"] = captured.out, captured.err, log.getvalue()
    assert "HTTP Request: POST" in texts["log"]  # DEBUG logging was on and saw requests
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".jpg"]
    assert {"answers.jsonl", "out.csv", "answers.sqlite"} <= {p.name for p in written}
    assert "answers.batches.sqlite" in {p.name for p in written}  # the batch manifest
    for path in written:
        texts[str(path.relative_to(tmp_path))] = path.read_bytes().decode("latin-1")
    assert_nowhere(texts)
    # the recording names the server as its public URL, which replays
    recorded = (tmp_path / "answers" / "answers.jsonl").read_text()
    assert public_url(server.base_url) in recorded
    if os.name == "posix":
        assert "127.0.0.1" in recorded


def test_image_urls_with_credentials_are_read_and_never_logged_or_shown(tmp_path):
    """http(s) image cells with a user:token@ (sent as Basic auth by httpx) or a signed query:
    read, and masked in DEBUG logs and in every row error."""
    from hostile_http import raw_server
    from image_factory import png_bytes

    png = png_bytes(photo(40, 30))
    basic = base64.b64encode(f"{USER}:{TOKEN}".encode()).decode()

    def guarded(conn, request, _state):
        head = request.decode("latin-1")
        ok = f"Authorization: Basic {basic}" in head or f"sig={TOKEN}" in head.split("\r\n")[0]
        body, status = (png, "200 OK") if ok and " /a.png" in head else (b"no", "404 Not Found")
        head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        conn.sendall(head.encode() + body)

    log = io.StringIO()
    handler = logging.StreamHandler(log)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        with raw_server(guarded) as srv:
            host = srv.base.split("://")[1]
            urls = [
                f"http://{USER}:{TOKEN}@{host}/a.png",
                f"http://{host}/a.png?sig={TOKEN}&se=2030",
                f"http://{USER}:{TOKEN}@{host}/missing.png",
                f"http://{USER}:{TOKEN}@127.0.0.1:99999/bad-port.png",
                f"http://{USER}:{TOKEN}@127.0.0.1:1/refused.png?sig={TOKEN}",
            ]
            frame = vk.read_images(urls)
            with pytest.warns(vk.EncodeWarning) as caught:
                encoded = encode_series(pd.Series(urls), progress=False)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    assert frame.width.iloc[:2].tolist() == [40, 40] and encoded.iloc[:2].notna().all()
    assert frame.error.iloc[2:].notna().all()
    assert "HTTP Request: GET" in log.getvalue()
    assert_nowhere(
        {
            "log": log.getvalue(),
            "errors": " ".join(frame.error.dropna()),
            "warnings": " ".join(str(w.message) for w in caught),
        }
    )
