"""Pillow's and the OS's exceptions, translated into ``ImageError`` in one place."""

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

__all__ = ["pil_errors"]


@dataclass
class _ErrorContext:
    """What ``pil_errors`` knows about the image being read (filled in as it is learnt)."""

    row: object = None
    source: object = None
    format: str | None = None
    head: bytes | None = None


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
        raise fail(bomb_message(pixels=int(m.group(1)) if m else None), exc) from exc
    except Image.DecompressionBombWarning as exc:  # raised because we turn it into an error
        m = re.search(r"\((\d+) pixels\)", str(exc))
        raise fail(bomb_message(pixels=int(m.group(1)) if m else None), exc) from exc
    except UnidentifiedImageError as exc:
        raise fail(describe_non_image(ctx.head or b""), exc) from exc
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
