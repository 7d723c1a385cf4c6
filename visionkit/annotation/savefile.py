"""The Annotator's save file: labels keyed by the DataFrame index (and path), written atomically.

The file has the columns ``index`` (the index label as text), ``path`` (when the DataFrame has a
``path`` column) and the label column; blank means unlabelled. It is written to a temporary file
beside the target and moved over it with ``os.replace``, so a crash or a kernel interrupt leaves
either the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["file_format", "read_labels", "row_keys", "write_labels"]

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def file_format(path: Path) -> str:
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise ValueError(
            f"save={str(path)!r}: the file name must end in .csv or .parquet"
        ) from None


def row_keys(df: pd.DataFrame, with_path: bool) -> list[tuple[str, ...]]:
    """One key per row: the index label as text, plus the path when ``with_path``."""
    index = [str(v) for v in df.index]
    if not with_path:
        return [(i,) for i in index]
    return list(zip(index, (str(p) for p in df["path"]), strict=True))


def read_labels(path: Path, column: str) -> pd.DataFrame:
    """The save file as text columns (``None`` where blank)."""
    if file_format(path) == "csv":
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    else:
        frame = pd.read_parquet(path)
    if "index" not in frame.columns or column not in frame.columns:
        raise ValueError(
            f"{path} is not an Annotator save file for column {column!r}: it has the columns "
            f"{list(frame.columns)}, and needs 'index' and {column!r}"
        )
    frame = frame.astype(object)
    return frame.where(frame.notna() & (frame != ""), None)


def write_labels(path: Path, frame: pd.DataFrame) -> None:
    """Write ``frame`` to ``path`` (CSV or parquet by suffix) atomically."""
    kind = file_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        text: dict[str, Any] = {"newline": ""} if kind == "csv" else {}
        with os.fdopen(fd, "w" if kind == "csv" else "wb", **text) as f:
            if kind == "csv":
                frame.to_csv(f, index=False)
            else:
                frame.astype({c: "string" for c in frame.columns}).to_parquet(f, index=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
