"""Awkward image files made with Pillow, for the images tests (no dependency on datasets/)."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
from PIL import Image


def photo(width: int = 640, height: int = 480, seed: int = 0) -> Image.Image:
    """A photo-like RGB image: smooth colour fields plus grain (so JPEG has work to do).

    Built small and upscaled in C, so camera sizes (4000 x 3000) take a fraction of a second.
    """
    rng = np.random.default_rng(seed)
    sw, sh = max(2, width // 16), max(2, height // 16)
    y, x = np.mgrid[0:sh, 0:sw]
    r = 128 + 100 * np.sin(x / sw * 6.0 + seed)
    g = 128 + 100 * np.cos(y / sh * 5.0)
    b = 255 * (x + y) / (sw + sh)
    small = np.stack([r, g, b], axis=-1) + rng.normal(0, 25, (sh, sw, 3))
    base = Image.fromarray(np.clip(small, 0, 255).astype("uint8"), "RGB")
    base = base.resize((width, height), Image.Resampling.BICUBIC)
    grain = rng.integers(-12, 13, (height, width, 3), dtype=np.int16)
    arr = np.asarray(base, dtype=np.int16) + grain
    return Image.fromarray(np.clip(arr, 0, 255).astype("uint8"), "RGB")


def save(im: Image.Image, path: Path, fmt: str | None = None, **kw) -> Path:
    im.save(path, fmt, **kw)
    return path


def exif_rotated_jpeg(path: Path, orientation: int = 6) -> Path:
    """A 400x100 JPEG (left half red, right half blue) with an EXIF orientation tag."""
    im = Image.new("RGB", (400, 100), "red")
    im.paste((0, 0, 255), (200, 0, 400, 100))
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(path, "JPEG", exif=exif, quality=95)
    return path


def bomb_png(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A tiny PNG whose header claims ``width x height`` pixels (a decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    data += chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")
    path.write_bytes(data)
    return path


_PHONE_JPEGS: dict[tuple[int, int], Path] = {}


def phone_jpeg(tmp_path_factory, width: int = 12000, height: int = 9000) -> Path:
    """A real ``width x height`` JPEG (108 MP by default: a modern phone's full resolution).

    Left half red, right half blue, low quality: under 2 MB on disk. Made once per session
    (about 0.6 s and a transient 430 MB while Pillow encodes it).
    """
    key = (width, height)
    if key not in _PHONE_JPEGS:
        path = tmp_path_factory.mktemp("phone") / f"phone_{width}x{height}.jpg"
        im = Image.new("RGB", (width, height), (200, 40, 40))
        im.paste((30, 60, 220), (width // 2, 0, width, height))
        im.save(path, "JPEG", quality=10)
        del im
        _PHONE_JPEGS[key] = path
    return _PHONE_JPEGS[key]


def with_declared_size(jpeg: bytes, width: int, height: int) -> bytes:
    """``jpeg`` with its SOF header patched to claim ``width x height`` (the data stays short)."""
    pos = 2
    while jpeg[pos] == 0xFF and jpeg[pos + 1] not in (0xC0, 0xC1, 0xC2):
        pos += 2 + int.from_bytes(jpeg[pos + 2 : pos + 4], "big")
    assert jpeg[pos] == 0xFF, "no SOF segment found"
    return jpeg[: pos + 5] + struct.pack(">HH", height, width) + jpeg[pos + 9 :]


def truncated_jpeg(path: Path, size: tuple[int, int] = (600, 400)) -> Path:
    buf = io.BytesIO()
    photo(*size).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    path.write_bytes(data[: int(len(data) * 0.6)])
    return path


def gradient16(width: int = 256, height: int = 64) -> Image.Image:
    """A 16-bit grayscale horizontal gradient from 0 to 65535 (mode I;16)."""
    row = np.linspace(0, 65535, width).astype("<u2")
    arr = np.tile(row, (height, 1))
    im = Image.fromarray(arr)
    assert im.mode == "I;16", im.mode
    return im


def palette_with_transparency() -> Image.Image:
    """A P-mode image: index 0 transparent, index 1 pure red, index 2 pure green."""
    im = Image.new("P", (64, 64), 0)
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    im.paste(1, (0, 0, 32, 64))
    im.paste(2, (32, 32, 64, 64))
    im.info["transparency"] = 0
    return im


def animated_gif(path: Path) -> Path:
    """A three-frame GIF: red, green, blue frames of 80x60."""
    frames = [Image.new("RGB", (80, 60), c) for c in ("red", "lime", "blue")]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


class _Handler(BaseHTTPRequestHandler):
    routes: ClassVar[dict] = {}

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        route = self.routes.get(self.path)
        if route is None:
            self.send_error(404, "Not Found")
            return
        route(self)


@contextmanager
def serve(routes: dict) -> Iterator[str]:
    """A local HTTP server on 127.0.0.1 in a thread; ``routes`` maps path -> handler(req)."""
    handler = type("Handler", (_Handler,), {"routes": routes})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def send(req, body: bytes, ctype: str = "image/png", length: bool = True) -> None:
    req.send_response(200)
    req.send_header("Content-Type", ctype)
    if length:
        req.send_header("Content-Length", str(len(body)))
    req.end_headers()
    req.wfile.write(body)


def stream_forever(req, chunk: bytes = b"\0" * 65536, limit: int = 200 * 65536) -> None:
    """Send a response with no Content-Length that goes on (up to ``limit`` bytes)."""
    req.send_response(200)
    req.send_header("Content-Type", "image/png")
    req.end_headers()
    sent = 0
    try:
        req.wfile.write(b"\x89PNG\r\n\x1a\n")
        while sent < limit:
            req.wfile.write(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass


def slow(req, delay: float = 2.0) -> None:
    time.sleep(delay)
    with suppress(BrokenPipeError, ConnectionResetError):
        send(req, b"late")
