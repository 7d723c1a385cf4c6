"""Image formats from bytes alone: magic-byte sniffing, header sizes, MIME types.

Nothing here decodes pixels or imports Pillow's plugins; ``header_size`` reads the size of a
PNG, GIF, WebP or JPEG from its first bytes, which is what lets ``read_images`` stay
header-only and ``encode`` learn an encoded image's size without decoding it.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator

from PIL import Image

__all__ = [
    "MIME_TYPES",
    "describe_non_image",
    "format_from_mime",
    "header_size",
    "image_format",
    "is_not_an_image",
    "jpeg_segments",
    "png_chunks",
    "sniff_format",
]


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
_FORMAT_ALIASES = {"mpo": "jpeg", "jpeg2000": "jp2", "heif": "heic"}


def sniff_format(head: bytes) -> str | None:
    """The image format named by ``head``'s magic bytes ("png", "jpeg", ...), or None.

    Looks at the first 32 bytes at most; says nothing about whether the rest is intact.
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
        if brand in (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"):
            # mif1/msf1 are HEIF's generic brands: an AVIF may use them too, and then says
            # "avif" among the compatible brands that follow
            if brand in (b"mif1", b"msf1") and b"avif" in head[16:64]:
                return "avif"
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
    for marker, start, _end in jpeg_segments(head):
        if marker in _JPEG_SOF:
            h, w = struct.unpack(">HH", head[start + 3 : start + 7])
            return w, h
        if marker == 0xDA:  # scan data before any frame header
            return None
    return None


# The end of entropy-coded data: 0xFF that is not stuffing (FF 00) or a restart marker; FF FF
# is fill before a marker. (No ``+``: a quantifier makes ``re`` 20x slower here.)
_JPEG_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7]")


def jpeg_segments(data: bytes) -> Iterator[tuple[int, int, int]]:
    """Walk a JPEG's markers after SOI, yielding ``(marker, start, end)`` per segment in order.

    ``data[start:end]`` is what follows the two marker bytes: the length field and payload,
    plus the entropy-coded data after a start-of-scan (0xDA); empty for standalone markers
    (RSTn, TEM, EOI). The walk ends after EOI (0xD9), or silently where ``data`` is cut short
    or malformed: a caller that needs the whole file checks that it saw EOI.
    """
    if not data.startswith(b"\xff\xd8"):
        return
    pos, n = 2, len(data)
    while pos < n:
        if data[pos] != 0xFF:
            return  # not at a marker: malformed
        while pos < n and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            return
        marker = data[pos]
        pos += 1
        if marker == 0x01 or 0xD0 <= marker <= 0xD9:  # no length field
            yield marker, pos, pos
            if marker == 0xD9:
                return
            continue
        length = int.from_bytes(data[pos : pos + 2], "big")
        end = pos + length
        if length < 2 or end > n:
            return
        if marker == 0xDA:
            found = _JPEG_NEXT_MARKER.search(data, end)
            if found is None:
                return
            end = found.start()
        yield marker, pos, end
        pos = end


def png_chunks(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """Walk a PNG's chunks in order, yielding ``(type, start, end)`` with ``data[start:end]``
    the whole chunk (length, type, payload, CRC).

    Ends after IEND, or silently where ``data`` is cut short or is not a PNG: a caller that
    needs the whole file checks that it saw IEND.
    """
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return
    pos, n = 8, len(data)
    while pos + 12 <= n:
        end = pos + 12 + int.from_bytes(data[pos : pos + 4], "big")
        if end > n:
            return
        kind = data[pos + 4 : pos + 8]
        yield kind, pos, end
        if kind == b"IEND":
            return
        pos = end


def describe_non_image(head: bytes) -> str:
    """Why ``head`` is not an image Pillow can read, in words."""
    if not head:
        return "empty file (0 bytes)"
    fmt = sniff_format(head)
    if fmt == "heic":
        return "unsupported image format 'heic' (install visionkit[heif] to read it)"
    if fmt in ("avif", "jp2"):
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


def is_not_an_image(reason: str | None) -> bool:
    """True for a reason ``describe_non_image`` gives a file that is no image at all (empty,
    text, a PDF, unrecognised bytes), as opposed to a broken or unsupported image."""
    return reason is not None and reason.startswith(("not an image", "empty file"))


def image_format(im: Image.Image) -> str | None:
    """The lower-case, conventional format name of an opened image ("jpeg" for MPO)."""
    fmt = (im.format or "").lower() or None
    return _FORMAT_ALIASES.get(fmt, fmt) if fmt else None


def format_from_mime(mime: str) -> str | None:
    return _MIME_TO_FORMAT.get(mime.lower())
