"""Type aliases and small shared helpers used in signatures across the package.

``ImageCell`` is anything an image column may hold, and the type of every public parameter
that takes one image (``vk.encode_image(image)``, ``vk.thumbnail(image)``): a path or URL
(``str`` or ``os.PathLike``; http(s), fsspec URLs, ``data:`` URIs and table references such as
``x.parquet#image[3]`` are strings), the file's bytes, a PIL image, or a ``{bytes, path}``
mapping as Parquet image columns read into pandas. ``is_missing`` is the one test for an
empty cell (None, NaN, ``pd.NA``, ``pd.NaT``); ``default_workers`` sizes every thread pool.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["ImageCell", "default_workers", "is_missing"]

ImageCell = Union[
    str, "os.PathLike[str]", bytes, bytearray, memoryview, "Image.Image", Mapping[str, Any]
]


def is_missing(value: Any) -> bool:
    """True for None, float NaN, ``pd.NA`` and ``pd.NaT`` (not for empty strings or 0)."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        return False
    return value is pd.NA or value is pd.NaT


def default_workers(limit: int = 8, *, minimum: int = 1) -> int:
    """Threads for CPU-bound image work: one per core, between ``minimum`` and ``limit``."""
    return max(minimum, min(limit, os.cpu_count() or 1))
