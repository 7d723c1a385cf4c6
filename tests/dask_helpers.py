"""Images for the Dask tests (tests/test_dask_*.py): small JPEGs, distinct unless asked; and
a server of them that holds some back until told (``gated_images``)."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image


def jpeg(i: int, size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size[0] + i % 50, size[1]), ((i * 37) % 256, (i * 11) % 256, 90)).save(
        buf, "JPEG"
    )
    return buf.getvalue()


def image_folder(folder: Path, n: int, *, repeat_every: int | None = None) -> Path:
    """``n`` JPEGs named im0000.jpg...; with ``repeat_every=k`` image i has image i % k's bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        data = jpeg(i % repeat_every if repeat_every else i)
        (folder / f"im{i:04d}.jpg").write_bytes(data)
    return folder


@dataclass
class GatedImages:
    """JPEGs served over HTTP at ``url(i)``; a request for one of ``gated`` is held until
    ``open()`` holds (polled) or ``timeout`` seconds pass. ``held`` counts requests that
    waited and were let through by ``open()``; ``timed_out`` those let through by the clock."""

    gated: set[int]
    open: Callable[[], bool]
    timeout: float = 20.0
    base: str = ""
    held: int = 0
    timed_out: int = 0

    def url(self, i: int) -> str:
        return f"{self.base}/im{i:04d}.jpg"


@contextmanager
def gated_images(gated: set[int], open: Callable[[], bool], timeout: float = 20.0):
    """A ``GatedImages`` server on 127.0.0.1 for the block (see its docstring)."""
    state = GatedImages(gated, open, timeout)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            i = int(self.path.rsplit("im", 1)[1].split(".")[0])
            if i in state.gated:
                deadline = time.monotonic() + state.timeout
                while not state.open() and time.monotonic() < deadline:
                    time.sleep(0.02)
                with lock:
                    if state.open():
                        state.held += 1
                    else:
                        state.timed_out += 1
            data = jpeg(i)
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
