"""Estimated tokens: read from what is sent, the same in dry runs, budgets and real runs."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

import visionkit as vk
from visionkit import RequestError, offline
from visionkit.requests import encoded_size, image_tokens

DATASETS = Path(__file__).resolve().parents[1] / "datasets"
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
    for payload in (data, big_icc):
        assert encoded_size(_uri(payload, "image/jpeg")) == (1000, 700)


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
