"""Header-only rows for remote images: ranged reads of each object's leading bytes, concurrently.

``read_images`` on a bucket or a list of URLs must not download the images. For each object
this reads the first ``HEAD_BYTES`` (16 KiB) and lets Pillow parse the header from them; when
Pillow asks for bytes past what has been read (a JPEG behind a 60 KB EXIF block, a PNG with a
big ICC profile) exactly that much more is fetched (plus ``HEAD_BYTES``, or double what was
read, whichever is more), and parsing starts again. Most images take one request. Counting an
animated GIF's frames walks the whole file, so a GIF is read whole (in growing pieces).

For a partition of a big listing (Dask, issue 12): ``remote.list_images`` once, then
``header_frame(urls, sizes=...)`` per partition.

Objects are read by a thread pool (``concurrency``, default ``CONCURRENCY``): s3fs, gcsfs and
adlfs run their requests on fsspec's event loop, http(s) on visionkit's download loop, so the
threads only wait; Pillow parses a header in well under a millisecond.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import ImageError
from .decode import open_lazy
from .formats import sniff_format
from .pil_errors import pil_errors
from .rows import empty_row, frame, header_info

__all__ = ["CONCURRENCY", "HEAD_BYTES", "header_frame", "remote_header_rows"]

HEAD_BYTES = 16 * 1024
CONCURRENCY = 32
_MAX_ROUNDS = 24


class _NeedMore(BaseException):
    """Pillow read past the bytes fetched so far (a BaseException so that no ``except
    Exception`` inside Pillow or visionkit mistakes it for a broken file)."""

    def __init__(self, upto: int) -> None:
        self.upto = upto


class PrefixFile(io.RawIOBase):
    """A read-only file over the first bytes of an object of ``size`` bytes (None: unknown).

    Reading past them raises ``_NeedMore`` unless the object is known to end there.
    """

    def __init__(self, data: bytes, size: int | None) -> None:
        self._data = data
        self._size = size
        self._pos = 0

    def _complete(self) -> bool:
        return self._size is not None and len(self._data) >= self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 0:
            self._pos = offset
        elif whence == 1:
            self._pos += offset
        else:
            if self._size is None:
                raise _NeedMore(1 << 62)
            self._pos = self._size + offset
        return self._pos

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            end = self._size if self._size is not None else 1 << 62
        else:
            end = self._pos + n
        if end > len(self._data) and not self._complete():
            raise _NeedMore(end)
        out = self._data[self._pos : end]
        self._pos += len(out)
        return out

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


Fetcher = Callable[[int, int], bytes]  # (start, end) -> bytes; fewer means the object ended


def header_row(
    url: str,
    fetcher: Fetcher,
    size: int | None,
    *,
    sizer: Callable[[], int | None] | None = None,
) -> dict[str, Any]:
    """``read_images``'s row for one remote object, reading as few leading bytes as it can."""
    row = empty_row(url)
    row["bytes"] = size
    data = b""
    try:
        want = HEAD_BYTES if size is None else min(HEAD_BYTES, size)
        data = fetcher(0, want)
        if len(data) < want or (size is not None and len(data) >= size):
            size = len(data)  # the whole object
        elif size is None and sizer is not None:
            size = sizer()
        row["bytes"] = size
        for _ in range(_MAX_ROUNDS):
            try:
                with pil_errors(None, url) as ctx:
                    ctx.head = data[:64]
                    ctx.format = sniff_format(ctx.head)
                    if not data:
                        raise ImageError("empty file (0 bytes)")
                    im = open_lazy(PrefixFile(data, size), check=False)
                    row.update(header_info(im))
                return row
            except _NeedMore as more:
                target = max(more.upto + HEAD_BYTES, 2 * len(data))
                if size is not None:
                    target = min(target, size)
                extra = fetcher(len(data), target)
                if not extra:
                    size = len(data)  # it ends here after all
                data += extra
                if size is not None and len(data) >= size:
                    row["bytes"] = size
        raise ImageError("header too long to read")
    except ImageError as exc:
        row["error"] = exc.reason
        if data:
            row["format"] = sniff_format(data[:32])
    return row


def remote_header_rows(
    cells: Sequence[Any],
    *,
    sizes: Sequence[int | None] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    concurrency: int | None = None,
) -> list[dict[str, Any]]:
    """One header row per remote cell (an fsspec URL or an http(s) URL), read concurrently."""
    from .remote import fetch, filesystem, is_remote_url, object_size

    known = list(sizes) if sizes is not None else [None] * len(cells)

    def one(i: int) -> dict[str, Any]:
        url = cells[i]
        if is_remote_url(url):
            try:
                fs, path = filesystem(url, storage_options)
            except ImportError:
                raise
            except Exception as exc:
                # our own ValueError says which scheme; others are named only (their text
                # could carry options)
                why = str(exc) if isinstance(exc, ValueError) else type(exc).__name__
                return empty_row(url) | {"error": f"cannot open: {why}"}
            return header_row(
                url,
                lambda start, end: fetch(fs, path, start, end),
                known[i],
                sizer=lambda: object_size(fs, path),
            )
        return _http_row(url, known[i])

    workers = max(1, min(concurrency or CONCURRENCY, len(cells)))
    if workers == 1:
        return [one(i) for i in range(len(cells))]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="visionkit-heads") as pool:
        return list(pool.map(one, range(len(cells))))


def _http_row(url: str, size: int | None) -> dict[str, Any]:
    from .download import fetch_range

    seen: dict[str, int | None] = {"size": size}

    def fetcher(start: int, end: int) -> bytes:
        data, total = fetch_range(url, start, end)
        if total is not None:
            seen["size"] = total
        return data

    return header_row(url, fetcher, size, sizer=lambda: seen["size"])


def header_frame(
    urls: Sequence[str],
    *,
    sizes: Sequence[int | None] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    concurrency: int | None = None,
) -> Any:
    """``read_images``' frame for a list of remote URLs, with sizes already known.

    For one partition of a listing (``remote.list_images`` gives ``(url, size)`` pairs): with
    the sizes, no object needs a HEAD request. Takes plain values only, so it runs on any
    worker process (credentials come from ``storage_options`` or the worker's environment).
    """
    rows = remote_header_rows(
        list(urls), sizes=sizes, storage_options=storage_options, concurrency=concurrency
    )
    return frame(rows)
