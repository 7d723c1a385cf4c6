"""The decompression-bomb policy: what one decode may allocate.

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
- Pillow also allocates a pointer (8 bytes) per row of every image it holds, so a tall, thin
  image costs more than its pixels: a 1x83,886,338 RGBA "image" (a 284-byte BLP in Pillow's
  own test corpus) is 336 MB of pixels and 671 MB of row pointers. Each row counts as
  ``ROW_PIXELS`` more pixels here, so such an image is refused like any other bomb; for a
  photo it adds a fraction of a percent.
"""

from __future__ import annotations

from PIL import Image

from ..errors import ImageError
from ..tokens import fit_within
from .formats import image_format

__all__ = [
    "MAX_JPEG_PIXELS",
    "ROW_PIXELS",
    "bomb_message",
    "check_decode",
    "decode_cost",
    "decode_refusal",
    "jpeg_draft_scale",
]


# A JPEG over PIL.Image.MAX_IMAGE_PIXELS is still accepted when its draft-mode decode is within
# that limit, but only up to this declared size (a sanity cap: see the module docs).
MAX_JPEG_PIXELS = 1_000_000_000

# What one row costs Pillow beyond its pixels, counted in 4-byte pixels: its 8-byte pointer.
ROW_PIXELS = 2


def decode_cost(size: tuple[int, int]) -> int:
    """What decoding ``size`` allocates, in pixels: the pixels and each row's pointer."""
    return size[0] * size[1] + ROW_PIXELS * size[1]


def _mp(pixels: float) -> str:
    return f"{pixels / 1e6:.0f} MP" if pixels >= 1e7 else f"{pixels / 1e6:.1f} MP"


def bomb_message(size: tuple[int, int] | None = None, pixels: int | None = None) -> str:
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
    if limit is None or decode_cost(size) <= limit:
        return None
    if fmt not in ("jpeg", "mpo"):
        if w * h <= limit:  # the pixels fit; their row pointers do not
            return (
                f"decompression bomb: {w}x{h} has {h:,} rows, and Pillow keeps a pointer per "
                f"row: decoding it would allocate as much as {_mp(decode_cost(size))}, over "
                f"the {_mp(limit)} limit (PIL.Image.MAX_IMAGE_PIXELS)"
            )
        return bomb_message(size=size)
    if w * h > MAX_JPEG_PIXELS:
        return (
            f"decompression bomb: {w}x{h} = {_mp(w * h)} JPEG exceeds the {_mp(MAX_JPEG_PIXELS)} "
            "cap for JPEGs decoded in draft mode (visionkit.images.bombs.MAX_JPEG_PIXELS)"
        )
    smallest = next((s for s in (2, 4, 8) if decode_cost(_scaled(size, s)) <= limit), None)
    if smallest is None:
        return f"{bomb_message(size=size)}, even decoded at 1/8 scale"
    if decode_size is None or decode_cost(decode_size) <= limit:
        return None
    how = (
        "in full"
        if tuple(decode_size) == (w, h)
        else f"at {decode_size[0]}x{decode_size[1]} = {_mp(decode_size[0] * decode_size[1])}"
    )
    return (
        f"{bomb_message(size=size)} when decoded {how}; a JPEG this size is decoded at "
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
