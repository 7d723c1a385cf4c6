"""The offline stand-in, spoken to over real HTTP through the real openai SDK."""

from __future__ import annotations

import asyncio
import base64
import http.client
import io
import json
import logging
import math
import signal
import socket
import threading
import time
from typing import Literal

import numpy as np
import offline_helpers
import openai
import pydantic
import pytest
from offline_helpers import MODEL, command_line, data_uri, image_bytes, jpeg_uri, user
from PIL import Image

from visionkit import offline
from visionkit.offline.rules import HEADER_PREFIX  # how much of an image header-only mode decodes
from visionkit.tokens import inference_net_tokens

server, client = offline_helpers.server, offline_helpers.client  # the shared fixtures


def raw_post(base_url: str, body: bytes, headers: dict | None = None, conn=None):
    """POST raw bytes to /v1/chat/completions; returns (status, headers, json, connection)."""
    host, port = base_url.split("//")[1].split("/")[0].split(":")
    conn = conn or http.client.HTTPConnection(host, int(port), timeout=10)
    hdrs = {"Authorization": "Bearer offline", "Content-Type": "application/json"}
    hdrs.update(headers or {})
    conn.request("POST", "/v1/chat/completions", body=body, headers=hdrs)
    resp = conn.getresponse()
    payload = json.loads(resp.read())
    return resp.status, dict(resp.getheaders()), payload, conn


# -- valid requests and usage ------------------------------------------------------------------


def test_one_image_answer_describes_pixels_and_usage_follows_the_formula(client):
    prompt = "Describe this image."
    resp = client.chat.completions.create(
        model=MODEL, messages=user(prompt, jpeg_uri((1120, 747), (30, 150, 40)))
    )
    text = resp.choices[0].message.content
    assert text.startswith("Offline stand-in (describes pixels only): a 1120x747 JPEG")
    assert "green" in text
    assert resp.object == "chat.completion" and resp.model == MODEL
    assert resp.choices[0].finish_reason == "stop"
    expected = inference_net_tokens(1120, 747) + math.ceil(len(prompt) / 4)
    assert resp.usage.prompt_tokens == expected
    assert resp.usage.completion_tokens == math.ceil(len(text) / 4)
    assert resp.usage.total_tokens == expected + resp.usage.completion_tokens


def test_two_images_are_both_described_and_both_counted(client):
    prompt = "Compare these."
    a = jpeg_uri((1120, 1120), (20, 40, 200))
    b = data_uri(image_bytes((300, 200), (250, 250, 250), "PNG"), "image/png")
    resp = client.chat.completions.create(model=MODEL, messages=user(prompt, a, b))
    text = resp.choices[0].message.content
    assert "image 1 is a 1120x1120 JPEG, mostly blue" in text
    assert "image 2 is a 300x200 PNG, mostly white" in text
    tokens = 6404 + inference_net_tokens(300, 200) + math.ceil(len(prompt) / 4)
    assert resp.usage.prompt_tokens == tokens


def test_system_and_text_messages_count_towards_prompt_tokens(client):
    system = "You are terse." * 10
    messages = [{"role": "system", "content": system}, *user("Hi", jpeg_uri())]
    resp = client.chat.completions.create(model=MODEL, messages=messages)
    assert resp.usage.prompt_tokens == 1601 + math.ceil(len(system) / 4) + 1


def test_each_accepted_format_and_the_jpg_spelling(client):
    cases = [
        (image_bytes(fmt="PNG"), "image/png", "PNG"),
        (image_bytes(fmt="JPEG"), "image/jpeg", "JPEG"),
        (image_bytes(fmt="JPEG"), "image/jpg", "JPEG"),
        (image_bytes(fmt="WEBP"), "image/webp", "WEBP"),
        (image_bytes(fmt="GIF"), "image/gif", "GIF"),
    ]
    for data, mime, name in cases:
        resp = client.chat.completions.create(model=MODEL, messages=user("", data_uri(data, mime)))
        assert f"a 64x48 {name}" in resp.choices[0].message.content


def test_an_honest_answer_to_a_question(client):
    resp = client.chat.completions.create(
        model=MODEL, messages=user("Is there a dog in this picture?", jpeg_uri())
    )
    text = resp.choices[0].message.content
    assert "cannot see what the image shows" in text
    assert "Is there a dog in this picture?" in text
    assert "yes" not in text.lower().split()


# -- the provider's rules ------------------------------------------------------------------


def test_three_images_are_refused(server, client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=user("x", *[jpeg_uri()] * 3))
    assert err.value.status_code == 400
    assert err.value.code == "too_many_images"
    assert "at most 2 images" in err.value.message
    assert server.stats.prompt_tokens == 0


def test_body_of_one_megabyte_is_413_and_just_under_is_accepted(server, client):
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model=MODEL, messages=user("x" * 1_000_000))
    assert err.value.status_code == 413
    assert err.value.code == "request_too_large"

    def body_of(n: int) -> bytes:
        head = b'{"model": "visionkit-offline", "messages": [{"role": "user", "content": "'
        tail = b'"}]}'
        return head + b"x" * (n - len(head) - len(tail)) + tail

    status, _, payload, conn = raw_post(server.base_url, body_of(1_000_000))
    assert status == 413, payload
    # The oversized body was drained, so the same keep-alive connection still works.
    status, _, payload, conn = raw_post(server.base_url, body_of(999_999), conn=conn)
    assert status == 200, payload
    conn.close()


def test_expect_100_continue_is_refused_before_the_body_is_sent(server):
    host, port = server.base_url.split("//")[1].split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer offline\r\n"
            b"Content-Length: 5000000\r\nExpect: 100-continue\r\n\r\n"
        )
        head = sock.recv(65536).decode()
    assert head.startswith("HTTP/1.1 413 ")
    assert "Connection: close" in head and "request_too_large" in head


def test_a_huge_body_is_refused_without_being_held_in_memory(server):
    big = b"x" * (20 * 1024 * 1024)
    status, _, payload, conn = raw_post(server.base_url, big)
    conn.close()
    assert status == 413
    assert "20,971,520 bytes" in payload["error"]["message"]


def test_image_urls_are_refused(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=user("x", "https://e.org/a.png"))
    assert err.value.code == "invalid_image_url"
    assert err.value.param == "messages[0].content[1].image_url.url"
    assert "data URIs" in err.value.message


def test_mimetype_must_match_the_bytes(client):
    wrong = data_uri(image_bytes(fmt="JPEG"), "image/png")
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=user("x", wrong))
    assert "declared as image/png but holds JPEG bytes" in err.value.message


@pytest.mark.parametrize(
    "url, reason",
    [
        (data_uri(image_bytes(fmt="BMP"), "image/bmp"), "Unsupported image mimetype"),
        ("data:image/png;base64,not*base64!", "Invalid base64"),
        ("data:image/png,rawbytes", "not base64-encoded"),
        (data_uri(b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "image/png"), "could not be decoded"),
        ("data:image/jpeg;base64,", "Empty image"),
    ],
)
def test_bad_images_are_400_with_the_reason(client, url, reason):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=user("x", url))
    assert reason in err.value.message


def test_malformed_json_and_missing_fields_are_400(server):
    status, _, payload, conn = raw_post(server.base_url, b'{"model": ')
    assert status == 400 and payload["error"]["code"] == "invalid_json"
    status, _, payload, _ = raw_post(server.base_url, b'{"messages": []}', conn=conn)
    assert status == 400 and payload["error"]["param"] == "model"
    conn.close()


def test_wrong_or_missing_key_is_401_and_never_echoed(server):
    with (
        openai.OpenAI(base_url=server.base_url, api_key="sk-secret-123", max_retries=0) as c,
        pytest.raises(openai.AuthenticationError) as err,
    ):
        c.chat.completions.create(model=MODEL, messages=user("hi"))
    assert err.value.code == "invalid_api_key"
    assert "sk-secret-123" not in str(err.value) and "sk-secret" not in json.dumps(err.value.body)
    status, _, payload, conn = raw_post(server.base_url, b"{}", headers={"Authorization": ""})
    conn.close()
    assert status == 401 and "didn't provide an API key" in payload["error"]["message"]


def test_api_key_none_accepts_any_key():
    with (
        offline.serve(api_key=None) as url,
        openai.OpenAI(base_url=url, api_key="anything", max_retries=0) as c,
    ):
        assert c.chat.completions.create(model=MODEL, messages=user("hi")).choices


def test_models_list_and_unknown_model(client, server):
    ids = [m.id for m in client.models.list()]
    assert ids == [MODEL, "google/gemma-3-27b-instruct/bf-16", "visionkit-offline-small"]
    # code written for inference.net runs unchanged
    client.chat.completions.create(model=ids[1], messages=user("hi"))
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-9", messages=user("hi"))
    assert err.value.code == "model_not_found"
    with (
        offline.serve(any_model=True) as url,
        openai.OpenAI(base_url=url, api_key="offline", max_retries=0) as c,
    ):
        assert c.chat.completions.create(model="gpt-9", messages=user("hi")).model == "gpt-9"


# -- knobs and faults ----------------------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after_until_a_slot_frees():
    with (
        offline.serve(rate_limit=5, burst=1) as url,
        openai.OpenAI(base_url=url, api_key="offline", max_retries=0) as c,
    ):
        c.chat.completions.create(model=MODEL, messages=user("one"))
        with pytest.raises(openai.RateLimitError) as err:
            c.chat.completions.create(model=MODEL, messages=user("two"))
        headers = err.value.response.headers
        wait_ms = int(headers["retry-after-ms"])
        assert 0 < wait_ms <= 200
        assert headers["retry-after"] == "1"
        assert err.value.code == "rate_limit_exceeded"
        time.sleep(wait_ms / 1000)
        c.chat.completions.create(model=MODEL, messages=user("two"))
        assert url.server.stats.status_counts == {200: 2, 429: 1}


def test_injected_429s_are_retried_by_the_sdk_honouring_retry_after(server):
    server.inject(status=429, count=2, retry_after=0.05)
    with openai.OpenAI(base_url=server.base_url, api_key="offline", max_retries=2) as c:
        resp = c.chat.completions.create(model=MODEL, messages=user("hi", jpeg_uri()))
    assert resp.choices[0].message.content
    stats = server.stats
    assert stats.status_counts == {429: 2, 200: 1}
    assert stats.retries == 2
    assert stats.duplicates == {next(iter(stats.bodies)): 3}  # one body, sent three times
    assert server.pending_faults() == 0


def test_injected_500_timeout_and_drop(server, client):
    server.inject(status=500)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model=MODEL, messages=user("hi"))
    server.inject(delay=0.5)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model=MODEL, messages=user("hi"), timeout=0.1)
    server.inject(drop=True)
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model=MODEL, messages=user("hi"))
    # and the next request is answered normally
    assert client.chat.completions.create(model=MODEL, messages=user("hi")).choices
    assert server.stats.dropped == 1
    deadline = time.monotonic() + 5
    while len(server.stats.records) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)  # the delayed handler finishes after its client gave up
    records = sorted(server.stats.records, key=lambda r: r.started)
    assert [r.fault for r in records] == ["status 500", "delay 0.5s", "drop", None]


def test_fail_rate_is_deterministic_given_the_seed_and_retries_can_succeed():
    def failures(seed: int) -> list[int]:
        with (
            offline.serve(fail_rate=0.5, seed=seed) as url,
            openai.OpenAI(base_url=url, api_key="offline", max_retries=0) as c,
        ):
            out = []
            for i in range(24):
                try:
                    c.chat.completions.create(model=MODEL, messages=user(f"q{i}"))
                except openai.InternalServerError:
                    out.append(i)
            return out

    first = failures(seed=1)
    assert 4 <= len(first) <= 20
    assert failures(seed=1) == first
    assert failures(seed=2) != first
    # A failed body is not doomed: its later attempts are drawn afresh.
    with (
        offline.serve(fail_rate=0.5, seed=1) as url,
        openai.OpenAI(base_url=url, api_key="offline", max_retries=0) as c,
    ):
        for i in first[:3]:
            for _attempt in range(30):
                try:
                    c.chat.completions.create(model=MODEL, messages=user(f"q{i}"))
                    break
                except openai.InternalServerError:
                    continue
            else:
                pytest.fail(f"q{i} never succeeded")


def test_fail_status_can_be_another_code():
    with (
        offline.serve(fail_rate=1.0, fail_status=503) as url,
        openai.OpenAI(base_url=url, api_key="offline", max_retries=0) as c,
        pytest.raises(openai.InternalServerError) as err,
    ):
        c.chat.completions.create(model=MODEL, messages=user("hi"))
    assert err.value.status_code == 503


# -- JSON mode, streaming, determinism -----------------------------------------------------


def test_json_object_mode_gives_the_facts_as_fields(client):
    resp = client.chat.completions.create(
        model=MODEL,
        messages=user("Describe", jpeg_uri((800, 600), (10, 10, 10))),
        response_format={"type": "json_object"},
    )
    data = json.loads(resp.choices[0].message.content)
    assert data["width"] == 800 and data["height"] == 600 and data["format"] == "jpeg"
    assert data["dominant_colours"] == ["black"] and data["brightness"] == "mostly dark"
    assert data["description"].startswith("Offline stand-in")
    assert len(data["images"]) == 1


class Colour(pydantic.BaseModel):
    name: str
    share: float


class Caption(pydantic.BaseModel):
    caption: str
    width: int
    height: int
    format: Literal["PNG", "JPEG", "WEBP", "GIF"]
    brightness: Literal["mostly dark", "medium brightness", "mostly bright"]
    dominant_colors: list[str]
    has_dog: bool
    kind: Literal["photo", "drawing"]
    count: int = pydantic.Field(ge=1)
    main: Colour
    note: str | None = None
    tags: list[Colour] = []


def test_json_schema_mode_fills_a_pydantic_schema_that_validates(client):
    schema = Caption.model_json_schema()
    resp = client.chat.completions.create(
        model=MODEL,
        messages=user("Is there a dog?", jpeg_uri((700, 500), (240, 240, 240))),
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "caption", "schema": schema, "strict": True},
        },
    )
    parsed = Caption.model_validate_json(resp.choices[0].message.content)
    assert (parsed.width, parsed.height, parsed.format) == (700, 500, "JPEG")
    assert parsed.brightness == "mostly bright" and parsed.dominant_colors == ["white"]
    assert parsed.has_dog is False and parsed.kind == "photo" and parsed.count == 1
    assert parsed.caption.startswith("Offline stand-in")


def test_sdk_parse_helper_works_with_a_pydantic_model(client):
    class Simple(pydantic.BaseModel):
        description: str
        width: int

    resp = client.chat.completions.parse(
        model=MODEL, messages=user("x", jpeg_uri((90, 30))), response_format=Simple
    )
    assert resp.choices[0].message.parsed == Simple(
        description=resp.choices[0].message.parsed.description, width=90
    )


def test_streaming_gives_the_same_text(client):
    messages = user("Describe", jpeg_uri())
    whole = client.chat.completions.create(model=MODEL, messages=messages)
    stream = client.chat.completions.create(
        model=MODEL, messages=messages, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_max_tokens_truncates_with_finish_reason_length(client):
    resp = client.chat.completions.create(model=MODEL, messages=user("x", jpeg_uri()), max_tokens=5)
    assert resp.choices[0].finish_reason == "length"
    assert len(resp.choices[0].message.content) == 20
    assert resp.usage.completion_tokens == 5


def test_answers_are_deterministic_across_requests_and_servers(client):
    messages = user("Describe", jpeg_uri((500, 400), (200, 120, 30)))
    first = client.chat.completions.create(model=MODEL, messages=messages)
    again = client.chat.completions.create(model=MODEL, messages=messages)
    with (
        offline.serve() as url,
        openai.OpenAI(base_url=url, api_key="offline", max_retries=0) as other,
    ):
        third = other.chat.completions.create(model=MODEL, messages=messages)
    texts = {r.choices[0].message.content for r in (first, again, third)}
    assert len(texts) == 1
    assert first.id != again.id


def test_describe_image_names_colours_brightness_frames_and_transparency():
    half = Image.new("RGB", (100, 100), (255, 255, 255))
    half.paste((20, 60, 220), (0, 0, 50, 100))
    buf = io.BytesIO()
    half.save(buf, "PNG")
    facts = offline.describe_image(buf.getvalue())
    assert set(facts.dominant_colours) == {"blue", "white"}
    assert offline.describe_image(image_bytes(colour=(5, 5, 5))).brightness == "mostly dark"
    assert offline.describe_image(image_bytes(colour=(120, 70, 30))).dominant_colours == ("brown",)
    frames = [Image.new("RGB", (40, 30), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    gif = offline.describe_image(buf.getvalue())
    assert gif.frames == 3 and "animated GIF (3 frames)" in gif.phrase()
    clear = offline.describe_image(image_bytes(colour=(0, 0, 0, 0), fmt="PNG"))
    assert clear.dominant_colours == () and "fully transparent" in clear.phrase()


# -- concurrency, stats, the shared server, the command line ---------------------------------


def test_32_concurrent_requests_overlap(server):
    server.latency = 0.3

    async def run() -> None:
        async with openai.AsyncOpenAI(
            base_url=server.base_url, api_key="offline", max_retries=0
        ) as c:
            await asyncio.gather(
                *(
                    c.chat.completions.create(model=MODEL, messages=user(f"q{i}", jpeg_uri()))
                    for i in range(32)
                )
            )

    asyncio.run(run())
    stats = server.stats
    assert stats.status_counts == {200: 32}
    # The server itself saw them in flight together, which wall-clock times can only suggest.
    assert stats.max_in_flight >= 16  # sequential handling would give 1
    assert stats.connections <= 32  # keep-alive: one connection per concurrent request at most
    assert stats.images == 32 and stats.image_bytes == 32 * len(image_bytes())
    assert stats.duplicates == {}


def test_stats_reset_and_records_hold_no_secrets(server, client):
    client.chat.completions.create(model=MODEL, messages=user("hi"))
    old = server.reset_stats()
    assert old.chat_requests == 1 and server.stats.chat_requests == 0
    assert "offline" not in repr(old.records[0]).replace("visionkit-offline", "")


def test_shared_server_is_started_once_even_from_many_threads():
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(offline.shared())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(s) for s in seen}) == 1
    assert offline.start() == seen[0].base_url
    with openai.OpenAI(base_url=offline.start(), api_key="offline", max_retries=0) as c:
        assert c.chat.completions.create(model=MODEL, messages=user("hi")).choices


def test_command_line_serves_in_the_foreground():
    proc, url = command_line("--latency", "0")
    try:
        with openai.OpenAI(base_url=url, api_key="offline", max_retries=0) as c:
            assert c.chat.completions.create(model=MODEL, messages=user("hi")).choices
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert '"chat_requests": 1' in out  # SIGTERM stops it cleanly and prints its stats
    # e.g. visionkit/__init__.py importing visionkit.offline eagerly would make runpy warn
    assert "Warning" not in err and "Traceback" not in err


def _raw_chat(port: int, text: str) -> socket.socket:
    """A keep-alive connection with one chat request sent (its answer not read)."""
    body = json.dumps({"model": MODEL, "messages": user(text)}).encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer offline\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    return sock


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
    while len(rest) < length:
        rest += sock.recv(65536)
    return head


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_command_line_stops_on_a_signal_with_idle_and_busy_connections(signum):
    proc, url = command_line("--latency", "30")
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    socks: list[socket.socket] = []
    try:
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]  # never sent
        socks += idle
        with socket.create_connection(("127.0.0.1", port)) as probe:
            # a keep-alive connection that was answered and is now idle (a GET: no latency)
            probe.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b" 200 " in _read_response(probe)
            busy = [_raw_chat(port, f"in flight {i}") for i in range(12)]  # held 30 s each
            socks += busy
            time.sleep(0.5)  # let the handler threads read them and start their 30 s wait
            proc.send_signal(signum)
            returncode = proc.wait(timeout=20)  # a hang guard: it stops in well under a second
        out, err = proc.communicate(timeout=5)
    finally:
        for sock in socks:
            sock.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert returncode == 0, err
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["connections"] >= 1 + len(idle)
    assert 1 <= stats["chat_requests"] <= len(busy)  # requests were in flight, not answered
    assert "Traceback" not in err


def test_pixels_false_reads_headers_only_but_keeps_every_rule():
    with (
        offline.serve(pixels=False) as url,
        openai.OpenAI(base_url=url, api_key="offline", max_retries=0) as c,
    ):
        noise = np.random.default_rng(0).integers(0, 255, (1000, 1500, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(noise).save(buf, "JPEG", quality=20)
        big = data_uri(buf.getvalue(), "image/jpeg")
        assert len(big) > 2 * HEADER_PREFIX  # so only a prefix is decoded
        resp = c.chat.completions.create(model=MODEL, messages=user("", big))
        assert "a 1500x1000 JPEG (pixels not analysed)" in resp.choices[0].message.content
        assert resp.usage.prompt_tokens == inference_net_tokens(1500, 1000)
        frames = [Image.new("RGB", (40, 30), c) for c in [(255, 0, 0), (0, 0, 255)]]
        buf = io.BytesIO()
        frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
        gif = data_uri(buf.getvalue(), "image/gif")
        resp = c.chat.completions.create(model=MODEL, messages=user("", gif))
        assert "animated GIF (2 frames)" in resp.choices[0].message.content
        with pytest.raises(openai.BadRequestError, match="holds JPEG bytes"):
            c.chat.completions.create(model=MODEL, messages=user("", big.replace("jpeg", "png")))
        with pytest.raises(openai.BadRequestError, match="Invalid base64"):
            c.chat.completions.create(model=MODEL, messages=user("", big[:-5] + "!" + big[-4:]))
        assert url.server.stats.image_bytes == len(base64.b64decode(big.split(",")[1])) + len(
            buf.getvalue()
        )


def test_keep_alive_serves_many_requests_on_one_connection(server, client):
    for i in range(5):
        client.chat.completions.create(model=MODEL, messages=user(f"q{i}"))
    with pytest.raises(openai.BadRequestError):  # an error answer keeps the connection too
        client.chat.completions.create(model=MODEL, messages=user("x", "https://e.org/a.png"))
    client.chat.completions.create(model=MODEL, messages=user("last"))
    assert server.stats.connections == 1 and server.stats.chat_requests == 7


def test_refused_requests_are_told_successive_slots():
    with (
        offline.serve(rate_limit=2, burst=1) as url,
        openai.OpenAI(base_url=url, api_key="offline", max_retries=0) as c,
    ):
        c.chat.completions.create(model=MODEL, messages=user("go"))
        waits = []
        for i in range(3):
            with pytest.raises(openai.RateLimitError) as err:
                c.chat.completions.create(model=MODEL, messages=user(f"wait {i}"))
            waits.append(int(err.value.response.headers["retry-after-ms"]))
        # about 500, 1000 and 1500 ms: each refusal is handed the next free token
        assert waits == sorted(waits) and waits[2] - waits[0] >= 500


def test_chunked_bodies_are_read_and_limited(server):
    host, port = server.base_url.split("//")[1].split("/")[0].split(":")
    small = json.dumps({"model": MODEL, "messages": user("hi")}).encode()
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    hdrs = {"Authorization": "Bearer offline", "Content-Type": "application/json"}
    conn.request("POST", "/v1/chat/completions", body=iter([small[:10], small[10:]]), headers=hdrs)
    resp = conn.getresponse()
    assert resp.status == 200 and json.loads(resp.read())["object"] == "chat.completion"
    big = iter([b"x" * 300_000] * 4)  # 1.2 MB in four chunks
    conn.request("POST", "/v1/chat/completions", body=big, headers=hdrs)
    resp = conn.getresponse()
    assert resp.status == 413 and "1,200,000 bytes" in json.loads(resp.read())["error"]["message"]
    conn.close()


def test_the_key_is_never_logged_or_shown(caplog):
    secret = "sk-offline-secret-42"
    with (
        caplog.at_level(logging.DEBUG, logger="visionkit.offline"),
        offline.serve(api_key=secret) as url,
    ):
        with openai.OpenAI(base_url=url, api_key=secret, max_retries=0) as c:
            c.chat.completions.create(model=MODEL, messages=user("hi"))
        with (
            openai.OpenAI(base_url=url, api_key=secret + "x", max_retries=0) as c,
            pytest.raises(openai.AuthenticationError) as err,
        ):
            c.chat.completions.create(model=MODEL, messages=user("hi"))
        shown = [repr(url.server), str(url.server.stats), str(url.server.stats.records)]
    assert caplog.records  # the request lines were logged...
    assert secret not in caplog.text  # ...without the key
    assert secret not in str(err.value) and not any(secret in s for s in shown)


def test_a_phones_mpo_file_is_described_as_the_jpeg_it_is():
    # Phones write MPO: a JPEG followed by extra pictures (depth maps, previews), not frames.
    first = Image.new("RGB", (64, 48), (200, 30, 30))
    buf = io.BytesIO()
    first.save(buf, "MPO", save_all=True, append_images=[Image.new("RGB", (64, 48), "blue")])
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "MPO" and im.n_frames == 2
    facts = offline.describe_image(data)
    assert (facts.format, facts.frames, facts.width, facts.height) == ("jpeg", 1, 64, 48)
    assert "animated" not in facts.phrase() and "JPEG" in facts.phrase()


def test_a_second_stop_signal_is_left_to_the_kernel():
    from visionkit.offline.__main__ import StopSignals

    saved = {s: signal.getsignal(s) for s in StopSignals.signals}
    stop = StopSignals()
    try:
        stop.install()
        signal.raise_signal(signal.SIGTERM)  # the handler records it, raises nothing
        assert stop.wait(poll=0.01) == signal.SIGTERM
        # the next SIGINT/SIGTERM kills the process at once, even if Python is stuck on a lock
        assert all(signal.getsignal(s) is signal.SIG_DFL for s in StopSignals.signals)
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
