"""Turn image cells into ``data:`` URIs a provider accepts: ``encode_image``, ``encode_series``.

What ``encode`` does to each image, in order:

1. **Passthrough.** If the original bytes are already in a format the provider accepts, fit the
   size and byte budget, need no rotation, are a single frame in an 8-bit mode and look intact,
   they are sent as they are (fastest, lossless) -- minus their metadata, see below.
2. Otherwise the image is **decoded at the size it is needed**: JPEGs use Pillow's draft mode
   (a DCT-domain 1/2, 1/4 or 1/8 downscale inside libjpeg), so a 4000 px photo is never decoded
   at full size when the target is 1120 px, and a 108 or 200 MP phone photo (over Pillow's
   89 MP ``MAX_IMAGE_PIXELS``) is decoded at 1/8, allocating under 2% of its full size. A
   decode is refused only when what ``load()`` would allocate is over ``MAX_IMAGE_PIXELS``
   (PNG/GIF/WebP/TIFF decode in full; see ``visionkit.sources`` for the rules).
3. **EXIF orientation** is applied; **CMYK** is converted to RGB (through its ICC profile when
   it has one); **16-bit** images are scaled to 8 bits (``/257``, not clipped to white); a
   palette with transparency, LA and RGBA **keep their alpha**; an alpha channel that is fully
   opaque is dropped. **Animated GIFs (and APNG/WebP) are reduced to their first frame.**
4. **Resize** (never up) to ``max_side`` (default: the provider's, 1120 px for inference.net,
   where its token estimate stops growing) and, with ``max_tokens=``, further until the
   provider's estimate is within budget. Lanczos resampling.
5. **Encode**: with ``format="auto"``, chosen by content, not by mode (``_is_graphic``, on a
   256 px sample): PNG for graphics (line art, charts, screenshots: few colours, flat
   regions), JPEG (quality 90) for opaque photographs -- greyscale ones included -- and lossy
   WebP for photographs with transparency; WebP or PNG when the provider takes neither. Then,
   until the data URI fits ``max_bytes`` or the provider's ``image_budget()`` (its share of
   the request body: inference.net's two images plus a prompt must fit in one request under
   1 MB), in this order, cheapest for the user first: lower the JPEG/WebP quality (90 down
   to 50); try a PNG that does not fit as JPEG (opaque) or WebP (with alpha); only then
   shrink the image, which costs resolution.

**Metadata** (``strip_metadata=True``, the default): nothing but pixels and colour goes to the
provider. No EXIF (GPS position, camera serial, capture time), XMP, IPTC or comments. A file
that passes through is stripped losslessly at the byte level (``strip_file_metadata``: the
compressed data is copied untouched, so the pixels are bit-identical); a re-encoded image is
written without them. The ICC colour profile is kept. Dropped, per format: JPEG -- every APPn
segment except JFIF (APP0), ICC_PROFILE (APP2) and Adobe (APP14), every COM, and anything after
the primary image's EOI (appended gain maps or MPO frames carry their own EXIF); PNG -- eXIf,
tEXt, zTXt, iTXt, tIME; WebP -- EXIF and XMP chunks (the RIFF size and VP8X flags are fixed);
GIF -- comment and XMP extensions. ``strip_metadata=False`` sends a passed-through file byte
for byte; a re-encoded image never carried EXIF or XMP (Pillow does not copy them), only a
JPEG's or GIF's comment.

Usage::

    from visionkit.encode import encode_image
    uri = encode_image("photo.jpg")                       # for inference.net
    uris = df.vision.encode(max_tokens=3202)              # a Series, NA where a row failed
"""

from __future__ import annotations

import base64
import io
import math
import os
import re
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from . import sources
from .errors import ImageError
from .imageinfo import orientation
from .profiles import Provider, get_provider
from .tokens import fit_within

__all__ = [
    "EncodeWarning",
    "decode_image",
    "encode_image",
    "encode_series",
    "strip_file_metadata",
]

JPEG_QUALITY = 90
_QUALITY_STEPS = (90, 82, 75, 68, 60, 50)
_MIN_SIDE = 16
_PASSTHROUGH_MODES = frozenset({"RGB", "L", "RGBA", "LA", "P", "1"})
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SAVE_NAMES = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "gif": "GIF"}


class EncodeWarning(UserWarning):
    """Some rows could not be encoded and are NA (``encode_series(errors="coerce")``)."""


# --------------------------------------------------------------------------------------------
# decoding


def _frames(im: Image.Image) -> int:
    try:
        return int(getattr(im, "n_frames", 1) or 1)
    except Exception:
        return 1


def _to_8bit(im: Image.Image) -> Image.Image:
    """An 8-bit RGB, RGBA, L or LA image with the same appearance as ``im``."""
    mode = im.mode
    if mode in ("RGB", "L"):
        return im
    if mode in ("RGBA", "LA"):
        lo, _ = im.getchannel("A").getextrema()
        return im.convert(mode[:-1]) if lo == 255 else im  # fully opaque: drop alpha
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _scale_to_8bit(im)
    if mode == "CMYK":
        return _cmyk_to_rgb(im)
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info or im.palette.mode == "RGBA"
        return _to_8bit(im.convert("RGBA" if has_alpha else "RGB"))
    if mode == "1":
        return im.convert("L")
    if mode in ("RGBa", "La"):
        return _to_8bit(im.convert(mode.replace("a", "A")))
    return im.convert("RGB")  # YCbCr, LAB, HSV, RGBX, ...


def _scale_to_8bit(im: Image.Image) -> Image.Image:
    """16-bit and 32-bit grey to 8 bits by scaling, never by clipping (which turns it white)."""
    arr = np.asarray(im)
    if arr.dtype.kind == "f":
        finite = arr[np.isfinite(arr)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if lo >= 0 and hi <= 1:
            lo, hi = 0.0, 1.0
        elif lo >= 0 and hi <= 255:
            lo, hi = 0.0, 255.0
        scaled = (np.nan_to_num(arr, nan=lo) - lo) * (255.0 / max(hi - lo, 1e-12))
    else:
        arr = arr.astype(np.int64)
        lo, hi = int(arr.min()), int(arr.max())
        if lo >= 0 and (im.mode.startswith("I;16") or hi > 255) and hi <= 65535:
            scaled = arr * (255.0 / 65535.0)  # the 16-bit range, as any viewer shows it
        elif lo >= 0 and hi <= 255:
            scaled = arr
        else:
            scaled = (arr - lo) * (255.0 / max(hi - lo, 1))
    out = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(out)


def _cmyk_to_rgb(im: Image.Image) -> Image.Image:
    """CMYK to sRGB through the embedded ICC profile if any; the CMYK profile is dropped."""
    icc = im.info.get("icc_profile")
    out = None
    if icc:
        try:
            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            dst = ImageCms.createProfile("sRGB")
            out = ImageCms.profileToProfile(im, src, dst, outputMode="RGB")
        except Exception:  # a broken or unusual profile: fall back to the plain conversion
            out = None
    if out is None:
        out = im.convert("RGB")
    out.info.pop("icc_profile", None)  # never label RGB pixels with a CMYK profile
    return out


def _decode(
    im: Image.Image, size: tuple[int, int], orient: int, *, own: bool = True
) -> Image.Image:
    """Decode ``im`` for a display ``size``: draft, load the first frame, orient, 8-bit, resize.

    ``own`` says ``im`` is ours to mutate (draft is only used then, never on a caller's image).
    """
    w, h = size
    stored = (h, w) if orient in (5, 6, 7, 8) else (w, h)
    declared = im.size
    if own and im.format in ("JPEG", "MPO") and stored != im.size:
        # DCT-domain downscale; keeps the result at least ``stored`` on both sides.
        im.draft(im.mode if im.mode in ("RGB", "L") else None, stored)
    if own:  # the allocation ``load()`` is about to make, after the draft (if any)
        reason = sources.decode_refusal(declared, sources.image_format(im), im.size)
        if reason is not None:
            raise ImageError(reason)
    elif sources.is_lazy(im):
        # a caller's lazily opened image: never drafted, so it would be decoded in full
        reason = sources.decode_refusal(declared, None, declared)
        if reason is not None and im.format in ("JPEG", "MPO"):
            reason += "; pass the file's path or bytes instead, so it can be decoded in draft mode"
        if reason is not None:
            raise ImageError(reason)
    if _frames(im) > 1 and im.tell() != 0:
        im.seek(0)
    im.load()
    im = _to_8bit(im)
    if im.size != stored:
        im = im.resize(stored, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if orient in _TRANSPOSE:  # after the resize: rotating the small image is cheaper
        im = im.transpose(_TRANSPOSE[orient])
    return im


def decode_image(cell: Any, *, max_side: int | None = None, row: object = None) -> Image.Image:
    """A decoded, upright, 8-bit (RGB, RGBA, L or LA) image no larger than ``max_side``.

    The first frame of an animation. JPEGs are decoded in draft mode when that is enough.
    """
    im, _data, label = _open(cell, row)
    with sources.pil_errors(row, label) as ctx:
        ctx.format = sources.image_format(im)
        orient = orientation(im)
        w, h = _display(im, orient)
        if max_side is not None:
            w, h = fit_within(w, h, max_side)
        return _decode(im, (w, h), orient, own=sources.cell_kind(cell) != "pil")


def _display(im: Image.Image, orient: int) -> tuple[int, int]:
    w, h = im.size
    return (h, w) if orient in (5, 6, 7, 8) else (w, h)


def _open(cell: Any, row: object) -> tuple[Image.Image, bytes | None, object]:
    label = sources._source_label(cell)
    if sources.cell_kind(cell) == "pil":
        return cell, None, label
    data = sources.read_bytes(cell, row=row)
    return sources.open_bytes(data, row=row, source=label), data, label


# --------------------------------------------------------------------------------------------
# metadata: lossless, byte-level removal for passthrough

# JPEG application segments kept (by marker and signature): JFIF/JFXX (APP0), the ICC profile
# (APP2 "ICC_PROFILE"), Adobe's colour-transform flag (APP14). Every other APPn (Exif and XMP in
# APP1, MPF and FlashPix in APP2, IPTC in APP13, C2PA/JUMBF in APP11, ...) and COM go.
_JPEG_KEEP = {0xE0: (b"JFIF\0", b"JFXX\0"), 0xE2: (b"ICC_PROFILE\0",), 0xEE: (b"Adobe",)}
# The end of entropy-coded data: 0xFF that is not stuffing (FF 00) or a restart marker; FF FF
# is fill before a marker. (No ``+``: a quantifier makes ``re`` 20x slower here.)
_JPEG_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7]")
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
    if not data.startswith(b"\xff\xd8"):
        return None
    out, pos, n = [b"\xff\xd8"], 2, len(data)
    while pos < n:
        if data[pos] != 0xFF:
            return None
        while pos < n and data[pos] == 0xFF:  # fill bytes
            pos += 1
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # EOI
            out.append(b"\xff\xd9")
            return b"".join(out)
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # no length field
            out.append(bytes((0xFF, marker)))
            continue
        length = int.from_bytes(data[pos : pos + 2], "big")
        end = pos + length
        if length < 2 or end > n:
            return None
        if marker == 0xDA:  # start of scan: its header, then entropy-coded data
            found = _JPEG_NEXT_MARKER.search(data, end)
            if found is None:
                return None
            end = found.start()
        elif (0xE0 <= marker <= 0xEF or marker == 0xFE) and not data[pos + 2 : end].startswith(
            _JPEG_KEEP.get(marker, ())
        ):
            pos = end
            continue
        out.append(bytes((0xFF, marker)))
        out.append(data[pos:end])
        pos = end
    return None


def _strip_png(data: bytes) -> bytes | None:
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    out, pos, n = [data[:8]], 8, len(data)
    while pos + 12 <= n:
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > n:
            return None
        if kind not in _PNG_DROP:
            out.append(data[pos:end])  # chunk CRCs cover the chunk alone: nothing to recompute
        pos = end
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


# --------------------------------------------------------------------------------------------
# sizing and encoding


def _fit_tokens(w: int, h: int, provider: Provider, max_tokens: int) -> tuple[int, int]:
    """The largest size within ``w x h`` (same aspect) whose token estimate is <= max_tokens."""
    if provider.estimate(w, h) <= max_tokens:
        return w, h
    lo, hi = 1, max(w, h) - 1  # longest side; estimates grow with size
    best = None
    while lo <= hi:
        mid = (lo + hi) // 2
        cand = fit_within(w, h, mid)
        if provider.estimate(*cand) <= max_tokens:
            best, lo = cand, mid + 1
        else:
            hi = mid - 1
    if best is None:
        raise ImageError(
            f"max_tokens={max_tokens} is below {provider.name}'s estimate for any size of image"
        )
    return best


def _check_format(fmt: str, provider: Provider) -> str:
    fmt = fmt.lower()
    fmt = "jpeg" if fmt == "jpg" else fmt
    allowed = ["auto", *provider.formats]
    if fmt not in allowed:
        raise ValueError(
            f"The value for `format` must be one of {allowed} for provider {provider.name!r}, "
            f"but {fmt!r} was passed"
        )
    return fmt


def _check_tokens(max_tokens: int | None, provider: Provider) -> None:
    if max_tokens is not None and max_tokens < provider.estimate(1, 1):
        raise ValueError(
            f"max_tokens={max_tokens} is below {provider.name}'s minimum of "
            f"{provider.estimate(1, 1)} tokens per image"
        )


def _uri_length(n_bytes: int, mime: str) -> int:
    return len("data:") + len(mime) + len(";base64,") + 4 * math.ceil(n_bytes / 3)


def _data_uri(data: bytes, fmt: str) -> str:
    mime = sources.MIME_TYPES[fmt]
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _looks_intact(data: bytes, fmt: str) -> bool:
    """Cheap end-of-file checks, so passthrough never forwards a truncated file."""
    tail = data.rstrip(b"\0\r\n ")[-16:]
    if fmt == "jpeg":
        return tail.endswith(b"\xff\xd9")
    if fmt == "png":
        return tail.endswith(b"IEND\xaeB`\x82")
    if fmt == "gif":
        return tail.endswith(b";")
    if fmt == "webp":
        return len(data) >= 12 and int.from_bytes(data[4:8], "little") + 8 <= len(data)
    return False


_SAMPLE_SIDE = 256  # the graphic-or-photo test looks at a copy this size (nearest neighbour)


def _is_graphic(im: Image.Image) -> bool:
    """True for line art, charts, diagrams and screenshots; False for photographs.

    Decided by content, not by mode (a greyscale photo has at most 256 levels, yet is a photo):
    few distinct colours *and* flat regions, measured on a nearest-neighbour copy at most
    256 px a side (so it costs well under a millisecond and sees only colours that exist).
    Graphic: <= 16 colours (bilevel, dithered, posterised: JPEG would smear them), or <= 64
    colours with half of all neighbouring pixels equal, or <= 256 with 75% equal
    (anti-aliased text and lines on a flat background). A photograph's grain makes
    neighbours differ even where it looks smooth: 1-27% equal on the bundled photos, 65% on
    the most extreme (a motion-blurred clock on an overexposed white wall).
    """
    w, h = im.size
    if max(w, h) > _SAMPLE_SIDE:
        im = im.resize(fit_within(w, h, _SAMPLE_SIDE), Image.Resampling.NEAREST)
    if im.mode in ("RGBA", "LA"):
        im = im.convert(im.mode[:-1])  # colours as seen; alpha is decided separately
    colours = im.getcolors(maxcolors=256)
    if colours is None:
        return False
    n = len(colours)
    if n <= 16:
        return True
    a = np.asarray(im)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[0] < 2 or a.shape[1] < 2:
        return n <= 64
    same = np.count_nonzero((a[:, 1:] == a[:, :-1]).all(-1))
    same += np.count_nonzero((a[1:] == a[:-1]).all(-1))
    pairs = a.shape[0] * (a.shape[1] - 1) + (a.shape[0] - 1) * a.shape[1]
    flat = same / pairs
    return flat >= 0.5 if n <= 64 else flat >= 0.75


def _choose_format(im: Image.Image, requested: str, allowed: tuple[str, ...]) -> str:
    """``requested``, or for "auto": PNG for graphics, JPEG for opaque photographs, WebP for
    photographs with transparency (lossy, keeps the alpha), each falling back to what
    ``allowed`` has."""
    if requested != "auto":
        return requested
    has_alpha = im.mode in ("RGBA", "LA")
    if _is_graphic(im):
        order: tuple[str, ...] = ("png", "webp")
    elif has_alpha:
        order = ("webp", "png")
    else:
        order = ("jpeg", "webp", "png")
    for fmt in (*order, "png", "webp", "jpeg", "gif"):
        if fmt in allowed:
            return fmt
    raise ImageError(f"the provider accepts none of the formats visionkit writes: {allowed}")


def _prepare(im: Image.Image, fmt: str) -> Image.Image:
    """Make ``im`` saveable as ``fmt``: JPEG has no alpha (composite on white, never black)."""
    if fmt == "jpeg" and im.mode in ("RGBA", "LA"):
        background = Image.new("RGB", im.size, (255, 255, 255))
        background.paste(im.convert("RGBA"), mask=im.getchannel("A"))
        return background
    return im


def _save(im: Image.Image, fmt: str, quality: int | None, strip: bool = True) -> bytes:
    buf = io.BytesIO()
    kwargs: dict[str, Any] = {}
    if strip:  # Pillow copies a JPEG's or GIF's comment from ``im.info`` unless told not to
        kwargs["comment"] = b""
    if fmt in ("jpeg", "webp"):
        kwargs["quality"] = quality or JPEG_QUALITY
    icc = im.info.get("icc_profile")
    if icc and fmt in ("jpeg", "png", "webp") and im.mode in ("RGB", "RGBA"):
        kwargs["icc_profile"] = icc
    im.save(buf, _SAVE_NAMES[fmt], **kwargs)
    return buf.getvalue()


def _encode_to_budget(
    im: Image.Image,
    fmt: str,
    budget: int | None,
    requested: str,
    allowed: tuple[str, ...],
    strip: bool = True,
) -> str:
    """Encode, then lower quality, then change PNG to a lossy format, then shrink, until the
    data URI fits ``budget``."""
    mime = sources.MIME_TYPES[fmt]
    qualities: tuple[int | None, ...] = _QUALITY_STEPS if fmt in ("jpeg", "webp") else (None,)
    while True:
        data = b""
        for q in qualities:
            data = _save(im, fmt, q, strip)
            if budget is None or _uri_length(len(data), mime) <= budget:
                return _data_uri(data, fmt)
        # A PNG too big for the budget: change format before shrinking (shrinking costs the
        # user resolution, a lossy format usually does not). JPEG when opaque; WebP keeps alpha.
        if fmt == "png" and requested == "auto":
            lossy = ("webp",) if im.mode in ("RGBA", "LA") else ("jpeg", "webp")
            for other in lossy:
                if other in allowed:
                    return _encode_to_budget(
                        _prepare(im, other), other, budget, other, allowed, strip
                    )
        w, h = im.size
        assert budget is not None
        ratio = math.sqrt(max(budget - 64, 1) / (4 / 3 * max(len(data), 1)))
        scale = min(0.9, max(0.5, ratio * 0.95))
        nw, nh = max(1, int(w * scale)), max(1, int(h * scale))
        if max(nw, nh) < _MIN_SIDE:
            raise ImageError(f"cannot fit within {budget:,} bytes even at {w}x{h}")
        im = im.resize((nw, nh), Image.Resampling.LANCZOS)
        qualities = qualities[2:] or qualities  # start lower after shrinking


def encode_image(
    cell: Any,
    *,
    provider: str | Provider = "inference.net",
    max_side: int | None = None,
    max_tokens: int | None = None,
    max_bytes: int | None = None,
    format: str = "auto",
    strip_metadata: bool = True,
    row: object = None,
) -> str:
    """A ``data:`` URI of ``cell`` that ``provider`` accepts (see the module docs for the rules).

    ``strip_metadata`` (default) sends no EXIF (GPS included), XMP, IPTC or comments: removed
    byte for byte when the file passes through, never written when it is re-encoded. The ICC
    profile is kept. ``strip_metadata=False`` sends a passed-through file exactly as it is.

    Raises ``ImageError`` naming ``row`` when the image cannot be read or encoded, and
    ``ValueError`` for a ``format`` the provider does not accept.

    >>> encode_image("photo.jpg", max_tokens=3202)[:23]         # doctest: +SKIP
    'data:image/jpeg;base64,'
    """
    prov = get_provider(provider)
    requested = _check_format(format, prov)
    _check_tokens(max_tokens, prov)
    budget = max_bytes if max_bytes is not None else prov.image_budget()
    side = max_side if max_side is not None else prov.max_side

    im, data, label = _open(cell, row)
    with sources.pil_errors(row, label) as ctx:
        real = ctx.format = sources.image_format(im)
        orient = orientation(im)
        w, h = _display(im, orient)
        tw, th = (w, h) if side is None else fit_within(w, h, side)
        if max_tokens is not None:
            tw, th = _fit_tokens(tw, th, prov, max_tokens)

        if (
            data is not None
            and real in prov.formats
            and requested in ("auto", real)
            and (tw, th) == (w, h)
            and orient == 1
            and im.mode in _PASSTHROUGH_MODES
            and _frames(im) == 1
        ):
            # A file whose structure cannot be walked to its end is re-encoded instead.
            payload = strip_file_metadata(data, real) if strip_metadata else data
            if payload is not None and (
                budget is None or _uri_length(len(payload), sources.MIME_TYPES[real]) <= budget
            ):
                if not _looks_intact(payload, real):
                    im.load()  # raises "truncated JPEG" etc.; trailing junk alone is fine
                return _data_uri(payload, real)

        pixels = _decode(im, (tw, th), orient, own=data is not None)
        fmt = _choose_format(pixels, requested, prov.formats)
        uri = _encode_to_budget(
            _prepare(pixels, fmt), fmt, budget, requested, prov.formats, strip_metadata
        )
    return uri


# --------------------------------------------------------------------------------------------
# many images


def _default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def encode_series(
    images: pd.Series | Iterable[Any],
    *,
    provider: str | Provider = "inference.net",
    max_side: int | None = None,
    max_tokens: int | None = None,
    max_bytes: int | None = None,
    format: str = "auto",
    strip_metadata: bool = True,
    errors: str = "coerce",
    workers: int | None = None,
    progress: bool = True,
) -> pd.Series:
    """``encode_image`` for every cell: a Series of data URIs with the same index.

    ``errors="coerce"`` (default) leaves NA where a row fails and emits one ``EncodeWarning``
    naming the failing rows and reasons (also kept in ``result.attrs["errors"]``);
    ``errors="raise"`` raises the first row's ``ImageError``. Images are encoded by a thread
    pool (``workers``, default one per core: Pillow releases the GIL while decoding, resizing
    and encoding). The Series has ``object`` dtype: pandas' string dtype would copy every URI.
    ``progress`` shows a ``tqdm.auto`` bar (a widget in Jupyter), and only once encoding has
    taken a second (tqdm's ``delay=``), so quick calls print nothing; ``progress=False``
    never shows it.
    """
    if errors not in ("coerce", "raise"):
        raise ValueError(
            f"The value for `errors` must be one of ['coerce', 'raise'], not {errors!r}"
        )
    prov = get_provider(provider)
    _check_format(format, prov)
    _check_tokens(max_tokens, prov)
    series = images if isinstance(images, pd.Series) else pd.Series(list(images), dtype=object)
    labels = list(series.index)
    cells = series.tolist()
    options = {
        "provider": prov,
        "max_side": max_side,
        "max_tokens": max_tokens,
        "max_bytes": max_bytes,
        "format": format,
        "strip_metadata": strip_metadata,
    }

    def one(i: int) -> str | ImageError:
        try:
            return encode_image(cells[i], row=labels[i], **options)
        except ImageError as exc:
            if errors == "raise":
                raise
            return exc

    n_workers = workers or _default_workers()
    from tqdm.auto import tqdm

    bar = tqdm(total=len(cells), desc="encode", unit="img", disable=not progress, delay=1.0)
    results: list[Any] = []
    try:
        if n_workers <= 1 or len(cells) <= 1:
            for i in range(len(cells)):
                results.append(one(i))
                bar.update()
        else:
            with ThreadPoolExecutor(max_workers=n_workers) as pool:
                try:
                    for result in pool.map(one, range(len(cells))):
                        results.append(result)
                        bar.update()
                except BaseException:
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
    finally:
        bar.close()

    failures = {labels[i]: r.reason for i, r in enumerate(results) if isinstance(r, ImageError)}
    values = [None if isinstance(r, ImageError) else r for r in results]
    out = pd.Series(values, index=series.index, dtype=object, name="data_uri")
    out.attrs["errors"] = failures
    if failures:
        shown = "; ".join(f"row {k!r}: {v}" for k, v in list(failures.items())[:10])
        more = f"; and {len(failures) - 10} more" if len(failures) > 10 else ""
        warnings.warn(
            f"{len(failures)} of {len(cells)} images could not be encoded and are NA: "
            f"{shown}{more}",
            EncodeWarning,
            stacklevel=2,
        )
    return out
