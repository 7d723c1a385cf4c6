"""Turn any image cell into bytes or a PIL image, safely.

An image cell may be a path (``str`` or ``Path``), raw ``bytes``, a ``PIL.Image.Image``, a
``data:`` URI (base64) or an ``http(s)://`` URL. Every failure raises ``visionkit.ImageError``
naming the row and a human reason ("file not found", "truncated JPEG", "decompression bomb:
...", "download failed: HTTP 404", ...). Pillow's own exceptions are translated in one place,
``pil_errors``.

Decompression bombs: an image whose header claims more than ``PIL.Image.MAX_IMAGE_PIXELS``
pixels (89 MP by default) is an error for its row, never a huge allocation. Raise that Pillow
setting if you trust your files (a 108 MP phone photo is over it).

Usage::

    from visionkit.sources import open_image, read_bytes
    im = open_image("photo.jpg")           # lazy: header read, pixels not decoded
    data = read_bytes("https://example.org/cat.png")
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import math
import os
import re
import struct
import threading
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageFile, UnidentifiedImageError

from .errors import ImageError

__all__ = [
    "DOWNLOAD_MAX_BYTES",
    "DOWNLOAD_TIMEOUT",
    "ImageCell",
    "decode_data_uri",
    "open_image",
    "pil_errors",
    "read_bytes",
    "sniff_format",
]

ImageCell = str | os.PathLike | bytes | bytearray | memoryview | Image.Image

DOWNLOAD_TIMEOUT = 30.0  # seconds, per connect / per read
DOWNLOAD_MAX_BYTES = 50 * 1024 * 1024  # a bigger response is cut off, never held in memory

MIME_TYPES = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "bmp": "image/bmp",
    "tiff": "image/tiff",
    "ico": "image/x-icon",
    "avif": "image/avif",
    "heic": "image/heic",
}
_MIME_TO_FORMAT = {v: k for k, v in MIME_TYPES.items()} | {"image/jpg": "jpeg"}
# Pillow's format names that mean the same file type to everyone else.
_FORMAT_ALIASES = {"mpo": "jpeg", "jpeg2000": "jp2"}

# Catch-warnings is process-global in Python < 3.14; serialise the few lines that use it.
_WARNINGS_LOCK = threading.Lock()


# --------------------------------------------------------------------------------------------
# sniffing


def sniff_format(head: bytes) -> str | None:
    """The image format named by ``head``'s magic bytes ("png", "jpeg", ...), or None.

    Only looks at the first 32 bytes; says nothing about whether the rest is intact.
    """
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:2] == b"BM" and len(head) >= 14:
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:4] == b"\x00\x00\x01\x00":
        return "ico"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "avif"
        if brand in (b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1"):
            return "heic"
    if head.startswith(b"\x00\x00\x00\x0cjP  ") or head.startswith(b"\xff\x4f\xff\x51"):
        return "jp2"
    return None


def _describe_non_image(head: bytes) -> str:
    """Why ``head`` is not an image Pillow can read, in words."""
    if not head:
        return "empty file (0 bytes)"
    fmt = sniff_format(head)
    if fmt in ("avif", "heic", "jp2"):
        return f"unsupported image format {fmt!r} (this Pillow cannot decode it)"
    if fmt is not None:
        return f"corrupt {fmt.upper()} (header not readable)"
    if head.startswith(b"%PDF"):
        return "not an image (looks like a PDF)"
    if head[:4] == b"PK\x03\x04":
        return "not an image (looks like a ZIP archive)"
    stripped = head.lstrip().lower()
    if stripped.startswith((b"<!doctype html", b"<html")):
        return "not an image (looks like HTML)"
    if stripped.startswith(b"<?xml") or stripped.startswith(b"<svg"):
        return "not an image (looks like XML/SVG, which is not supported)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c.isspace() for c in text[:200]):
        return "not an image (looks like text)"
    return f"not an image (unrecognised content starting {head[:8]!r})"


# --------------------------------------------------------------------------------------------
# error mapping


@dataclass
class _ErrorContext:
    """What ``pil_errors`` knows about the image being read (filled in as it is learnt)."""

    row: object = None
    source: object = None
    format: str | None = None
    head: bytes | None = None


def _mp(pixels: float) -> str:
    return f"{pixels / 1e6:.0f} MP" if pixels >= 1e7 else f"{pixels / 1e6:.1f} MP"


def _bomb_message(size: tuple[int, int] | None = None, pixels: int | None = None) -> str:
    limit = Image.MAX_IMAGE_PIXELS
    if size is not None:
        pixels = size[0] * size[1]
        what = f"{size[0]}x{size[1]} = {_mp(pixels)}"
    else:
        what = _mp(pixels or 0)
    return (
        f"decompression bomb: {what} exceeds the {_mp(limit or 0)} limit "
        "(PIL.Image.MAX_IMAGE_PIXELS)"
    )


@contextlib.contextmanager
def pil_errors(row: object = None, source: object = None) -> Iterator[_ErrorContext]:
    """Translate Pillow's and the OS's exceptions into ``ImageError(row=, source=)``.

    The one place that knows Pillow's exception zoo. Callers may set ``ctx.format`` and
    ``ctx.head`` on the yielded context so messages can say "truncated JPEG".
    """
    ctx = _ErrorContext(row=row, source=source)

    def fail(reason: str, exc: BaseException) -> ImageError:
        return ImageError(reason, row=ctx.row, source=ctx.source)

    try:
        yield ctx
    except ImageError as exc:
        if exc.row is None and ctx.row is not None:
            raise ImageError(exc.reason, row=ctx.row, source=ctx.source) from exc
        raise
    except FileNotFoundError as exc:
        raise fail("file not found", exc) from exc
    except IsADirectoryError as exc:
        raise fail("is a directory, not an image file", exc) from exc
    except PermissionError as exc:
        raise fail("permission denied", exc) from exc
    except Image.DecompressionBombError as exc:
        m = re.search(r"\((\d+) pixels\)", str(exc))
        raise fail(_bomb_message(pixels=int(m.group(1)) if m else None), exc) from exc
    except Image.DecompressionBombWarning as exc:  # raised because we turn it into an error
        m = re.search(r"\((\d+) pixels\)", str(exc))
        raise fail(_bomb_message(pixels=int(m.group(1)) if m else None), exc) from exc
    except UnidentifiedImageError as exc:
        raise fail(_describe_non_image(ctx.head or b""), exc) from exc
    except MemoryError as exc:
        raise fail("too large to decode (out of memory)", exc) from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError) as exc:
        fmt = (ctx.format or "image").upper()
        text = str(exc)
        if "truncated" in text.lower() or isinstance(exc, EOFError):
            reason = f"truncated {fmt}"
        elif "broken data stream" in text or "decoder error" in text.lower():
            reason = f"corrupt {fmt} data ({text})"
        else:
            reason = f"cannot read {fmt}: {type(exc).__name__}: {text}"
        raise fail(reason, exc) from exc


# --------------------------------------------------------------------------------------------
# data: URIs and URLs


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


def _download(url: str, *, timeout: float, max_bytes: int) -> bytes:
    """GET ``url``, streamed, refusing anything over ``max_bytes`` (checked as it arrives)."""
    request = urllib.request.Request(url, headers={"User-Agent": "visionkit"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise ImageError(f"download over {_size_text(max_bytes)} cap ({length} bytes)")
            chunks, total = [], 0
            while True:
                chunk = response.read(min(1 << 16, max_bytes + 1 - total))
                if not chunk:
                    break
                total += len(chunk)
                if total > max_bytes:
                    raise ImageError(f"download over {_size_text(max_bytes)} cap")
                chunks.append(chunk)
    except urllib.error.HTTPError as exc:
        raise ImageError(f"download failed: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            raise ImageError(f"download failed: timed out after {timeout:g} s") from exc
        raise ImageError(f"download failed: {reason}") from exc
    except TimeoutError as exc:
        raise ImageError(f"download failed: timed out after {timeout:g} s") from exc
    except (OSError, ValueError) as exc:
        raise ImageError(f"download failed: {type(exc).__name__}: {exc}") from exc
    return b"".join(chunks)


def _size_text(n: int) -> str:
    if n >= 1024 * 1024 and n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)} MB"
    return f"{n:,} bytes"


# --------------------------------------------------------------------------------------------
# cells


def _is_missing(cell: Any) -> bool:
    if cell is None:
        return True
    if isinstance(cell, float) and math.isnan(cell):
        return True
    try:
        import pandas as pd

        return cell is pd.NA or cell is pd.NaT
    except ImportError:  # pragma: no cover
        return False


def cell_kind(cell: Any) -> str:
    """One of "missing", "pil", "bytes", "data", "url", "path" (or "unknown")."""
    if _is_missing(cell):
        return "missing"
    if isinstance(cell, Image.Image):
        return "pil"
    if isinstance(cell, (bytes, bytearray, memoryview)):
        return "bytes"
    if isinstance(cell, os.PathLike):
        return "path"
    if isinstance(cell, str):
        low = cell[:8].lower()
        if low.startswith("data:"):
            return "data"
        if low.startswith(("http://", "https://")):
            return "url"
        return "path"
    return "unknown"


def _local_path(cell: str | os.PathLike) -> str:
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
) -> bytes:
    """The encoded bytes of an image cell (file contents, decoded data URI, download, ...).

    A PIL image is saved losslessly as PNG. Empty content is an error ("empty file (0 bytes)").
    URLs are fetched with ``timeout`` seconds (default ``DOWNLOAD_TIMEOUT``) and refused past
    ``max_bytes`` (default ``DOWNLOAD_MAX_BYTES``, 50 MB).
    """
    source = _source_label(cell)
    try:
        data = _read_raw(cell, row=row, timeout=timeout, max_bytes=max_bytes)
    except ImageError as exc:
        if exc.row is None or exc.source is None:
            raise ImageError(exc.reason, row=row, source=source) from exc
        raise
    if not data:
        raise ImageError("empty file (0 bytes)", row=row, source=source)
    return data


def _read_raw(cell: Any, *, row: object, timeout: float | None, max_bytes: int | None) -> bytes:
    kind = cell_kind(cell)
    if kind == "missing":
        raise ImageError("no image (missing value)")
    if kind == "pil":
        buf = io.BytesIO()
        with pil_errors(row, _source_label(cell)):
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
        return _download(
            cell,
            timeout=DOWNLOAD_TIMEOUT if timeout is None else timeout,
            max_bytes=DOWNLOAD_MAX_BYTES if max_bytes is None else max_bytes,
        )
    if kind == "path":
        with pil_errors(row, _source_label(cell)):
            path = _local_path(cell)
            if os.path.isdir(path):
                raise IsADirectoryError(path)
            with open(path, "rb") as fh:
                return fh.read()
    raise ImageError(
        f"unsupported image cell of type {type(cell).__name__} "
        "(expected a path, bytes, a PIL image, a data: URI or an http(s) URL)"
    )


def _source_label(cell: Any) -> object:
    """A short, printable description of where a cell came from (never a whole data URI)."""
    kind = cell_kind(cell)
    if kind == "path":
        return os.fspath(cell)
    if kind == "url":
        return cell
    if kind == "data":
        return cell[:40] + "..." if len(cell) > 40 else cell
    if kind == "bytes":
        return f"<{len(cell)} bytes>"
    if kind == "pil":
        return f"<PIL {cell.mode} {cell.size[0]}x{cell.size[1]}>"
    return None


def open_bytes(data: bytes, *, row: object = None, source: object = None) -> Image.Image:
    """Lazily open encoded ``data`` (header parsed, pixels not decoded), bomb-checked."""
    if not data:
        raise ImageError("empty file (0 bytes)", row=row, source=source)
    with pil_errors(row, source) as ctx:
        ctx.head = data[:64]
        ctx.format = sniff_format(ctx.head)
        im = _open_checked(io.BytesIO(data))
    return im


def _open_checked(fp: Any) -> ImageFile.ImageFile:
    """``Image.open`` with Pillow's bomb warning turned into an error, plus our own check."""
    try:
        with _WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(fp)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        size = _unchecked_size(fp)
        if size is None:
            raise
        raise ImageError(_bomb_message(size=size)) from exc
    check_bomb(im.size)
    return im


def _unchecked_size(fp: Any) -> tuple[int, int] | None:
    """The size a header claims, read by the format plugin alone (Pillow's bomb check skipped).

    Only used to word the error for a decompression bomb: plugins parse headers, they never
    allocate pixels, so this is safe.
    """
    fp.seek(0)
    fmt = sniff_format(fp.read(32))
    plugin = {"jpeg": "JPEG", "png": "PNG", "gif": "GIF", "bmp": "BMP", "tiff": "TIFF"}.get(
        fmt or ""
    )
    if plugin is None or plugin not in Image.OPEN:
        return None
    try:
        fp.seek(0)
        im = Image.OPEN[plugin][0](fp, "")
        return im.size
    except Exception:
        return None


def check_bomb(size: tuple[int, int], *, row: object = None, source: object = None) -> None:
    """Raise ``ImageError`` when ``size`` is over ``PIL.Image.MAX_IMAGE_PIXELS``."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and size[0] * size[1] > limit:
        raise ImageError(_bomb_message(size=size), row=row, source=source)


def open_image(cell: Any, *, row: object = None) -> Image.Image:
    """A lazily opened PIL image for any image cell: the header is read, pixels are not.

    A PIL image cell is returned as is. Paths are opened from disk (the file stays open until
    the image is loaded or closed: use it as a context manager in loops). Raises ``ImageError``
    naming ``row`` and the reason.
    """
    kind = cell_kind(cell)
    if kind == "pil":
        return cell
    if kind != "path":
        return open_bytes(read_bytes(cell, row=row), row=row, source=_source_label(cell))
    source = _source_label(cell)
    with pil_errors(row, source) as ctx:
        path = _local_path(cell)
        if os.path.isdir(path):
            raise IsADirectoryError(path)
        fh = open(path, "rb")  # noqa: SIM115 - handed to the lazy image, which closes it
        try:
            ctx.head = fh.read(64)
            if not ctx.head:
                raise ImageError("empty file (0 bytes)", row=row, source=source)
            ctx.format = sniff_format(ctx.head)
            im = _open_checked(fh)
        except BaseException:
            fh.close()
            raise
    # Image.open was given a file object: make the image own (and close) it.
    im._exclusive_fp = True
    return im


def image_format(im: Image.Image) -> str | None:
    """The lower-case, conventional format name of an opened image ("jpeg" for MPO)."""
    fmt = (im.format or "").lower() or None
    return _FORMAT_ALIASES.get(fmt, fmt) if fmt else None


def format_from_mime(mime: str) -> str | None:
    return _MIME_TO_FORMAT.get(mime.lower())


def path_of(cell: Any) -> str | None:
    """The path or URL a cell names, or None for in-memory cells."""
    kind = cell_kind(cell)
    if kind == "path":
        return str(Path(os.fspath(cell)))
    if kind == "url":
        return cell
    return None
