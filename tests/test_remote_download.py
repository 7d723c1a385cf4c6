"""http(s) image cells against hostile servers on 127.0.0.1 (issue 8, items 2, 4 and 5).

Each server is a raw socket that writes exactly the bytes a misbehaving server would: a chunked
body cut short, bytes dripped slowly, redirects to other schemes and in loops.
"""

from __future__ import annotations

import socket

import pandas as pd
import pytest
from hostile_http import drip, raw_server
from image_factory import photo, png_bytes

import visionkit as vk
from visionkit import ImageError
from visionkit.images.cells import read_bytes
from visionkit.images.download import MAX_REDIRECTS, download, fetch_range
from visionkit.images.encode import EncodeWarning, encode_series

PNG = png_bytes(photo(40, 30))


def _head(status: str, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status}"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _ok(conn: socket.socket, _req: bytes, _state) -> None:
    conn.sendall(_head("200 OK", {"Content-Length": str(len(PNG)), "Connection": "close"}) + PNG)


def test_a_chunked_body_cut_short_is_that_rows_error():
    def cut_short(conn, _req, _state):
        conn.sendall(_head("200 OK", {"Transfer-Encoding": "chunked", "Connection": "close"}))
        conn.sendall(b"3e8\r\n" + PNG[:50])  # promises 1000 bytes, sends 50, closes

    with raw_server(cut_short) as bad, raw_server(_ok) as good:
        urls = [f"{good.base}/a.png", f"{bad.base}/b.png"]
        with pytest.raises(ImageError, match="connection closed before the whole image") as info:
            read_bytes(urls[1], row=7)
        assert info.value.row == 7
        df = vk.read_images(urls)
        assert df.error.isna().tolist() == [True, False]
        assert "connection closed before the whole image arrived" in df.error[1]
        assert df.width[0] == 40
        with pytest.warns(EncodeWarning, match="row 1: download failed"):
            uris = encode_series(pd.Series(urls), progress=False)
        assert uris[0].startswith("data:image/png;base64,")
        assert pd.isna(uris[1])


def test_a_dripping_body_ends_at_one_deadline():
    def dripping(conn, _req, state):
        conn.sendall(_head("200 OK", {"Content-Length": "1000", "Content-Type": "image/png"}))
        drip(conn, PNG[:1000].ljust(1000, b"\0"), state, every=0.1, limit=30)

    with raw_server(dripping) as server:
        with pytest.raises(ImageError, match=r"download failed: timed out after 1 s"):
            read_bytes(f"{server.base}/slow.png", timeout=1.0)
        # The client hung up long before the server could finish dripping (every read came
        # well within a per-read timeout: only an overall deadline ends this download).
        assert server.gave_up.wait(5)
        assert server.sent < 100


def test_slow_headers_time_out_and_are_not_called_an_empty_file():
    def slow_headers(conn, _req, state):
        drip(conn, _head("200 OK", {"Content-Length": str(len(PNG))}) + PNG, state, 0.1, 30)

    with raw_server(slow_headers) as server:
        with pytest.raises(ImageError) as info:
            read_bytes(f"{server.base}/x.png", timeout=1.0)
        assert "timed out after 1 s" in info.value.reason
        assert "empty" not in info.value.reason
        assert server.gave_up.wait(5)


def test_a_redirect_to_another_scheme_is_refused_and_never_followed():
    with raw_server(lambda conn, req, st: None) as ftp:

        def to_ftp(conn, _req, _state):
            location = f"ftp://127.0.0.1:{ftp.port}/secret.png"
            conn.sendall(_head("302 Found", {"Location": location, "Content-Length": "0"}))

        with raw_server(to_ftp) as server:
            with pytest.raises(ImageError, match=r"refusing ftp: URL \(redirected\)"):
                read_bytes(f"{server.base}/x.png")
            for scheme in ("file:///etc/passwd", "data:image/png;base64,AAAA"):

                def to_other(conn, _req, _state, location=scheme):
                    conn.sendall(_head("301 Moved", {"Location": location, "Content-Length": "0"}))

                with raw_server(to_other) as other, pytest.raises(ImageError, match="refusing"):
                    read_bytes(f"{other.base}/y.png")
        assert ftp.connections == 0


def test_redirects_are_followed_over_http_up_to_a_cap():
    with raw_server(_ok) as target:

        def once(conn, _req, _state):
            location = f"{target.base}/final.png"
            head = _head("307 Temporary Redirect", {"Location": location, "Content-Length": "0"})
            conn.sendall(head)

        with raw_server(once) as server:
            assert read_bytes(f"{server.base}/x.png") == PNG

    def loop(conn, req, _state):
        path = req.split(b" ", 2)[1].decode()
        hop = int(path.strip("/") or 0) + 1
        conn.sendall(_head("302 Found", {"Location": f"/{hop}", "Content-Length": "0"}))

    with raw_server(loop) as server:
        with pytest.raises(ImageError, match=f"more than {MAX_REDIRECTS} redirects"):
            read_bytes(f"{server.base}/0")
        assert len(server.requests) == MAX_REDIRECTS + 1


def test_the_size_cap_message_is_not_wrapped_twice():
    def endless(conn, _req, state):
        conn.sendall(_head("200 OK", {"Content-Type": "image/png", "Connection": "close"}))
        for _ in range(64):
            conn.sendall(b"\0" * 65536)

    with raw_server(endless) as server, pytest.raises(ImageError) as info:
        read_bytes(f"{server.base}/big.png", max_bytes=1024 * 1024)
    assert info.value.reason == "download over the 1 MB cap (VISIONKIT_MAX_IMAGE_BYTES raises it)"


def test_transient_statuses_are_retried_and_missing_ones_are_not():
    def flaky(conn, _req, state):
        if state.connections < 3:
            conn.sendall(_head("503 Service Unavailable", {"Content-Length": "0"}))
        else:
            _ok(conn, _req, state)

    with raw_server(flaky) as server:
        assert download(f"{server.base}/x.png") == PNG
        assert server.connections == 3

    def missing(conn, _req, _state):
        conn.sendall(_head("404 Not Found", {"Content-Length": "0"}))

    with raw_server(missing) as server:
        with pytest.raises(ImageError, match="HTTP 404"):
            download(f"{server.base}/x.png")
        assert server.connections == 1


def test_fetch_range_reads_only_the_leading_bytes_even_when_range_is_ignored():
    big = PNG + b"\0" * 30_000_000

    def ignores_range(conn, _req, state):
        conn.sendall(_head("200 OK", {"Content-Length": str(len(big))}))
        try:
            for i in range(0, len(big), 65536):
                conn.sendall(big[i : i + 65536])
                state.sent = i + 65536
        except OSError:
            state.gave_up.set()

    with raw_server(ignores_range) as server:
        data, size = fetch_range(f"{server.base}/x.png", 0, 100)
        assert data == big[:100]
        assert size == len(big)
        assert server.gave_up.wait(5)
        assert server.sent < len(big)
        data, _ = fetch_range(f"{server.base}/x.png", 100, 200)
        assert data == big[100:200]
