"""A per-widget cache of thumbnail bytes, filled once per row and prefetched in the background.

Thumbnails come from ``visionkit.images.thumbnails.thumbnail``; a row whose image cannot be
read is cached as its error message, so a broken file costs one attempt, not one per page view.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .._state import register

__all__ = ["CacheInfo", "Thumb", "ThumbnailCache", "mime_type"]

# Two workers: Pillow releases the GIL while decoding and resizing, and the machines we aim at
# (laptops, small CI runners) have a few cores. One pool for every widget in the kernel.
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="visionkit-thumbs")
        return _POOL


def mime_type(data: bytes) -> str:
    """The image MIME type of ``data``, sniffed from its first bytes."""
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"GIF8"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "image/jpeg"


@dataclass(frozen=True)
class Thumb:
    """One row's thumbnail: ``data`` (JPEG/PNG bytes) or ``error`` (why there is none)."""

    data: bytes = b""
    error: str | None = None

    @property
    def mime(self) -> str:
        return mime_type(self.data) if self.data else ""


@dataclass(frozen=True)
class CacheInfo:
    """Like ``functools.lru_cache``'s: ``made`` counts thumbnails actually computed."""

    hits: int
    made: int
    size: int


class ThumbnailCache:
    """Thumbnails of ``cells`` (a sequence of image cells) at ``size`` px, by row position.

    ``maxsize=None`` keeps every thumbnail (a 160 px JPEG is a few kB, so a thousand rows cost
    a few MB); a number keeps the most recently used ones (for large previews).
    """

    def __init__(
        self, cells: Any, size: int, *, rows: Any = None, maxsize: int | None = None
    ) -> None:
        self._cells = cells
        self._rows = rows  # index labels, so errors name the row
        self.size = int(size)
        self.maxsize = maxsize
        self._done: OrderedDict[int, Thumb] = OrderedDict()
        self._pending: dict[int, Future[Thumb]] = {}
        self._lock = threading.Lock()
        self._hits = 0
        self._made = 0

    def _make(self, pos: int) -> Thumb:
        from ..images.thumbnails import thumbnail

        try:
            row = None if self._rows is None else self._rows[pos]
            thumb = Thumb(data=thumbnail(self._cells[pos], thumb_size=self.size, row=row))
        except Exception as exc:  # a broken image becomes a tile with its reason
            thumb = Thumb(error=f"{type(exc).__name__}: {exc}")
        with self._lock:
            self._made += 1
            self._done[pos] = thumb
            self._pending.pop(pos, None)
            if self.maxsize is not None:
                while len(self._done) > self.maxsize:
                    self._done.popitem(last=False)
        return thumb

    def _future(self, pos: int) -> Future[Thumb] | Thumb:
        with self._lock:
            if pos in self._done:
                self._done.move_to_end(pos)
                return self._done[pos]
            fut = self._pending.get(pos)
            if fut is None:
                fut = self._pending[pos] = _pool().submit(self._make, pos)
            return fut

    def get_many(self, positions: Iterable[int]) -> list[Thumb]:
        """Thumbnails for ``positions``, made in parallel where missing."""
        positions = list(positions)
        with self._lock:
            self._hits += sum(1 for p in positions if p in self._done)
        found = [self._future(p) for p in positions]
        return [f if isinstance(f, Thumb) else f.result() for f in found]

    def get(self, pos: int) -> Thumb:
        return self.get_many([pos])[0]

    def prefetch(self, positions: Iterable[int]) -> None:
        """Start making thumbnails for ``positions`` in the background; returns at once."""
        for p in positions:
            self._future(p)

    def wait(self) -> None:
        """Block until background prefetches have finished (tests and benchmarks)."""
        with self._lock:
            pending = list(self._pending.values())
        for fut in pending:
            fut.result()

    def cache_info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(hits=self._hits, made=self._made, size=len(self._done))


def _held_pool() -> tuple[int, str]:
    with _POOL_LOCK:
        return (0, "") if _POOL is None else (1, "the widgets' thumbnail thread pool (2 threads)")


register("widget thumbnail pool", __name__, _held_pool)
