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
   (PNG/GIF/WebP/TIFF decode in full; see ``visionkit.images.bombs`` for the rules).
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
written without them. The ICC colour profile is kept (what is dropped, per format:
``visionkit.images.metadata``). ``strip_metadata=False`` sends a passed-through file byte
for byte; a re-encoded image never carried EXIF or XMP (Pillow does not copy them), only a
JPEG's or GIF's comment.

Usage:

    from visionkit import encode_image
    uri = encode_image("photo.jpg")                       # for inference.net
    uris = df.vision.encode(max_tokens=3202)              # a Series, NA where a row failed
"""

from __future__ import annotations

import base64
import io
import itertools
import math
import threading
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from ..errors import EncodeWarning, ImageError, warn
from ..providers import DEFAULT_PROVIDER, Provider, fit_tokens, get_provider, same_tokens_size
from ..tokens import fit_within
from ..types import ImageCell, default_workers
from .bombs import decode_refusal
from .decode import (
    decode_opened,
    display_size,
    frame_count,
    open_cell,
    orientation,
    to_srgb,
)
from .formats import MIME_TYPES, image_format, png_chunks
from .metadata import strip_file_metadata
from .pil_errors import pil_errors
from .pil_messages import holding
from .prefetch import close as close_prefetch
from .prefetch import prefetched
from .table_refs import tables_call

__all__ = ["EncodeWarning", "encode_image", "encode_series"]

JPEG_QUALITY = 90
_QUALITY_STEPS = (90, 82, 75, 68, 60, 50)
# compact=True (batch jobs, where bytes bound the upload time): start at 75 (see bench_batch)
COMPACT_QUALITY = 75
_COMPACT_STEPS = (COMPACT_QUALITY, 68, 60, 50)
_MIN_SIDE = 16
_PASSTHROUGH_MODES = frozenset({"RGB", "L", "RGBA", "LA", "P", "1"})
_SAVE_NAMES = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "gif": "GIF"}


@dataclass(frozen=True)
class _Failed:
    """Why one row of ``encode_series`` failed: its reason, never the exception itself."""

    reason: str


# --------------------------------------------------------------------------------------------
# sizing and encoding


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
    mime = MIME_TYPES[fmt]
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _passable(data: bytes, fmt: str) -> bool:
    """Whether a file may be sent as it is, judged from its bytes: not an APNG container.

    An APNG whose ``acTL`` chunk is invalid (0 frames, say) is decoded by Pillow as its default
    image, with a warning, but strict decoders reject the file; a valid one-frame APNG gains
    nothing from its animation chunks. Either way it is re-encoded as a plain PNG.
    """
    return fmt != "png" or not any(kind == b"acTL" for kind, _, _ in png_chunks(data))


def _decodes(im: Image.Image) -> bool:
    """Decode ``im`` in full, raising the row's error if Pillow cannot ("truncated JPEG"), so
    that passthrough only ever sends what decodes. False (decode nothing) when that would be
    over the decompression-bomb limit: such a file is re-encoded, in draft mode if a JPEG."""
    if decode_refusal(im.size, image_format(im), im.size) is not None:
        return False
    im.load()
    return True


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


# An ICC profile over a tenth of the byte budget is converted away before encoding (the pixels
# to sRGB, the profile dropped); a smaller one is kept, unless dropping it is what lets the
# image fit without shrinking.
_ICC_SHARE = 10


def _icc_size(im: Image.Image) -> int:
    """Bytes of the ICC profile ``_save`` would write with ``im`` (0 when none is written)."""
    icc = im.info.get("icc_profile")
    return len(icc) if icc and im.mode in ("RGB", "RGBA") else 0


def _save(
    im: Image.Image, fmt: str, quality: int | None, strip: bool = True, compact: bool = False
) -> bytes:
    buf = io.BytesIO()
    kwargs: dict[str, Any] = {}
    if compact and fmt in ("jpeg", "png"):
        kwargs["optimize"] = True  # Huffman tables / zlib effort: smaller, pixels unchanged
    if compact and fmt == "jpeg":
        kwargs["progressive"] = True
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
    compact: bool = False,
) -> str:
    """Encode, then lower quality, then change PNG to a lossy format, then shrink, until the
    data URI fits ``budget``."""
    mime = MIME_TYPES[fmt]
    steps = _COMPACT_STEPS if compact else _QUALITY_STEPS
    qualities: tuple[int | None, ...] = steps if fmt in ("jpeg", "webp") else (None,)
    while True:
        data = b""
        for q in qualities:
            data = _save(im, fmt, q, strip, compact)
            if budget is None or _uri_length(len(data), mime) <= budget:
                return _data_uri(data, fmt)
        # A PNG too big for the budget: change format before shrinking (shrinking costs the
        # user resolution, a lossy format usually does not). JPEG when opaque; WebP keeps alpha.
        if fmt == "png" and requested == "auto":
            lossy = ("webp",) if im.mode in ("RGBA", "LA") else ("jpeg", "webp")
            for other in lossy:
                if other in allowed:
                    return _encode_to_budget(
                        _prepare(im, other), other, budget, other, allowed, strip, compact
                    )
        assert budget is not None
        icc = _icc_size(im)
        if icc and _uri_length(max(len(data) - icc, 0), mime) <= budget:
            # The colour profile is all that stands between this size and the budget (it rides
            # on every re-encode): convert the pixels to sRGB and drop it, rather than shrink.
            return _encode_to_budget(to_srgb(im), fmt, budget, requested, allowed, strip, compact)
        w, h = im.size
        ratio = math.sqrt(max(budget - 64, 1) / (4 / 3 * max(len(data), 1)))
        scale = min(0.9, max(0.5, ratio * 0.95))
        nw, nh = max(1, int(w * scale)), max(1, int(h * scale))
        if max(nw, nh) < _MIN_SIDE:
            raise ImageError(
                f"cannot fit within {budget:,} bytes even at {w}x{h} "
                f"({len(data):,} bytes as {fmt.upper()}"
                + (f", {icc:,} of them its ICC profile)" if icc else ")")
            )
        im = im.resize((nw, nh), Image.Resampling.LANCZOS)
        qualities = qualities[2:] or qualities  # start lower after shrinking


def encode_image(
    image: ImageCell,
    *,
    provider: str | Provider = DEFAULT_PROVIDER,
    max_side: int | None = None,
    max_tokens: int | None = None,
    max_bytes: int | None = None,
    format: str = "auto",
    strip_metadata: bool = True,
    compact: bool = False,
    row: object = None,
) -> str:
    """A ``data:`` URI of ``image`` that ``provider`` accepts (see the module docs for the rules).

    ``compact=True`` makes the file as small as it can be at the same token estimate (batch
    jobs, where bytes bound the upload time): the smallest size the provider prices the same
    (``providers.same_tokens_size``), JPEG/WebP quality 75 instead of 90, optimised Huffman
    tables and progressive JPEG, and no passthrough. What it costs in quality is measured by
    ``benchmarks/bench_batch.py`` (README, "Batch jobs").

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

    im, data, label = open_cell(image, row)
    with pil_errors(row, label) as ctx:
        real = ctx.format = image_format(im)
        orient = orientation(im)
        w, h = display_size(im, orient)
        tw, th = (w, h) if side is None else fit_within(w, h, side)
        if max_tokens is not None:
            tw, th = fit_tokens(tw, th, prov, max_tokens)
        if compact:
            tw, th = same_tokens_size(tw, th, prov)

        if (
            data is not None
            and not compact
            and real in prov.formats
            and requested in ("auto", real)
            and (tw, th) == (w, h)
            and orient == 1
            and im.mode in _PASSTHROUGH_MODES
            and frame_count(im) == 1
        ):
            # A file whose structure cannot be walked to its end is re-encoded instead.
            payload = strip_file_metadata(data, real) if strip_metadata else data
            if (
                payload is not None
                and (budget is None or _uri_length(len(payload), MIME_TYPES[real]) <= budget)
                and _passable(payload, real)
                and _decodes(im)  # raises "truncated JPEG" etc.; trailing junk alone is fine
            ):
                return _data_uri(payload, real)

        pixels = decode_opened(im, (tw, th), orient, own=data is not None)
        if budget is not None and _icc_size(pixels) * _ICC_SHARE > budget:
            pixels = to_srgb(pixels)  # a profile this big would crowd out the pixels
        fmt = _choose_format(pixels, requested, prov.formats)
        uri = _encode_to_budget(
            _prepare(pixels, fmt), fmt, budget, requested, prov.formats, strip_metadata, compact
        )
    return uri


# --------------------------------------------------------------------------------------------
# many images


def encode_series(
    images: pd.Series | Iterable[ImageCell],
    *,
    provider: str | Provider = DEFAULT_PROVIDER,
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
    options: dict[str, Any] = {
        "provider": prov,
        "max_side": max_side,
        "max_tokens": max_tokens,
        "max_bytes": max_bytes,
        "format": format,
        "strip_metadata": strip_metadata,
    }

    source = prefetched(cells, rows=labels)  # remote images read ahead of the decoders

    def one(i: int) -> str | _Failed:
        try:
            return encode_image(source[i], row=labels[i], **options)
        except ImageError as exc:
            if errors == "raise":
                raise
            # The reason only: the exception's traceback holds the frames that decoded the
            # image, pixels included (108 MB for a truncated 6000x6000 PNG), until it dies.
            return _Failed(exc.reason)

    n_workers = workers or default_workers()
    from tqdm.auto import tqdm

    bar = tqdm(total=len(cells), desc="encode", unit="img", disable=not progress, delay=1.0)
    try:
        # table references' files are closed when the call ends; Pillow's message hooks stay
        # installed for the pass (visionkit.images.pil_messages)
        with tables_call(), holding():
            results = _map_rows(one, len(cells), n_workers, bar)
    finally:
        bar.close()
        close_prefetch(source)

    failures = {labels[i]: r.reason for i, r in enumerate(results) if isinstance(r, _Failed)}
    values = [None if isinstance(r, _Failed) else r for r in results]
    out = pd.Series(values, index=series.index, dtype=object, name="data_uri")
    out.attrs["errors"] = failures
    if failures:
        shown = "; ".join(f"row {k!r}: {v}" for k, v in list(failures.items())[:10])
        more = f"; and {len(failures) - 10} more" if len(failures) > 10 else ""
        warn(
            f"{len(failures)} of {len(cells)} images could not be encoded and are NA: "
            f"{shown}{more}",
            EncodeWarning,
        )
    return out


def _result(future: Future[list[Any]]) -> list[Any]:
    """``future.result()`` in short waits: Ctrl-C (``KeyboardInterrupt`` in the main thread)
    is raised between them, not only once a whole chunk is done."""
    while True:
        try:
            return future.result(timeout=0.1)
        except FuturesTimeout:
            continue


_CHUNK = 64  # rows a task encodes at most (a future a row cost a fifth of a tiny image's time)


def _map_rows(one: Any, n: int, workers: int, bar: Any) -> list[Any]:
    """``[one(0), ..., one(n - 1)]`` on ``workers`` threads, in order, ticking ``bar``.

    Rows go to the threads a chunk at a time (small chunks when there are few rows, so large
    images still spread over every core), at most ``2 * workers`` chunks ahead of the one
    being collected: not a future per row, and not all of them at once.
    """
    results: list[Any] = []
    if workers <= 1 or n <= 1:
        for i in range(n):
            results.append(one(i))
            bar.update()
        return results
    size = max(1, min(_CHUNK, n // (workers * 8)))
    stop = threading.Event()  # an interrupt or a raised error: chunks end at their next row

    def run(start: int) -> list[Any]:
        out = []
        for i in range(start, min(n, start + size)):
            if stop.is_set():
                break
            out.append(one(i))
        return out

    starts = iter(range(0, n, size))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            ahead = deque(
                pool.submit(run, start) for start in itertools.islice(starts, 2 * workers)
            )
            while ahead:
                done = _result(ahead.popleft())
                start = next(starts, None)
                if start is not None:
                    ahead.append(pool.submit(run, start))
                results.extend(done)
                bar.update(len(done))
        except BaseException:
            stop.set()  # leaving the pool waits for the running chunks: let them end now
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return results
