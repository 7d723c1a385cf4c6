"""Helpers shared by the widgets: check the DataFrame given, pick rows of it, format captions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..images.cells import find_image_column

__all__ = ["RowFilter", "find_image_column", "format_value", "require_frame", "row_mask"]

# Which rows a widget shows: a ``DataFrame.query`` string (or a widget's own word such as
# ``"unlabelled"``), a boolean mask (a Series aligned on the index, or one entry per row), or
# ``None`` for every row.
RowFilter = str | pd.Series | np.ndarray | Sequence[bool] | None


def require_frame(df: Any, who: str) -> None:
    """Raise ``TypeError`` unless ``df`` is a DataFrame (``who`` names the widget)."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{who} needs a DataFrame, not {type(df).__name__}")


def row_mask(df: pd.DataFrame, where: Any) -> np.ndarray:
    """A boolean array over ``df``'s rows from a ``DataFrame.query`` string or a boolean mask.

    A boolean Series is aligned on the index (rows it does not mention are left out); a list
    or array must have one entry per row. ``None`` selects every row.
    """
    n = len(df)
    if where is None:
        return np.ones(n, dtype=bool)
    if isinstance(where, str):
        if not where.strip():
            return np.ones(n, dtype=bool)
        try:
            result = df.eval(where)
        except Exception as exc:
            raise ValueError(f"filter {where!r} failed: {type(exc).__name__}: {exc}") from None
        if not isinstance(result, pd.Series) or len(result) != n:
            raise ValueError(f"filter {where!r} must give one True/False per row, not {result!r}")
        where = result
    if isinstance(where, pd.Series):
        if where.index.equals(df.index):
            values = where
        elif where.index.is_unique and df.index.is_unique:
            values = where.reindex(df.index)
        else:
            raise ValueError(
                "a boolean Series filter needs the DataFrame's index (or a unique one)"
            )
        if not (pd.api.types.is_bool_dtype(values) or values.dtype == object):
            raise ValueError(f"a filter must be True/False per row, not {values.dtype} values")
        values = values.astype("boolean").fillna(False)
        return values.to_numpy(dtype=bool)
    values = np.asarray(where)
    if values.dtype != bool or values.shape != (n,):
        raise ValueError(
            f"a filter must be a query string or {n} booleans, not {values.dtype} {values.shape}"
        )
    return values


def format_value(value: Any) -> str:
    """A short caption text for one cell."""
    if value is None or (np.ndim(value) == 0 and pd.isna(value)):
        return "—"
    if isinstance(value, float | np.floating):
        return f"{value:.4g}"
    if isinstance(value, bytes | bytearray):
        return f"<{len(value):,} bytes>"
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."
