"""The front door: ``serve()`` for a ``with`` block, and the one ``shared()`` server per process."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

from .._state import register
from .server import OfflineServer

__all__ = ["BaseURL", "serve", "shared", "start"]


class BaseURL(str):
    """The base URL string ``serve()`` yields, with the running ``server`` attached."""

    server: OfflineServer

    def __new__(cls, url: str, server: OfflineServer) -> BaseURL:
        obj = super().__new__(cls, url)
        obj.server = server
        return obj


@contextlib.contextmanager
def serve(**fields: Any) -> Iterator[BaseURL]:
    """Run an OfflineServer for the ``with`` block; yields its base URL ``http://127.0.0.1:P/v1``.

    The yielded string has a ``.server`` attribute (the OfflineServer) for ``inject`` and
    ``stats``:

        with visionkit.offline.serve(latency=0.2, rate_limit=20) as url:
            client = openai.OpenAI(base_url=url, api_key="offline")
            ...
            assert url.server.stats.duplicates == {}

    Every keyword is the ``OfflineServer`` field of the same name (one list of them, there).
    """
    server = OfflineServer(**fields)
    server.start()
    try:
        yield BaseURL(server.base_url, server)
    finally:
        server.stop()


_shared: OfflineServer | None = None
_shared_pid: int | None = None
_shared_lock = threading.Lock()


def shared() -> OfflineServer:
    """The process's one background OfflineServer (started on first use; thread-safe).

    Used by ``visionkit.connect("offline")``. Its key is ``"offline"``; no latency, no faults.
    A forked child process gets its own server.
    """
    global _shared, _shared_pid
    with _shared_lock:
        if _shared is None or _shared_pid != os.getpid() or not _shared.running:
            _shared = OfflineServer().start()
            _shared_pid = os.getpid()
        return _shared


def start() -> str:
    """Start (once per process) the shared background server; returns its base URL."""
    return shared().base_url


def _held_server() -> tuple[int, str]:
    with _shared_lock:
        server = _shared if _shared is not None and _shared.running else None
    return (0, "") if server is None else (1, f"running at {server.base_url}")


def _stop_shared() -> None:
    """Stop the shared server (the next key-less ``vk.connect()`` starts a new one)."""
    global _shared, _shared_pid
    with _shared_lock:
        server, _shared, _shared_pid = _shared, None, None
    if server is not None and server.running:
        server.stop()


register("shared offline server", __name__, _held_server, _stop_shared)
