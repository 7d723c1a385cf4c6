"""Read remote image cells ahead of the code that decodes them, a few at a time.

``encode`` decodes on one thread per core; an image in a bucket or behind a URL would make
that thread wait for the network with its core idle. ``prefetched(cells)`` returns a list-like
view whose item ``i`` is the cell's bytes, read by a small I/O pool while earlier images are
being decoded, at most ``window`` items ahead of the first one not yet taken (so memory stays
bounded). Local cells (paths, bytes, PIL images) are returned as they are. A failed read is
the ``ImageError`` it raised, re-raised when that item is taken: the row's error, as before.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

__all__ = ["close", "prefetched"]

_REMOTE_KINDS = frozenset({"url", "remote", "ref"})


class _Prefetched:
    def __init__(
        self, cells: Sequence[Any], rows: Sequence[Any] | None, window: int, threads: int
    ) -> None:
        self._cells = cells
        self._rows = rows
        self._window = window
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="visionkit-io")
        self._futures: dict[int, Future[bytes]] = {}
        self._next = 0  # the next index to submit
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._cells)

    def _submit_until(self, stop: int) -> None:
        from .cells import cell_kind, read_bytes

        with self._lock:
            while self._next < min(stop, len(self._cells)):
                i = self._next
                if cell_kind(self._cells[i]) in _REMOTE_KINDS:
                    row = self._rows[i] if self._rows is not None else None
                    self._futures[i] = self._pool.submit(read_bytes, self._cells[i], row=row)
                self._next += 1

    def __getitem__(self, i: int) -> Any:
        self._submit_until(i + 1 + self._window)
        with self._lock:
            future = self._futures.pop(i, None)
        if future is None:
            return self._cells[i]
        return future.result()  # the bytes, or the read's ImageError

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def prefetched(
    cells: Sequence[Any],
    *,
    rows: Sequence[Any] | None = None,
    window: int = 8,
    threads: int = 8,
) -> Any:
    """``cells`` with remote ones read ahead (see the module docs); call ``close(view)`` after.

    Returns ``cells`` itself when none is remote. ``rows``: the row labels errors name.
    """
    from .cells import cell_kind

    if not any(cell_kind(c) in _REMOTE_KINDS for c in cells):
        return cells
    return _Prefetched(cells, rows, window, threads)


def close(view: Any) -> None:
    """Stop reading ahead (what ``prefetched`` returned; a plain list is left alone)."""
    if isinstance(view, _Prefetched):
        view.close()
