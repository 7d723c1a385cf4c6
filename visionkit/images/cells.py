"""Image cells: what a DataFrame cell holding an image may be, and its bytes.

An image cell is a path (``str`` or ``Path``), raw ``bytes``, a ``PIL.Image.Image``, a
``data:`` URI (base64), an ``http(s)://`` URL or an fsspec URL (``s3://``, ``gs://``, ``hf://``...,
see ``visionkit.images.remote``). ``read_bytes`` turns any of them into the
encoded file's bytes; failures raise ``visionkit.ImageError`` naming the row and the reason.
``image_column`` is the one rule for which DataFrame column holds the images.

Usage:

    from visionkit.images.cells import read_bytes
    data = read_bytes("https://example.org/cat.png", row=3)
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import stat
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image

from ..errors import ImageError
from ..types import is_missing
from .download import DOWNLOAD_TIMEOUT, download, max_image_bytes, over_cap
from .pil_errors import pil_errors
from .remote import REMOTE_TIMEOUT, is_remote_url, read_object
from .table_refs import is_table_ref, ref_value, table_path

__all__ = [
    "IMAGE_COLUMNS",
    "cell_kind",
    "decode_data_uri",
    "find_image_column",
    "local_path",
    "open_regular",
    "path_of",
    "read_bytes",
    "source_label",
    "table_value_bytes",
]


def decode_data_uri(uri: str) -> tuple[str, bytes]:
    """``(mimetype, payload)`` of a ``data:`` URI (base64 or percent-encoded).

    >>> decode_data_uri("data:image/png;base64,iVBORw0KGgo=")
    ('image/png', b'\\x89PNG\\r\\n\\x1a\\n')
    """
    if not isinstance(uri, str) or not uri[:5].lower() == "data:":
        raise ImageError("not a data: URI")
    header, sep, payload = uri[5:].partition(",")
    if not sep:
        raise ImageError("malformed data: URI (no comma)")
    params = header.split(";")
    mime = params[0].strip().lower() or "text/plain"
    if "base64" in (p.strip().lower() for p in params[1:]):
        try:
            data = base64.b64decode(payload.strip(), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ImageError(f"malformed data: URI (bad base64: {exc})") from exc
    else:
        data = urllib.parse.unquote_to_bytes(payload)
    return mime, data


def cell_kind(cell: Any) -> str:
    """One of "missing", "pil", "bytes", "data", "url" (http/https), "remote" (an fsspec URL:
    s3://, gs://, ...), "ref" (a row of a table: ``x.parquet#image[3]``), "struct" (a
    ``{bytes, path}`` dict, as Parquet image columns read into pandas), "path" (or "unknown")."""
    if isinstance(cell, str):  # the common case first: a path or URL
        if is_table_ref(cell):
            return "ref"
        low = cell[:8].lower()
        if low.startswith("data:"):
            return "data"
        if low.startswith(("http://", "https://")):
            return "url"
        if is_remote_url(cell):
            return "remote"
        return "path"
    if is_missing(cell):
        return "missing"
    if isinstance(cell, Image.Image):
        return "pil"
    if isinstance(cell, (bytes, bytearray, memoryview)):
        return "bytes"
    if isinstance(cell, os.PathLike):
        return "path"
    if isinstance(cell, dict) and ("bytes" in cell or "path" in cell):
        return "struct"
    return "unknown"


def local_path(cell: str | os.PathLike) -> str:
    text = os.fspath(cell)
    if isinstance(text, bytes):  # pragma: no cover - bytes paths are rare
        text = os.fsdecode(text)
    if text[:7].lower() == "file://":
        text = urllib.request.url2pathname(urllib.parse.urlparse(text).path)
    return os.path.expanduser(text)


def read_bytes(
    cell: Any,
    *,
    row: object = None,
    timeout: float | None = None,
    max_bytes: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> bytes:
    """The encoded bytes of an image cell (file contents, decoded data URI, download, ...).

    A PIL image is saved losslessly as PNG. Empty content is an error ("empty file (0 bytes)").
    URLs are fetched with ``timeout`` seconds (default ``DOWNLOAD_TIMEOUT``); URLs, bucket
    objects and local files alike are refused past ``max_bytes`` (default
    ``max_image_bytes()``: 50 MB, or ``VISIONKIT_MAX_IMAGE_BYTES``), and
    only regular files are read (``open_regular``: never a FIFO or a device).
    ``storage_options`` are for an fsspec URL (default: those remembered for its prefix, see
    ``visionkit.images.remote``).
    """
    try:
        data = _read_raw(
            cell, row=row, timeout=timeout, max_bytes=max_bytes, storage_options=storage_options
        )
    except ImageError as exc:
        if exc.row is None or exc.source is None:
            raise ImageError(exc.reason, row=row, source=source_label(cell)) from exc
        raise
    if not data:
        raise ImageError("empty file (0 bytes)", row=row, source=source_label(cell))
    return data


def _read_raw(
    cell: Any,
    *,
    row: object,
    timeout: float | None,
    max_bytes: int | None,
    storage_options: Mapping[str, Any] | None = None,
) -> bytes:
    kind = cell_kind(cell)
    if kind == "missing":
        raise ImageError("no image (missing value)")
    if kind == "pil":
        buf = io.BytesIO()
        with pil_errors(row, source_label(cell)):
            cell.save(buf, "PNG")
        return buf.getvalue()
    if kind == "bytes":
        return bytes(cell)
    if kind == "data":
        mime, data = decode_data_uri(cell)
        if not mime.startswith("image/") and mime != "application/octet-stream":
            raise ImageError(f"data: URI is {mime!r}, not an image")
        return data
    if kind == "url":
        return download(
            cell,
            timeout=DOWNLOAD_TIMEOUT if timeout is None else timeout,
            max_bytes=max_image_bytes() if max_bytes is None else max_bytes,
        )
    if kind == "ref":
        value, table = ref_value(cell)
        return table_value_bytes(value, table, row=row, timeout=timeout, max_bytes=max_bytes)
    if kind == "struct":  # a {bytes, path} cell of the user's frame: its path as it is
        return table_value_bytes(cell, None, row=row, timeout=timeout, max_bytes=max_bytes)
    if kind == "remote":
        return read_object(
            cell,
            timeout=REMOTE_TIMEOUT if timeout is None else timeout,
            max_bytes=max_image_bytes() if max_bytes is None else max_bytes,
            storage_options=storage_options,
        )
    if kind == "path":
        cap = max_image_bytes() if max_bytes is None else max_bytes
        with pil_errors(row, os.fspath(cell)):
            fd, size = _regular_fd(local_path(cell), cap)
            try:  # os.read: no file object for a read in one go (a per-row cost at scale)
                data = os.read(fd, size + 1)  # not cap + 1: that allocates the whole cap
                # all of it (a regular file reads short only at its end): done; else a short
                # read, or the file grew since: read on
                while len(data) != size and len(data) <= cap:
                    want = size + 1 - len(data) if len(data) < size else 1 << 20
                    more = os.read(fd, min(want, cap + 1 - len(data)))
                    if not more:
                        break
                    data += more
            finally:
                os.close(fd)
        if len(data) > cap:
            raise ImageError(over_cap("file", cap))
        return data
    raise ImageError(
        f"unsupported image cell of type {type(cell).__name__} "
        "(expected a path, bytes, a PIL image, a data: URI, an http(s) URL or an s3://-style URL)"
    )


def open_regular(path: str, max_bytes: int | None = None) -> BinaryIO:
    """``open(path, "rb")`` for a regular file only, and only up to ``max_bytes`` (if given).

    A FIFO, a device (``/dev/zero``, ``/dev/stdin``), a socket or a folder is refused with
    ``ImageError`` without reading it: opened non-blocking (a FIFO without a writer would
    block ``open`` for ever), then checked on the open descriptor, so a path swapped for
    something else in between is still caught. A file over ``max_bytes`` is refused too.
    """
    fd, _size = _regular_fd(path, max_bytes)
    try:
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _regular_fd(path: str, max_bytes: int | None) -> tuple[int, int]:
    """``open_regular``'s checks, giving the open descriptor and the size."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ImageError("is a directory, not an image file")
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(f"not a regular file ({_file_kind(st.st_mode)}); only files are read")
        if max_bytes is not None and st.st_size > max_bytes:
            raise ImageError(over_cap("file", max_bytes, st.st_size))
        # O_NONBLOCK is left set: it changes nothing for a regular file's reads, and clearing
        # it cost two more system calls a file (each hands the GIL over)
        return fd, st.st_size
    except BaseException:
        os.close(fd)
        raise


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a file"


def table_value_bytes(
    value: Any,
    table: str | None,
    *,
    confine: bool = True,
    row: object = None,
    timeout: float | None = None,
    max_bytes: int | None = None,
) -> bytes:
    """The image bytes of a value from a table's image column: a ``{bytes, path}`` struct's
    bytes, else the file its path names; raw bytes; or a string (a path or URL).

    Paths are resolved against the table's folder (``table``: the Parquet file's path or URL)
    and, with ``confine``, must stay inside it (see ``table_refs.table_path``).
    """
    if is_missing(value):
        raise ImageError("no image (missing value)")
    if isinstance(value, Mapping):
        data = value.get("bytes")
        if data:
            return bytes(data)
        value = value.get("path")
        if not value:
            raise ImageError("no image (a struct with neither bytes nor path)")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        where = table_path(value, table, confine=confine)
        return read_bytes(where, row=row, timeout=timeout, max_bytes=max_bytes)
    raise ImageError(f"a table value of type {type(value).__name__} is not an image")


def source_label(cell: Any) -> object:
    """A short, printable description of where a cell came from (never a whole data URI)."""
    kind = cell_kind(cell)
    if kind == "path":
        return os.fspath(cell)
    if kind in ("url", "remote", "ref"):
        return cell
    if kind == "struct":
        return cell.get("path") or f"<{len(cell.get('bytes') or b'')} bytes>"
    if kind == "data":
        return cell[:40] + "..." if len(cell) > 40 else cell
    if kind == "bytes":
        return f"<{len(cell)} bytes>"
    if kind == "pil":
        return f"<PIL {cell.mode} {cell.size[0]}x{cell.size[1]}>"
    return None


def path_of(cell: Any) -> str | None:
    """The path or URL a cell names, or None for in-memory cells."""
    kind = cell_kind(cell)
    if kind == "path":
        return str(Path(os.fspath(cell)))
    if kind in ("url", "remote", "ref"):
        return cell
    if kind == "struct" and isinstance(cell.get("path"), str):
        return cell["path"]
    return None


IMAGE_COLUMNS = ("image", "path")


def find_image_column(df: Any, column: str | None = None, *, who: str = "df.vision") -> str:
    """The DataFrame column holding images: ``column`` if given (it must exist), else
    ``image`` if present, else ``path``. The one place that rule lives; raises KeyError."""
    if column is not None:
        if column not in df.columns:
            raise KeyError(f"{who}: no column {column!r}; columns are {list(df.columns)}")
        return column
    for name in IMAGE_COLUMNS:
        if name in df.columns:
            return name
    raise KeyError(
        f"{who} needs an image column: 'image' or 'path' (or pass image_column=...); "
        f"this DataFrame has {list(df.columns)}"
    )
