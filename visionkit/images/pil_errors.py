"""Pillow's and the OS's exceptions, translated into ``ImageError`` in one place.

The rule: *any* exception raised while reading, decoding or encoding one image cell is that
row's ``ImageError`` (with the original as its ``__cause__``), never an escape that ends the
whole call. Pillow raises far more than ``OSError``: ``NotImplementedError`` for DDS textures
in a DXGI format it lacks, ``SyntaxError``/``struct.error``/``IndexError`` from fuzzed headers,
``ValueError`` for odd modes. Only ``BaseException`` that is not an ``Exception``
(``KeyboardInterrupt``, ``SystemExit``) passes. What Pillow and libtiff say on the side while
doing so (warnings, libtiff's C messages) is captured per thread (``pil_messages``) and added
to the reason when the row fails.
"""

from __future__ import annotations

import contextlib
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from ..errors import ImageError
from .bombs import bomb_message
from .formats import describe_non_image
from .pil_messages import capture

__all__ = ["describe_unidentified", "pil_errors"]


@dataclass
class _ErrorContext:
    """What ``pil_errors`` knows about the image being read (filled in as it is learnt)."""

    row: object = None
    source: object = None
    format: str | None = None
    head: bytes | None = None


@contextlib.contextmanager
def pil_errors(row: object = None, source: object = None) -> Iterator[_ErrorContext]:
    """Translate every exception from Pillow and the OS into ``ImageError(row=, source=)``.

    The one place that knows Pillow's exception zoo. Callers may set ``ctx.format`` and
    ``ctx.head`` on the yielded context so messages can say "truncated JPEG". Pillow's
    warnings and libtiff's messages inside the block are captured, not printed.
    """
    ctx = _ErrorContext(row=row, source=source)
    with capture() as notes:
        try:
            yield ctx
        except ImageError as exc:
            if exc.row is None and ctx.row is not None:
                raise ImageError(exc.reason, row=ctx.row, source=ctx.source) from exc
            raise
        except Exception as exc:
            reason = _reason(exc, ctx)
            if notes:
                reason += f" [{'; '.join(notes)}]"
            raise ImageError(reason, row=ctx.row, source=ctx.source) from exc


def _reason(exc: Exception, ctx: _ErrorContext) -> str:
    """Why reading the image failed, in words, from the exception Pillow or the OS raised."""
    known = None if ctx.format or not ctx.head else _plugin_accepting(ctx.head)
    fmt = _format_name(ctx.format or (known[0] if isinstance(known, tuple) else None))
    text = str(exc)
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, IsADirectoryError):
        return "is a directory, not an image file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        # (the warning is raised, not shown, when the user's filters turn warnings into errors)
        m = re.search(r"\((\d+) pixels\)", text)
        return bomb_message(pixels=int(m.group(1)) if m else None)
    if isinstance(exc, UnidentifiedImageError):
        return describe_unidentified(ctx.head or b"")
    if isinstance(exc, MemoryError):
        return "too large to decode (out of memory)"
    if isinstance(exc, NotImplementedError):
        return f"unsupported {fmt} variant ({text or 'not implemented by Pillow'})"
    if isinstance(exc, (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError)):
        if "truncated" in text.lower() or isinstance(exc, EOFError):
            return f"truncated {fmt}"
        if "broken data stream" in text or "decoder error" in text.lower():
            return f"corrupt {fmt} data ({text})"
    return f"cannot read {fmt}: {type(exc).__name__}: {text}"


# Pillow's format names, as people write them.
_FRIENDLY = {"JPEG2000": "JPEG 2000", "HEIF": "HEIF/HEIC"}


def _format_name(fmt: str | None) -> str:
    name = (fmt or "image").upper()
    return _FRIENDLY.get(name, "JPEG 2000" if name == "JP2" else name)


def describe_unidentified(head: bytes) -> str:
    """Why Pillow could not open a file starting with ``head``, in words.

    A format plugin that recognises the first bytes (PSD's ``8BPS``, JPEG 2000's signature box,
    ...) means the file *is* that format but its header is broken: "corrupt PSD". A format
    Pillow has no plugin for (HEIC without pillow-heif) is "unsupported"; anything else says
    what it looks like ("not an image (looks like a PDF)").
    """
    if head:
        known = _plugin_accepting(head)
        if isinstance(known, tuple):
            return f"corrupt {_format_name(known[0])} (Pillow cannot read its header)"
        if isinstance(known, str):  # a plugin that knows the format but lacks its library
            return f"unsupported image format ({known})"
    return describe_non_image(head)


def _plugin_accepting(head: bytes) -> tuple[str] | str | None:
    """``(format,)`` of the first Pillow plugin that accepts ``head`` as its format, a plugin's
    own reason it cannot open it (Pillow's accept functions may return one), or None."""
    Image.init()
    prefix = head[:16]  # what Image.open gives the accept functions
    for fmt in Image.ID:
        accept = Image.OPEN[fmt][1]
        if accept is None:  # plugins that accept anything (TGA, IM, ...) prove nothing
            continue
        try:
            verdict = accept(prefix)
        except Exception:
            continue
        if isinstance(verdict, str):
            return verdict
        if verdict:
            return (fmt,)
    return None
