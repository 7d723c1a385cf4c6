"""Lossless, byte-level removal of metadata from a file that is sent as it is (passthrough).

Nothing but pixels and colour goes to the provider: no EXIF (GPS position, camera serial,
capture time), XMP, IPTC or comments. The compressed data is copied untouched, so the pixels
are bit-identical; the ICC colour profile is kept. Dropped, per format: JPEG -- every APPn
segment except JFIF (APP0), ICC_PROFILE (APP2) and Adobe (APP14), every COM, and anything after
the primary image's EOI (appended gain maps or MPO frames carry their own EXIF); PNG -- eXIf,
tEXt, zTXt, iTXt, tIME; WebP -- EXIF and XMP chunks (the RIFF size and VP8X flags are fixed);
GIF -- comment and XMP extensions.
"""

from __future__ import annotations

from .formats import jpeg_segments, png_chunks

__all__ = ["strip_file_metadata"]


# JPEG application segments kept (by marker and signature): JFIF/JFXX (APP0), the ICC profile
# (APP2 "ICC_PROFILE"), Adobe's colour-transform flag (APP14). Every other APPn (Exif and XMP in
# APP1, MPF and FlashPix in APP2, IPTC in APP13, C2PA/JUMBF in APP11, ...) and COM go.
_JPEG_KEEP = {0xE0: (b"JFIF\0", b"JFXX\0"), 0xE2: (b"ICC_PROFILE\0",), 0xEE: (b"Adobe",)}

_PNG_DROP = frozenset({b"eXIf", b"tEXt", b"zTXt", b"iTXt", b"tIME"})

_WEBP_DROP = frozenset({b"EXIF", b"XMP "})

_VP8X_EXIF, _VP8X_XMP = 0x08, 0x04


def strip_file_metadata(data: bytes, fmt: str) -> bytes | None:
    """``data`` without its metadata (EXIF incl. GPS, XMP, IPTC, comments), losslessly.

    Pixels and colour are untouched: the compressed image data, ICC profile and everything a
    decoder needs are copied byte for byte. Returns None when the structure cannot be walked
    to its end (truncated or corrupt): such a file is never passed through. JPEG: keeps SOI ..
    EOI of the primary image (appended gain maps and MPO frames, which carry their own EXIF,
    go too). PNG: drops eXIf, tEXt, zTXt, iTXt and tIME chunks. WebP: drops the EXIF and XMP
    chunks and fixes the RIFF size and the VP8X flags. GIF: drops comment and XMP extensions.
    """
    try:
        if fmt == "jpeg":
            return _strip_jpeg(data)
        if fmt == "png":
            return _strip_png(data)
        if fmt == "webp":
            return _strip_webp(data)
        if fmt == "gif":
            return _strip_gif(data)
    except IndexError:
        return None
    return None


def _strip_jpeg(data: bytes) -> bytes | None:
    out = [b"\xff\xd8"]
    for marker, start, end in jpeg_segments(data):
        if (0xE0 <= marker <= 0xEF or marker == 0xFE) and not data[start + 2 : end].startswith(
            _JPEG_KEEP.get(marker, ())
        ):
            continue
        out.append(bytes((0xFF, marker)))
        out.append(data[start:end])
        if marker == 0xD9:
            return b"".join(out)
    return None


def _strip_png(data: bytes) -> bytes | None:
    out = [data[:8]]
    for kind, start, end in png_chunks(data):
        if kind not in _PNG_DROP:
            out.append(data[start:end])  # chunk CRCs cover the chunk alone: nothing to recompute
        if kind == b"IEND":
            return b"".join(out)
    return None


def _strip_webp(data: bytes) -> bytes | None:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    riff_end = 8 + int.from_bytes(data[4:8], "little")
    if riff_end > len(data):
        return None
    chunks, pos = [], 12
    while pos + 8 <= riff_end:
        fourcc = data[pos : pos + 4]
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        end = min(pos + 8 + size + (size & 1), riff_end)  # chunks are padded to even sizes
        if pos + 8 + size > riff_end:
            return None
        if fourcc == b"VP8X" and size >= 10:
            flags = data[pos + 8] & ~(_VP8X_EXIF | _VP8X_XMP)
            chunks.append(data[pos : pos + 8] + bytes((flags,)) + data[pos + 9 : end])
        elif fourcc not in _WEBP_DROP:
            chunks.append(data[pos:end])
        pos = end
    body = b"WEBP" + b"".join(chunks)
    return b"RIFF" + len(body).to_bytes(4, "little") + body


def _gif_sub_blocks_end(data: bytes, pos: int) -> int:
    while True:
        size = data[pos]  # IndexError past the end: a truncated file
        pos += 1 + size
        if size == 0:
            return pos


def _strip_gif(data: bytes) -> bytes | None:
    if data[:6] not in (b"GIF87a", b"GIF89a") or len(data) < 13:
        return None
    flags = data[10]
    pos = 13 + (3 * (2 << (flags & 7)) if flags & 0x80 else 0)  # global colour table
    out = [data[:pos]]
    while True:
        block = data[pos]
        if block == 0x3B:  # trailer
            out.append(b";")
            return b"".join(out)
        if block == 0x21:  # extension: label, then data sub-blocks
            label = data[pos + 1]
            end = _gif_sub_blocks_end(data, pos + 2)
            xmp = label == 0xFF and data[pos + 2 : pos + 14] == b"\x0bXMP DataXMP"
            if label != 0xFE and not xmp:  # 0xFE: comment
                out.append(data[pos:end])
        elif block == 0x2C:  # image descriptor, local colour table, LZW size, sub-blocks
            local = data[pos + 9]
            start = pos + 10 + (3 * (2 << (local & 7)) if local & 0x80 else 0) + 1
            end = _gif_sub_blocks_end(data, start)
            out.append(data[pos:end])
        else:
            return None
        if end > len(data):
            return None
        pos = end
