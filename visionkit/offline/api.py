"""The front door: ``serve()`` for a ``with`` block, and the one ``shared()`` server per process."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

from ..providers import Provider
from .server import DEFAULT_MODEL, OfflineServer

__all__ = ["BaseURL", "serve", "shared", "start"]


class BaseURL(str):
    """The base URL string ``serve()`` yields, with the running ``server`` attached."""

    server: OfflineServer

    def __new__(cls, url: str, server: OfflineServer) -> BaseURL:
        obj = super().__new__(cls, url)
        obj.server = server
        return obj


@contextlib.contextmanager
def serve(
    *,
    latency: float = 0.0,
    fail_rate: float = 0.0,
    rate_limit: float | None = None,
    api_key: str | None = "offline",
    model: str = DEFAULT_MODEL,
    seed: int = 0,
    profile: str | Provider = "offline",
    fail_status: int = 500,
    burst: float | None = None,
    any_model: bool = False,
    max_images: int | None = None,
    pixels: bool = True,
    port: int = 0,
    upload_interval: float | None = None,
    max_file_bytes: int | None = None,
    max_requests_per_file: int | None = None,
    batch_validate_time: float = 0.0,
    batch_time: float = 0.0,
    batch_finalize_time: float = 0.0,
    batch_cancel_time: float = 0.0,
    batch_expire_fraction: float = 0.0,
    line_fail_rate: float = 0.0,
    line_fail_status: int = 500,
) -> Iterator[BaseURL]:
    """Run an OfflineServer for the ``with`` block; yields its base URL ``http://127.0.0.1:P/v1``.

    The yielded string has a ``.server`` attribute (the OfflineServer) for ``inject`` and
    ``stats``::

        with visionkit.offline.serve(latency=0.2, rate_limit=20) as url:
            client = openai.OpenAI(base_url=url, api_key="offline")
            ...
            assert url.server.stats.duplicates == {}

    Every keyword is the ``OfflineServer`` field of the same name.
    """
    server = OfflineServer(
        latency=latency,
        fail_rate=fail_rate,
        rate_limit=rate_limit,
        burst=burst,
        api_key=api_key,
        model=model,
        seed=seed,
        profile=profile,
        fail_status=fail_status,
        any_model=any_model,
        max_images=max_images,
        pixels=pixels,
        port=port,
        upload_interval=upload_interval,
        max_file_bytes=max_file_bytes,
        max_requests_per_file=max_requests_per_file,
        batch_validate_time=batch_validate_time,
        batch_time=batch_time,
        batch_finalize_time=batch_finalize_time,
        batch_cancel_time=batch_cancel_time,
        batch_expire_fraction=batch_expire_fraction,
        line_fail_rate=line_fail_rate,
        line_fail_status=line_fail_status,
    )
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
