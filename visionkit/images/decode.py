"""Turn any image cell into bytes or a PIL image, safely.

An image cell may be a path (``str`` or ``Path``), raw ``bytes``, a ``PIL.Image.Image``, a
``data:`` URI (base64) or an ``http(s)://`` URL. Every failure raises ``visionkit.ImageError``
naming the row and a human reason ("file not found", "truncated JPEG", "decompression bomb:
...", "download failed: HTTP 404", ...). Pillow's own exceptions are translated in one place,
``pil_errors``.

Decompression bombs are about *allocation*, not declared size. ``PIL.Image.MAX_IMAGE_PIXELS``
(89 MP by default; raise it or set it to None and visionkit follows) caps the pixels one decode
may allocate:

- Reading a header allocates nothing, so ``open_header`` (and ``read_images``) accept any size.
- A JPEG is decoded in draft mode (libjpeg scales by 1/2, 1/4 or 1/8 while decoding), so a
  108 MP or 200 MP phone photo wanted at 1120 px allocates about 1/64 of its full size: it is
  accepted whenever the size it will actually be decoded at is within the limit, up to a
  declared size of ``MAX_JPEG_PIXELS`` (1 gigapixel; a JPEG header may claim up to 4.3 GP, and
  even at 1/8 such a file would allocate 67 MP and take seconds to entropy-decode).
- PNG, GIF, WebP, TIFF, ... are decoded in full, so over the limit they stay an error for their
  row ("decompression bomb: 20000x20000 = 400 MP exceeds the 89 MP limit ..."), never a huge
  allocation.

Usage::

    from visionkit.sources import open_image, read_bytes
    im = open_image("photo.jpg")           # lazy: header read, pixels not decoded
    check_decode(im, im.size)              # would load() allocate over the limit? (raises)
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
    "MAX_JPEG_PIXELS",
    "ImageCell",
    "check_decode",
    "decode_data_uri",
    "header_size",
    "image_column",
    "jpeg_draft_scale",
    "open_header",
    "open_image",
    "pil_errors",
    "read_bytes",
    "sniff_format",
]

ImageCell = str | os.PathLike | bytes | bytearray | memoryview | Image.Image

DOWNLOAD_TIMEOUT = 30.0  # seconds, per connect / per read
DOWNLOAD_MAX_BYTES = 50 * 1024 * 1024  # a bigger response is cut off, never held in memory
# A JPEG over PIL.Image.MAX_IMAGE_PIXELS is still accepted when its draft-mode decode is within
# that limit, but only up to this declared size (a sanity cap: see the module docs).
MAX_JPEG_PIXELS = 1_000_000_000

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


# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic...): not DHT (C4),
# JPG (C8) or DAC (CC), which share the range.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def header_size(head: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from the first bytes of a PNG, GIF, WebP or JPEG file, else None.

    Needs no complete file and decodes nothing, which matters because Pillow cannot open a
    truncated WebP at all (its plugin hands the whole file to libwebp). PNG, GIF and WebP keep
    their size in the first 30 bytes; a JPEG's is in its start-of-frame segment after any
    metadata segments, so None means "read more" when ``head`` ends before it. The size is
    as stored, before any EXIF orientation. Other formats (and malformed headers) give None.

    >>> header_size(b"GIF89a\x02\x00\x03\x00")
    (2, 3)
    """
    size: tuple[int, int] | None = None
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR" and len(head) >= 24:
        size = struct.unpack(">II", head[16:24])
    elif head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        size = struct.unpack("<HH", head[6:10])
    elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        size = _webp_size(head)
    elif head.startswith(b"\xff\xd8"):
        size = _jpeg_size(head)
    if size is None or size[0] <= 0 or size[1] <= 0:
        return None
    return int(size[0]), int(size[1])


def _webp_size(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8X" and len(head) >= 30:  # extended: 24-bit canvas size minus one
        w = int.from_bytes(head[24:27], "little") + 1
        h = int.from_bytes(head[27:30], "little") + 1
        return w, h
    if chunk == b"VP8 " and len(head) >= 30 and head[23:26] == b"\x9d\x01\x2a":  # lossy
        w, h = struct.unpack("<HH", head[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and len(head) >= 25 and head[20] == 0x2F:  # lossless: 14-bit fields
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    i, n = 2, len(head)
    while i + 4 <= n:
        if head[i] != 0xFF:
            return None  # not at a marker: malformed
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # standalone markers
            i += 2
            continue
        if marker == 0xDA or marker == 0xD9:  # scan data or end before any frame header
            return None
        if marker in _JPEG_SOF:
            if i + 9 > n:
                return None
            h, w = struct.unpack(">HH", head[i + 5 : i + 9])
            return w, h
        i += 2 + int.from_bytes(head[i + 2 : i + 4], "big")
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


def open_bytes(
    data: bytes, *, row: object = None, source: object = None, check: bool = True
) -> Image.Image:
    """Lazily open encoded ``data`` (header parsed, pixels not decoded), bomb-checked.

    ``check=False`` accepts any declared size (see ``open_header``).
    """
    if not data:
        raise ImageError("empty file (0 bytes)", row=row, source=source)
    with pil_errors(row, source) as ctx:
        ctx.head = data[:64]
        ctx.format = sniff_format(ctx.head)
        im = _open_lazy(io.BytesIO(data), check=check)
    return im


def _open_lazy(fp: Any, *, check: bool) -> ImageFile.ImageFile:
    """``Image.open`` without Pillow's size check (headers allocate nothing), then ours.

    Pillow warns past ``MAX_IMAGE_PIXELS`` and refuses past twice that at open time, before
    anyone could ask for a draft-mode decode; the format plugin alone parses the header.
    """
    try:
        with _WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(fp)
    except Image.DecompressionBombError:
        im = _open_unchecked(fp)
        if im is None:  # a plugin that checks sizes itself (WebP): no size to report
            raise
    if check:
        check_decode(im)
    return im


def _open_unchecked(fp: Any) -> ImageFile.ImageFile | None:
    """The image a header describes, opened by its format plugin alone (no size check).

    Plugins parse headers and never allocate pixels, so this is safe; a JPEG opened this way is
    a normal lazy image (``Image.open`` calls the same factory).
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
        return Image.OPEN[plugin][0](fp, "")
    except Exception:
        return None


def jpeg_draft_scale(size: tuple[int, int], target: tuple[int, int]) -> int:
    """The DCT scale denominator (1, 2, 4 or 8) ``JpegImageFile.draft(mode, target)`` picks.

    Mirrors Pillow's rule (the largest of 8, 4, 2, 1 that keeps the result at least ``target``
    on both sides); the decoded size is then ``ceil(size / scale)``. ``check_decode`` is given
    the size Pillow actually set, so this is only used to predict and to advise.
    """
    ratio = min(size[0] // max(1, target[0]), size[1] // max(1, target[1]))
    return next(s for s in (8, 4, 2, 1) if ratio >= s or s == 1)


def _scaled(size: tuple[int, int], scale: int) -> tuple[int, int]:
    return -(-size[0] // scale), -(-size[1] // scale)


def _max_side_for_scale(size: tuple[int, int], scale: int) -> int:
    """The largest ``max_side`` whose target lets a JPEG of ``size`` decode at 1/``scale``."""
    from .tokens import fit_within

    side = max(size) // scale
    while side > 1 and jpeg_draft_scale(size, fit_within(*size, side)) < scale:
        side -= 1
    return side


def decode_refusal(
    size: tuple[int, int], fmt: str | None, decode_size: tuple[int, int] | None = None
) -> str | None:
    """Why decoding an image of declared ``size`` at ``decode_size`` would be refused, or None.

    ``decode_size`` is what ``load()`` will allocate (after a JPEG draft); None asks whether
    *some* decode is allowed (a JPEG at 1/8 scale, anything else at full size).
    """
    limit = Image.MAX_IMAGE_PIXELS
    w, h = size
    if limit is None or w * h <= limit:
        return None
    if fmt not in ("jpeg", "mpo"):
        return _bomb_message(size=size)
    if w * h > MAX_JPEG_PIXELS:
        return (
            f"decompression bomb: {w}x{h} = {_mp(w * h)} JPEG exceeds the {_mp(MAX_JPEG_PIXELS)} "
            "cap for JPEGs decoded in draft mode (visionkit.sources.MAX_JPEG_PIXELS)"
        )
    smallest = next((s for s in (2, 4, 8) if math.prod(_scaled(size, s)) <= limit), None)
    if smallest is None:
        return f"{_bomb_message(size=size)}, even decoded at 1/8 scale"
    if decode_size is None or decode_size[0] * decode_size[1] <= limit:
        return None
    how = (
        "in full"
        if tuple(decode_size) == (w, h)
        else f"at {decode_size[0]}x{decode_size[1]} = {_mp(decode_size[0] * decode_size[1])}"
    )
    return (
        f"{_bomb_message(size=size)} when decoded {how}; a JPEG this size is decoded at "
        f"1/{smallest} scale (draft mode) for a target of at most "
        f"{_max_side_for_scale(size, smallest)} px a side: ask for that (max_side=) or less"
    )


def check_decode(
    im: Image.Image,
    decode_size: tuple[int, int] | None = None,
    *,
    row: object = None,
    source: object = None,
) -> None:
    """Raise ``ImageError`` if loading ``im`` at ``decode_size`` would allocate too much.

    Call it before ``im.draft(...)`` (``im.size`` is taken as the declared size), with the size
    ``load()`` will allocate: ``im.size`` for a full decode, or the draft size a JPEG gets
    (``jpeg_draft_scale``). Without ``decode_size``: is *any* decode allowed?
    """
    reason = decode_refusal(im.size, image_format(im), decode_size)
    if reason is not None:
        raise ImageError(reason, row=row, source=source)


def is_lazy(im: Image.Image) -> bool:
    """True for an opened image whose pixels have not been loaded (decoding would allocate)."""
    return isinstance(im, ImageFile.ImageFile) and getattr(im, "_im", None) is None


def open_header(cell: Any, *, row: object = None) -> Image.Image:
    """Like ``open_image`` but accepts any declared size: for sizes, modes and formats only.

    Reading a header allocates nothing. Call ``check_decode(im, size)`` before ``load()``.
    """
    return _open_cell(cell, row=row, check=False)


def open_image(cell: Any, *, row: object = None) -> Image.Image:
    """A lazily opened PIL image for any image cell: the header is read, pixels are not.

    A PIL image cell is returned as is. Paths are opened from disk (the file stays open until
    the image is loaded or closed: use it as a context manager in loops). Raises ``ImageError``
    naming ``row`` and the reason, including for an image too large to decode at any scale
    (see the module docs). A JPEG over ``PIL.Image.MAX_IMAGE_PIXELS`` that can be decoded in
    draft mode is returned: ``load()`` it only after a ``draft()`` and ``check_decode``.
    """
    return _open_cell(cell, row=row, check=True)


def _open_cell(cell: Any, *, row: object, check: bool) -> Image.Image:
    kind = cell_kind(cell)
    if kind == "pil":
        return cell
    if kind != "path":
        data = read_bytes(cell, row=row)
        return open_bytes(data, row=row, source=_source_label(cell), check=check)
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
            im = _open_lazy(fh, check=check)
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


IMAGE_COLUMNS = ("image", "path")


def image_column(df: Any, column: str | None = None, *, who: str = "df.vision") -> str:
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
        f"{who} needs an image column: 'image' or 'path' (or pass column=...); "
        f"this DataFrame has {list(df.columns)}"
    )
