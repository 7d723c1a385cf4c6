"""Image cells: what a DataFrame cell holding an image may be, and its bytes.

An image cell is a path (``str`` or ``Path``), raw ``bytes``, a ``PIL.Image.Image``, a
``data:`` URI (base64), an ``http(s)://`` URL or an fsspec URL (``s3://``, ``gs://``, ``hf://``...,
see ``visionkit.images.remote``). ``read_bytes`` turns any of them into the
encoded file's bytes; failures raise ``visionkit.ImageError`` naming the row and the reason.
``image_column`` is the one rule for which DataFrame column holds the images.

Usage::

    from visionkit.images.cells import read_bytes
    data = read_bytes("https://example.org/cat.png", row=3)
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import ImageError
from ..types import is_missing
from .download import DOWNLOAD_MAX_BYTES, DOWNLOAD_TIMEOUT, download
from .pil_errors import pil_errors
from .remote import REMOTE_TIMEOUT, is_remote_url, read_object
from .tables import is_table_ref, read_ref, struct_bytes

__all__ = [
    "IMAGE_COLUMNS",
    "cell_kind",
    "decode_data_uri",
    "find_image_column",
    "local_path",
    "path_of",
    "read_bytes",
    "source_label",
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
    if isinstance(cell, str):
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
    URLs are fetched with ``timeout`` seconds (default ``DOWNLOAD_TIMEOUT``) and refused past
    ``max_bytes`` (default ``DOWNLOAD_MAX_BYTES``, 50 MB). ``storage_options`` are for an
    fsspec URL (default: those remembered for its prefix, see ``visionkit.images.remote``).
    """
    source = source_label(cell)
    try:
        data = _read_raw(
            cell, row=row, timeout=timeout, max_bytes=max_bytes, storage_options=storage_options
        )
    except ImageError as exc:
        if exc.row is None or exc.source is None:
            raise ImageError(exc.reason, row=row, source=source) from exc
        raise
    if not data:
        raise ImageError("empty file (0 bytes)", row=row, source=source)
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
            max_bytes=DOWNLOAD_MAX_BYTES if max_bytes is None else max_bytes,
        )
    if kind == "ref":
        return read_ref(cell, row=row)
    if kind == "struct":
        return struct_bytes(cell, row=row)
    if kind == "remote":
        return read_object(
            cell,
            timeout=REMOTE_TIMEOUT if timeout is None else timeout,
            max_bytes=DOWNLOAD_MAX_BYTES if max_bytes is None else max_bytes,
            storage_options=storage_options,
        )
    if kind == "path":
        with pil_errors(row, source_label(cell)):
            path = local_path(cell)
            if os.path.isdir(path):
                raise IsADirectoryError(path)
            with open(path, "rb") as fh:
                return fh.read()
    raise ImageError(
        f"unsupported image cell of type {type(cell).__name__} "
        "(expected a path, bytes, a PIL image, a data: URI, an http(s) URL or an s3://-style URL)"
    )


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
