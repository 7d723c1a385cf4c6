"""Open image cells lazily and decode them safely: Pillow's errors, bombs, orientation, 8 bits.

Every failure raises ``visionkit.ImageError`` naming the row and a human reason ("file not
found", "truncated JPEG", "decompression bomb: ..."); Pillow's own exceptions are translated in
one place, ``pil_errors``. What a decode may allocate is decided by ``visionkit.images.bombs``.

Usage:

    from visionkit.images.decode import decode_image, open_image
    im = open_image("photo.jpg")            # lazy: header read, pixels not decoded
    pixels = decode_image("photo.jpg", max_side=1120)   # upright, 8-bit, JPEG draft mode
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
from PIL import Image, ImageFile

from ..errors import ImageError
from ..tokens import fit_within
from .bombs import check_decode, decode_refusal
from .cells import cell_kind, local_path, open_regular, read_bytes, source_label
from .formats import image_format, sniff_format
from .pil_errors import pil_errors
from .pil_messages import WARNINGS_LOCK
from .plugins import ensure_plugins

__all__ = [
    "decode_image",
    "display_size",
    "frame_count",
    "is_lazy",
    "open_bytes",
    "open_header",
    "open_image",
    "open_lazy",
    "orientation",
    "to_srgb",
]


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
        im = open_lazy(io.BytesIO(data), check=check)
    return im


def open_lazy(fp: Any, *, check: bool) -> ImageFile.ImageFile:
    """``Image.open`` without Pillow's size check (headers allocate nothing), then ours.

    Pillow warns past ``MAX_IMAGE_PIXELS`` and refuses past twice that at open time, before
    anyone could ask for a draft-mode decode; the format plugin alone parses the header.
    """
    ensure_plugins()  # HEIC/HEIF through pillow-heif, when installed
    try:
        with WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(fp)
    except Image.DecompressionBombError:
        unchecked = _open_unchecked(fp)
        if unchecked is None:  # a plugin that checks sizes itself (WebP): no size to report
            raise
        im = unchecked
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
        return open_bytes(data, row=row, source=source_label(cell), check=check)
    source = source_label(cell)
    with pil_errors(row, source) as ctx:
        fh = open_regular(local_path(cell))  # handed to the lazy image, which closes it
        try:
            ctx.head = fh.read(64)
            if not ctx.head:
                raise ImageError("empty file (0 bytes)", row=row, source=source)
            ctx.format = sniff_format(ctx.head)
            im = open_lazy(fh, check=check)
        except BaseException:
            fh.close()
            raise
    # Image.open was given a file object: make the image own (and close) it.
    im._exclusive_fp = True
    return im


# EXIF orientations 5-8 rotate by 90 degrees: the displayed width is the stored height.
_SWAPS_AXES = frozenset({5, 6, 7, 8})


def orientation(im: Image.Image) -> int:
    """The EXIF orientation (1-8) from an opened image's header, without decoding pixels.

    PNG keeps EXIF in an ``eXIf`` chunk that Pillow only finds before the pixel data at open
    time; ``PngImageFile.getexif()`` would otherwise decode the whole image to look for it.
    """
    if im.format == "PNG" and "exif" not in im.info:
        return 1
    try:
        value = im.getexif().get(0x0112, 1)
    except Exception:  # a malformed EXIF block is no reason to reject the image
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def display_size(im: Image.Image, orient: int | None = None) -> tuple[int, int]:
    """``(width, height)`` as displayed, i.e. after the EXIF orientation is applied.

    ``orient``: the orientation if already known (saves reading the EXIF block again).
    """
    return oriented(im.size, orientation(im) if orient is None else orient)


def oriented(size: tuple[int, int], orient: int) -> tuple[int, int]:
    """``size`` with its axes swapped when ``orient`` turns the image by 90 degrees.

    The same swap maps a displayed size back to the stored one.
    """
    w, h = size
    return (h, w) if orient in _SWAPS_AXES else (w, h)


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def frame_count(im: Image.Image) -> int:
    """How many frames an opened image has (1 when counting fails: a broken tail is not fatal
    for a header).

    A PSD counts as one: Pillow calls its layers frames (numbered from 1, the merged
    composite being what it opens at), but they are parts of one picture, not an animation.
    """
    if im.format == "PSD":
        return 1
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
        palette = im.palette.mode if im.palette is not None else None
        has_alpha = mode == "PA" or "transparency" in im.info or palette == "RGBA"
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
    return to_srgb(im, "RGB")


def to_srgb(im: Image.Image, mode: str | None = None) -> Image.Image:
    """``im`` converted from its embedded ICC profile to sRGB (in ``mode``, default its own),
    without the profile: sRGB is what an image without one is taken to be.

    A profile lcms cannot read (broken, or for another colour space than the pixels') is
    dropped without converting: the plain conversion is the best left to do.
    """
    mode = mode or im.mode
    icc = im.info.get("icc_profile")
    out = None
    if icc:
        try:
            from PIL import ImageCms

            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            dst = ImageCms.createProfile("sRGB")
            out = ImageCms.profileToProfile(im, src, dst, outputMode=mode)
        except Exception:  # a broken or unusual profile: fall back to the plain conversion
            out = None
    if out is None:
        out = im.convert(mode) if mode != im.mode else im.copy()
    out.info.pop("icc_profile", None)  # never label converted pixels with the old profile
    return out


def decode_opened(
    im: Image.Image, size: tuple[int, int], orient: int, *, own: bool = True
) -> Image.Image:
    """Decode ``im`` for a display ``size``: draft, load the first frame, orient, 8-bit, resize.

    ``own`` says ``im`` is ours to mutate (draft is only used then, never on a caller's image).
    """
    stored = oriented(size, orient)
    declared = im.size
    if own and im.format in ("JPEG", "MPO") and stored != im.size:
        # DCT-domain downscale; keeps the result at least ``stored`` on both sides.
        im.draft(im.mode if im.mode in ("RGB", "L") else None, stored)
    elif own and im.format == "JPEG2000":
        # JPEG 2000's resolution levels: decode at 1/2**k, still at least ``stored`` (3x less
        # memory and time for a 2717x3701 image wanted at 1120 px)
        k = 0
        while k < 5 and all(d // (2 ** (k + 1)) >= t for d, t in zip(im.size, stored, strict=True)):
            k += 1
        if k:
            im.reduce = k  # type: ignore[method-assign,assignment]
    if own:  # the allocation ``load()`` is about to make, after the draft (if any)
        reason = decode_refusal(declared, image_format(im), im.size)
        if reason is not None:
            raise ImageError(reason)
    elif is_lazy(im):
        # a caller's lazily opened image: never drafted, so it would be decoded in full
        reason = decode_refusal(declared, None, declared)
        if reason is not None and im.format in ("JPEG", "MPO"):
            reason += "; pass the file's path or bytes instead, so it can be decoded in draft mode"
        if reason is not None:
            raise ImageError(reason)
    if frame_count(im) > 1 and im.tell() != 0:
        im.seek(0)  # a caller's image left at a later frame (never a PSD: see frame_count)
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
    im, _data, label = open_cell(cell, row)
    with pil_errors(row, label) as ctx:
        ctx.format = image_format(im)
        orient = orientation(im)
        w, h = display_size(im, orient)
        if max_side is not None:
            w, h = fit_within(w, h, max_side)
        return decode_opened(im, (w, h), orient, own=cell_kind(cell) != "pil")


def open_cell(cell: Any, row: object) -> tuple[Image.Image, bytes | None, object]:
    """``(image, its encoded bytes or None for a PIL cell, a source label)`` for decoding."""
    label = source_label(cell)
    if cell_kind(cell) == "pil":
        return cell, None, label
    data = read_bytes(cell, row=row)
    return open_bytes(data, row=row, source=label), data, label
