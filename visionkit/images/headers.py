"""One header row for one image cell that is not read over the network in pieces.

``cell_row`` is ``inspect_images``' row for a path, bytes, a PIL image, a data URI or a table
value; remote objects have their own reader (``remote_headers``: ranged reads). Pixels are
never decoded; any failure becomes the row's ``error``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ImageError
from .cells import cell_kind, local_path, open_regular, path_of, read_bytes
from .decode import is_lazy, open_bytes, open_header
from .formats import sniff_format
from .pil_errors import pil_errors
from .rows import empty_row, header_info

__all__ = ["bytes_row", "cell_row", "cell_rows", "file_row"]


def file_row(path: str) -> dict[str, Any]:
    """One row of ``read_images`` for a local file; errors become the ``error`` column."""
    row = empty_row(path)
    with contextlib.suppress(OSError):
        row["bytes"] = os.stat(local_path(path)).st_size
    try:
        # pil_errors also around header_info: reading EXIF may make Pillow warn
        with pil_errors(source=path), open_header(path) as im:
            row.update(header_info(im))
    except ImageError as exc:
        row["error"] = exc.reason
        if row["bytes"]:
            row["format"] = _sniff_file(local_path(path))
    return row


def _sniff_file(path: str) -> str | None:
    try:
        with open_regular(path) as fh:
            return sniff_format(fh.read(32))
    except (OSError, ImageError):
        return None


def bytes_row(path: str | None, data: bytes) -> dict[str, Any]:
    """One row for an image's encoded ``data``, under the name ``path``."""
    row = empty_row(path)
    row["bytes"] = len(data)
    row["format"] = sniff_format(data[:32])
    try:
        with pil_errors(None, path), open_bytes(data, source=path, check=False) as im:
            row.update(header_info(im))
    except ImageError as exc:
        row["error"] = exc.reason
    return row


def cell_row(cell: Any) -> dict[str, Any]:
    """One row of ``inspect_images`` for any image cell."""
    kind = cell_kind(cell)
    if kind == "path":
        return file_row(os.fspath(cell))
    row = empty_row(path_of(cell))
    try:
        if kind == "pil":
            with pil_errors():
                row.update(header_info(cell))
            if not is_lazy(cell):
                row["error"] = None  # already in memory: nothing more to allocate
            return row
        data = read_bytes(cell)
    except ImageError as exc:
        row["error"] = exc.reason
        return row
    return bytes_row(row["path"], data)


def cell_rows(
    cells: Sequence[Any],
    *,
    sizes: Mapping[str, int | None] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    concurrency: int | None = None,
) -> list[dict[str, Any]]:
    """Rows for ``cells``: remote ones (fsspec and http(s) URLs) from their leading bytes,
    concurrently (``remote_headers``); the rest here, one after the other. ``sizes``: object
    sizes already known from a listing (no request needed for them)."""
    from .remote_headers import remote_header_rows
    from .table_refs import tables_call

    remote = [i for i, c in enumerate(cells) if cell_kind(c) in ("url", "remote")]
    rows: list[Any] = [None] * len(cells)
    if remote:
        urls = [cells[i] for i in remote]
        found = remote_header_rows(
            urls,
            sizes=[(sizes or {}).get(u) for u in urls],
            storage_options=storage_options,
            concurrency=concurrency,
        )
        for i, row in zip(remote, found, strict=True):
            rows[i] = row
    with tables_call():  # references among the cells: their files are closed at the end
        for i, cell in enumerate(cells):
            if rows[i] is None:
                rows[i] = cell_row(cell)
    return rows
