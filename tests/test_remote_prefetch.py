"""Remote cells are read ahead of the decoders, a bounded number at a time."""

from __future__ import annotations

import threading

import pandas as pd
import pytest
from image_factory import photo, png_bytes, send, serve

from visionkit import ImageError
from visionkit.images.encode import EncodeWarning, encode_series
from visionkit.images.prefetch import close, prefetched

PNG = png_bytes(photo(40, 30))


@pytest.fixture
def server():
    hits: list[str] = []
    lock = threading.Lock()

    def ok(req):
        with lock:
            hits.append(req.path)
        send(req, PNG)

    routes = {f"/{i}.png": ok for i in range(40)}
    with serve(routes) as base:
        yield base, hits


def test_reads_stay_a_window_ahead_and_errors_name_the_row(server):
    base, hits = server
    cells = [f"{base}/{i}.png" for i in range(30)] + [f"{base}/missing.png", b"local"]
    view = prefetched(cells, rows=[f"r{i}" for i in range(32)], window=4, threads=2)
    try:
        assert view[0] == PNG
        seen = len(hits)
        assert 1 <= seen <= 5  # item 0 and at most 4 ahead, not all 30
        assert all(view[i] == PNG for i in range(1, 30))
        with pytest.raises(ImageError, match="row 'r30': download failed: HTTP 404"):
            view[30]
        assert view[31] == b"local"  # a local cell is passed through untouched
    finally:
        close(view)
    assert sorted(hits) == sorted(f"/{i}.png" for i in range(30))  # each read once
    assert prefetched([b"x", "a.png"]) == [b"x", "a.png"]  # nothing remote: the list itself


def test_encode_reads_each_url_once_and_keeps_row_errors(server):
    base, hits = server
    cells = pd.Series([f"{base}/{i}.png" for i in range(12)] + [f"{base}/missing.png"])
    with pytest.warns(EncodeWarning, match="row 12: download failed: HTTP 404"):
        uris = encode_series(cells, progress=False, workers=2)
    assert uris.notna().sum() == 12
    assert sorted(hits) == sorted(f"/{i}.png" for i in range(12))
