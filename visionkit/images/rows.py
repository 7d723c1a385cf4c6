"""The header-row schema: ``read_images``' columns, one row per image, and the frame of rows.

Every reader of headers (local files and cells: ``headers``; remote objects:
``remote_headers``; tables: ``tables``) fills the same dict, ``empty_row(path)`` updated with
``header_info(im)`` or an ``error``, and ``frame(rows)`` turns a list of them into the
DataFrame with the documented dtypes.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from PIL import Image

from .bombs import decode_refusal
from .decode import display_size, frame_count
from .formats import image_format

__all__ = ["COLUMNS", "INT_COLUMNS", "empty_row", "frame", "header_info"]

COLUMNS = ["path", "format", "width", "height", "mode", "frames", "bytes", "error"]
INT_COLUMNS = ["width", "height", "frames", "bytes"]


def empty_row(path: str | None) -> dict[str, Any]:
    """A row with every column None but ``path``."""
    return dict.fromkeys(COLUMNS) | {"path": path}


def header_info(im: Image.Image) -> dict[str, Any]:
    """format, width, height (as displayed), mode, frames and error of an opened image.

    ``error`` says why the image cannot be decoded within ``PIL.Image.MAX_IMAGE_PIXELS`` at
    any scale (a PNG bomb; a 108 MP JPEG is fine: it decodes in draft mode), else None. Such
    an image's frames are not counted (for a GIF that would walk the oversized frames).
    """
    w, h = display_size(im)
    error = decode_refusal(im.size, image_format(im))
    frames = frame_count(im) if error is None else None
    return {
        "format": image_format(im),
        "width": w,
        "height": h,
        "mode": im.mode,
        "frames": frames,
        "error": error,
    }


def frame(rows: list[dict[str, Any]], index: pd.Index | None = None) -> pd.DataFrame:
    """The DataFrame of ``rows``: nullable ``Int64`` for counts, ``object`` for text."""
    # Text columns stay ``object`` with None for missing values on every pandas version
    # (pandas 3 would infer its ``str`` dtype for some frames and not others, e.g. empty ones).
    columns = {}
    for col in COLUMNS:
        values = [r[col] for r in rows]
        dtype = "Int64" if col in INT_COLUMNS else object
        columns[col] = (
            pd.Series(values, index=index, dtype=dtype)
            if rows
            else pd.Series([], index=index, dtype=dtype)
        )
    return pd.DataFrame(columns, index=index if rows else None)
