"""Estimated tokens: read from what is sent, the same in dry runs, budgets and real runs."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

import visionkit as vk
from visionkit import RequestError, offline
from visionkit.query.body import encoded_size, image_tokens

DATASETS = Path(__file__).resolve().parents[1] / "datasets" / "images"
NET = vk.get_provider("inference.net")


def _uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _saved(im: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **options)
    return buf.getvalue()


@pytest.fixture(scope="module")
def datasets_frame():
    return vk.read_images(str(DATASETS))


def test_encoded_size_reads_a_webp_bigger_than_the_decoded_prefix():
    noise = Image.effect_noise((900, 599), 80).convert("RGB")
    data = _saved(noise, "WEBP", quality=95)
    assert len(data) > 65_536  # Pillow cannot open its first 48 KiB
    assert encoded_size(_uri(data, "image/webp")) == (900, 599)
    assert image_tokens([_uri(data, "image/webp")], NET) == NET.estimate(900, 599) > 1601


def test_encoded_size_reads_a_jpeg_frame_header_behind_big_metadata():
    data = _saved(Image.new("RGB", (1000, 700), "teal"), "JPEG", comment=b"c" * 65_000)
    big_icc = _saved(Image.new("RGB", (1000, 700), "teal"), "JPEG", icc_profile=b"\0" * 150_000)
    small_icc = _saved(Image.new("RGB", (1000, 700), "teal"), "JPEG", icc_profile=b"\0" * 3_000)
    for payload in (data, big_icc, small_icc):  # header beyond 64 KiB, and between 1 and 64
        assert encoded_size(_uri(payload, "image/jpeg")) == (1000, 700)
    for fmt, mime in (("PNG", "image/png"), ("GIF", "image/gif"), ("WEBP", "image/webp")):
        tiny = _saved(Image.new("RGB", (3, 2), "teal"), fmt)  # the whole URI under a KiB
        assert encoded_size(_uri(tiny, mime)) == (3, 2)
    with pytest.raises(RequestError, match="row 5: cannot read the size of the encoded png"):
        encoded_size(_uri(b"not an image at all" * 100, "image/png"), row=5)


def test_a_prepared_request_reports_the_size_each_image_is_sent_at():
    """``image_sizes`` is the encoded image in the body: after max_side, and after the re-encode
    that makes room for a long prompt (what vk.propose_boxes scales the model's boxes from)."""
    from visionkit.query.body import prepare_request

    # Noise does not compress: 600x400 passes through at ~960 KB, under inference.net's 1 MB.
    noise = _saved(Image.effect_noise((600, 400), 100).convert("RGB"), "PNG")

    def sent(prompt: str, **encode_options) -> tuple[tuple[int, int], ...]:
        prepared = prepare_request(
            [noise], provider=NET, model="m", prompt=prompt, encode_options=encode_options
        )
        uri = prepared.body["messages"][-1]["content"][0]["image_url"]["url"]
        assert prepared.image_sizes == (encoded_size(uri),)  # what the body carries
        assert prepared.image_tokens == NET.estimate(*prepared.image_sizes[0])
        return prepared.image_sizes

    assert sent("Describe it.") == ((600, 400),)
    assert sent("Describe it.", max_side=300) == ((300, 200),)
    (crowded,) = sent("x" * 900_000)  # the prompt leaves ~90 KB: the image is made smaller
    assert crowded[0] < 600 and crowded[0] / crowded[1] == pytest.approx(1.5, rel=0.01)


def test_an_unreadable_size_is_the_rows_error_never_zero_tokens():
    for uri in (
        "data:image/png;base64,AAAAAAAAAAAAAAAA",
        "data:image/webp;base64," + base64.b64encode(b"RIFF\0\0\0\0WEBPVP8 " + b"\0" * 20).decode(),
        "data:image/png;base64,not base64 at all!",
    ):
        with pytest.raises(RequestError, match=r"row 'r7'.*cannot read the size"):
            image_tokens([uri], NET, row="r7")


def test_estimates_match_what_the_server_charges_for_every_bundled_image(datasets_frame):
    """The offline server bills the formula on the image it received: the estimate must agree."""
    with offline.serve(pixels=False) as url:  # sizes from headers: the bill is the same
        client = vk.connect("offline", base_url=url, api_key="offline")
        result = datasets_frame.vision.ask(
            "Describe this image.", client=client, cache=False, progress=False
        )
    assert result["error"].isna().all(), result["error"].dropna().tolist()
    text = 5  # "Describe this image." is 20 characters
    assert (result["estimated_tokens"] >= 1601 + text).all(), result["estimated_tokens"].tolist()
    mismatch = result[result["estimated_tokens"] != result["prompt_tokens"]]
    assert mismatch.empty, datasets_frame.loc[mismatch.index, "path"].tolist()
    webp = datasets_frame["format"] == "webp"
    assert webp.sum() >= 5 and (result.loc[webp, "estimated_tokens"] > 1601).all()


@pytest.fixture
def small_body():
    """A provider whose body limit makes encode shrink big noisy photos (fewer tokens)."""
    from dataclasses import replace

    return replace(vk.get_provider("offline"), name="small-body", max_body_bytes=60_000)


@pytest.fixture
def mixed_frame(tmp_path):
    """Two noisy 1000 px photos (shrunk to fit the body), a small one, and a repeat."""
    paths = []
    for i, size in enumerate([(1000, 1000), (1000, 700), (300, 200)]):
        path = tmp_path / f"photo{i}.png"
        Image.effect_noise(size, 70 + i).convert("RGB").save(path)
        paths.append(str(path))
    return pd.DataFrame({"path": [*paths, paths[0]]}, index=["a", "b", "c", "a-again"])


def test_budget_and_dry_run_are_one_computation(mixed_frame, small_body, tmp_path):
    with offline.serve(profile=small_body, pixels=False) as url:
        client = vk.connect(small_body, base_url=url, api_key="offline")
        options = dict(client=client, cache=tmp_path / "c.sqlite", progress=False)
        mixed_frame.iloc[[2]].vision.ask("Describe.", **options)  # row c is now a cache hit
        sent_before = url.server.stats.chat_requests
        plan = mixed_frame.vision.ask("Describe.", dry_run=True, **options)
        usage = plan.attrs["usage"]
        total = usage["estimated_tokens"]
        # shrinking to fit the body makes the photos cheaper than their header size says
        assert (
            plan.loc[["a", "b"], "estimated_tokens"]
            < vk.estimate_tokens(
                pd.Series([1000, 1000]), pd.Series([1000, 700]), provider=small_body
            ).to_numpy()
            + 2
        ).all()
        # the repeat and the cache hit are free: two requests
        assert usage["requests"] == 2 and usage["cache_hits"] == 1 and usage["repeats"] == 1
        assert total == plan.loc[["a", "b"], "estimated_tokens"].sum()

        with pytest.raises(vk.BudgetExceeded, match=rf"estimate is {total:,} tokens for 2 req"):
            mixed_frame.vision.ask("Describe.", budget_tokens=total - 1, **options)
        assert url.server.stats.chat_requests == sent_before  # refused before sending
        result = mixed_frame.vision.ask("Describe.", budget_tokens=total, **options)
        assert url.server.stats.chat_requests == sent_before + 2
    assert result["error"].isna().all(), result["error"].tolist()
    assert result["estimated_tokens"].tolist() == plan["estimated_tokens"].tolist()
    assert result.attrs["usage"]["prompt_tokens"] == total  # and the server billed exactly that


def test_a_repeated_image_is_sent_once_even_without_a_cache(mixed_frame):
    frame = pd.concat([mixed_frame.iloc[[2]]] * 5)
    frame.index = [f"r{i}" for i in range(5)]
    with offline.serve(pixels=False) as url:
        client = vk.connect("offline", base_url=url, api_key="offline")
        plan = frame.vision.ask("Describe.", client=client, cache=False, dry_run=True)
        result = frame.vision.ask(
            "Describe.", client=client, cache=False, concurrency=1, progress=False
        )
        assert url.server.stats.chat_requests == plan.attrs["usage"]["requests"] == 1
    assert result["answer"].nunique() == 1 and result["error"].isna().all()


def test_the_documented_join_keeps_every_column_and_every_reason(tmp_path):
    """README and notebook 02: ``df.drop(columns="error").join(result)`` loses nothing."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    Image.new("RGB", (40, 30), "red").save(tmp_path / "good.png")
    (tmp_path / "text.png").write_text("hello, not an image")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "cut.png").write_bytes((tmp_path / "good.png").read_bytes()[:40])
    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
    (tmp_path / "bomb.png").write_bytes(bomb)
    df = vk.read_images(str(tmp_path))
    assert df["error"].notna().sum() == 4
    with offline.serve(pixels=False) as url:
        client = vk.connect("offline", base_url=url, api_key="offline")
        result = df.vision.ask("Describe.", client=client, cache=False, progress=False)
        assert url.server.stats.chat_requests == 1  # the unreadable files cost no request

    with pytest.raises(ValueError, match="overlap"):
        df.join(result)  # why the docs drop one error column first
    table = df.drop(columns="error").join(result)
    assert list(table.columns) == [c for c in df.columns if c != "error"] + list(result.columns)
    for label, reason in df["error"].dropna().items():
        assert reason in table.loc[label, "error"], (reason, table.loc[label, "error"])
        assert pd.isna(table.loc[label, "answer"])
    good = df.index[df["error"].isna()]
    assert table.loc[good, "error"].isna().all() and table.loc[good, "answer"].notna().all()
