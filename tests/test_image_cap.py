"""The byte cap on one image read whole, and ``VISIONKIT_MAX_IMAGE_BYTES``, which sets it.

A download, a bucket object and a local file are each refused past the cap (50 MB unless the
variable says otherwise), with a reason that says how to raise it; ``encode`` and ``ask`` read
local files through different paths (``ask`` hashes them for its cache) and must agree. Tests
lower the cap to a few kilobytes instead of writing 50 MB files.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pandas as pd
import pytest
from hostile_http import raw_server
from PIL import Image

import visionkit as vk
from visionkit import ImageError
from visionkit.images.cells import read_bytes
from visionkit.images.download import DOWNLOAD_MAX_BYTES, max_image_bytes

VARIABLE = "VISIONKIT_MAX_IMAGE_BYTES"
HINT = f"{VARIABLE} raises it"


def _noise_png(side: int = 48) -> bytes:
    pixels = np.random.default_rng(7).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def test_the_cap_is_50_mb_unless_the_variable_sets_it(monkeypatch):
    monkeypatch.delenv(VARIABLE, raising=False)
    assert max_image_bytes() == DOWNLOAD_MAX_BYTES == 50 * 1024 * 1024
    monkeypatch.setenv(VARIABLE, "209_715_200")
    assert max_image_bytes() == 200 * 1024 * 1024
    for bad in ("lots", "-1", "0", "2.5e8"):
        monkeypatch.setenv(VARIABLE, bad)
        with pytest.raises(ValueError, match=rf"{VARIABLE}='{bad}' is not a number of bytes"):
            max_image_bytes()


def test_encode_and_ask_refuse_a_local_file_over_the_cap_alike(
    tmp_path, monkeypatch, client, cache
):
    """``ask`` read local files whole for its cache key past the cap that ``encode`` kept,
    answering (and paying for) an image ``encode`` refused."""
    data = _noise_png()
    path = tmp_path / "scan.png"
    path.write_bytes(data)
    df = pd.DataFrame({"path": [str(path)]})
    monkeypatch.setenv(VARIABLE, str(len(data) - 1))
    reason = f"file over the {len(data) - 1:,} bytes cap ({len(data):,} bytes; {HINT})"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", vk.EncodeWarning)
        uris = df.vision.encode(progress=False)
    assert uris.isna().all() and uris.attrs["errors"] == {0: reason}
    result = df.vision.ask("Describe it.", client=client, cache=cache, progress=False)
    assert result.loc[0, "error"] == f"ImageError: {reason}"
    assert result.attrs["usage"]["requests"] == 0

    monkeypatch.setenv(VARIABLE, str(len(data)))  # exactly the file's size: allowed
    assert df.vision.encode(progress=False).notna().all()
    result = df.vision.ask("Describe it.", client=client, cache=cache, progress=False)
    assert result.loc[0, "error"] is None and result.loc[0, "answer"]


def test_a_download_over_the_cap_is_refused_and_the_variable_raises_it(monkeypatch):
    body = _noise_png()

    def serve(conn, _request, _state):
        head = f"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {len(body)}\r\n"
        conn.sendall(head.encode() + b"Connection: close\r\n\r\n" + body)

    with raw_server(serve) as server:
        url = f"{server.base}/scan.png"
        monkeypatch.setenv(VARIABLE, "4096")
        with pytest.raises(ImageError) as info:
            read_bytes(url, row=3)
        assert (
            info.value.reason == f"download over the 4,096 bytes cap ({len(body):,} bytes; {HINT})"
        )
        monkeypatch.setenv(VARIABLE, str(len(body)))
        assert read_bytes(url, row=3) == body


def test_a_bucket_object_over_the_cap_is_refused_and_the_variable_raises_it(s3, monkeypatch):
    body = _noise_png()
    name = s3.make_bucket({"scans/a.png": body})
    url = f"s3://{name}/scans/a.png"
    monkeypatch.setenv(VARIABLE, "4096")
    with pytest.raises(ImageError) as info:
        read_bytes(url, storage_options=s3.options)
    assert info.value.reason == f"object over the 4,096 bytes cap ({len(body):,} bytes; {HINT})"
    monkeypatch.setenv(VARIABLE, str(len(body)))
    assert read_bytes(url, storage_options=s3.options) == body
