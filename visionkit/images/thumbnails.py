"""Look at an image set in a notebook: ``thumbnail`` bytes and the ``df.vision.show()`` grid.

Thumbnails are small JPEGs (PNG when the image has transparency), decoded in JPEG draft mode,
and cached in a bounded LRU (``cachetools.LRUCache``: 64 MB and 4,096 thumbnails at most) keyed
by path + modification time + size (or by a hash of the bytes), so showing the same frame twice
is instant.

Usage:

    df = vk.read_images("datasets/images/")
    df.vision.show(caption=["format", "width"])        # an HTML grid in Jupyter
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import io
import os
import threading
from collections.abc import Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from cachetools import LRUCache

from .._state import register
from ..errors import ImageError
from ..types import ImageCell
from .cells import cell_kind, local_path, path_of, source_label
from .decode import decode_image
from .pil_errors import pil_errors
from .table_refs import tables_call

__all__ = ["ImageGrid", "clear_thumbnail_cache", "show_images", "thumbnail"]

DEFAULT_N = 36
THUMBNAIL_QUALITY = 80
_CACHE_MAX_ENTRIES = 4096
_CACHE_MAX_BYTES = 64 * 1024 * 1024


def _new_cache(max_entries: int, max_bytes: int) -> LRUCache:
    """An LRU of thumbnail bytes bounded by total bytes *and* entries: each entry counts as at
    least ``max_bytes / max_entries`` bytes, so no more than ``max_entries`` fit."""
    floor = max(1, max_bytes // max_entries)
    return LRUCache(maxsize=max_bytes, getsizeof=lambda value: max(len(value), floor))


_cache = _new_cache(_CACHE_MAX_ENTRIES, _CACHE_MAX_BYTES)
_cache_lock = threading.Lock()  # cachetools' caches are not thread-safe; show() uses a pool


def clear_thumbnail_cache() -> None:
    """Forget every cached thumbnail."""
    with _cache_lock:
        _cache.clear()


def _cache_key(cell: Any, size: int) -> Hashable | None:
    kind = cell_kind(cell)
    if kind == "path":
        try:
            path = os.path.abspath(local_path(cell))
            st = os.stat(path)
        except OSError:
            return None
        return ("path", path, st.st_mtime_ns, st.st_size, size)
    if kind in ("url", "remote", "ref"):  # the URL alone: never the options used to read it
        return ("url", cell, size)
    if kind == "bytes":
        return ("bytes", hashlib.blake2b(bytes(cell), digest_size=16).digest(), size)
    if kind == "data":
        return ("data", hashlib.blake2b(cell.encode(), digest_size=16).digest(), size)
    return None  # PIL images can change in place: never cached


def thumbnail(image: ImageCell, *, thumb_size: int = 160, row: object = None) -> bytes:
    """A small JPEG (or PNG, when the image has transparency) at most ``thumb_size`` px a side.

    Raises ``ImageError`` naming ``row`` if the image cannot be read. Results are cached.
    """
    cell, size = image, thumb_size
    key = _cache_key(cell, size)
    if key is not None:
        with _cache_lock:
            hit = _cache.get(key)
        if hit is not None:
            return hit
    im = decode_image(cell, max_side=size, row=row)
    buf = io.BytesIO()
    with pil_errors(row, source_label(cell)):
        if im.mode in ("RGBA", "LA"):
            im.save(buf, "PNG")
        else:
            im.save(buf, "JPEG", quality=THUMBNAIL_QUALITY)
    data = buf.getvalue()
    if key is not None:
        with _cache_lock, contextlib.suppress(ValueError):  # ValueError: larger than the cache
            _cache[key] = data
    return data


@dataclass
class _Tile:
    label: Hashable
    caption: list[str]
    title: str
    thumb: bytes | None = None
    error: str | None = None


@dataclass
class ImageGrid:
    """An inline HTML grid of thumbnails; Jupyter renders it through ``_repr_html_``."""

    tiles: list[_Tile]
    total: int
    size: int = 160
    _html: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        bad = sum(t.error is not None for t in self.tiles)
        errs = f", {bad} unreadable" if bad else ""
        return f"ImageGrid(showing {len(self.tiles)} of {self.total} images{errs})"

    def _repr_html_(self) -> str:
        if self._html is None:
            self._html = self._render()
        return self._html

    def _render(self) -> str:
        s = self.size
        parts = [
            f'<div class="visionkit-grid" style="display:grid;gap:8px;'
            f"grid-template-columns:repeat(auto-fill,minmax({s}px,1fr));"
            f'font-family:sans-serif;font-size:11px">'
        ]
        for t in self.tiles:
            title = html.escape(t.title, quote=True)
            if t.thumb is not None:
                mime = "image/png" if t.thumb[:4] == b"\x89PNG" else "image/jpeg"
                b64 = base64.b64encode(t.thumb).decode("ascii")
                body = (
                    f'<img src="data:{mime};base64,{b64}" alt="{title}" title="{title}" '
                    f'style="max-width:100%;max-height:{s}px;object-fit:contain;'
                    f'display:block;margin:auto">'
                )
            else:
                reason = html.escape(t.error or "unreadable")
                body = (
                    f'<div title="{title}" style="height:{s}px;display:flex;align-items:center;'
                    f"justify-content:center;text-align:center;background:#f3f3f3;color:#a33;"
                    f'border:1px dashed #c99;padding:6px;box-sizing:border-box">'
                    f"&#9888; {reason}</div>"
                )
            caption = "<br>".join(html.escape(c) for c in t.caption)
            parts.append(
                f'<figure style="margin:0;min-width:0">{body}'
                f'<figcaption style="margin-top:3px;overflow-wrap:anywhere;color:#444">'
                f"{caption}</figcaption></figure>"
            )
        parts.append("</div>")
        if self.total > len(self.tiles):
            parts.append(
                f'<p style="font-size:12px;color:#666">showing {len(self.tiles)} of '
                f"{self.total} images (pass n= to see more)</p>"
            )
        return "".join(parts)


def _default_caption(label: Hashable, cell: Any) -> str:
    path = path_of(cell)
    if path:
        name = path.rstrip("/").rsplit("/", 1)[-1]
        return f"{label}: {name}"
    return str(label)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def show_images(
    images: pd.Series,
    *,
    n: int | None = None,
    captions: pd.DataFrame | None = None,
    thumb_size: int = 160,
) -> ImageGrid:
    """Build an ``ImageGrid`` of the first ``n`` images (default 36) of ``images``.

    ``captions``: a DataFrame (same index) whose columns label each tile, one line each.
    Unreadable images become labelled placeholder tiles, never an exception.
    """
    n = DEFAULT_N if n is None else max(0, int(n))
    size = thumb_size
    head = images.iloc[:n]
    tiles = []
    for label, cell in head.items():
        if captions is not None and len(captions.columns):
            values = captions.loc[label]
            if isinstance(values, pd.DataFrame):  # duplicate index labels
                values = values.iloc[0]
            lines = [
                _fmt(values[c]) if len(captions.columns) == 1 else f"{c}: {_fmt(values[c])}"
                for c in captions.columns
            ]
        else:
            lines = [_default_caption(label, cell)]
        title = path_of(cell) or str(label)
        tiles.append(_Tile(label=label, caption=lines, title=title))

    def render(i: int) -> None:
        tile = tiles[i]
        try:
            tile.thumb = thumbnail(head.iloc[i], thumb_size=size, row=tile.label)
        except ImageError as exc:
            tile.error = exc.reason

    with tables_call():  # table references' files are closed when the grid is drawn
        if len(tiles) > 1:
            with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
                list(pool.map(render, range(len(tiles))))
        else:
            for i in range(len(tiles)):
                render(i)
    return ImageGrid(tiles=tiles, total=len(images), size=size)


def caption_frame(df: pd.DataFrame, caption: str | Sequence[str] | None) -> pd.DataFrame | None:
    """The caption columns of ``df`` named by ``caption`` (a column or a list of columns)."""
    if caption is None:
        return None
    cols = [caption] if isinstance(caption, str) else list(caption)
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise KeyError(f"caption columns {missing} not in the DataFrame; columns: {list(df)}")
    return df[cols]


def _held_thumbnails() -> tuple[int, str]:
    with _cache_lock:
        return len(
            _cache
        ), f"{len(_cache)} thumbnails ({_cache.currsize:,} of {_cache.maxsize:,} bytes)"


register("thumbnails", __name__, _held_thumbnails, clear_thumbnail_cache)
