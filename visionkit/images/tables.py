"""Image columns inside tables: Parquet files, Arrow columns, Hugging Face ``datasets``.

``read_images("data/*.parquet", image_column="image")`` and ``read_images(dataset,
image_column="image")`` read image headers straight from the table's values (no image is
written to disk). The column may hold ``{bytes, path}`` structs (how Hugging Face
``datasets`` stores its ``Image`` feature), raw binary values, or strings (paths or URLs, read
like any other cell).

**What the frame holds.** Each row's ``path`` is a short *reference* to the value, not the
bytes: ``data/train-00000.parquet#image[17]`` (row 17 of that file's ``image`` column; the
file may be local or remote) or ``dataset:<fingerprint>#image[17]`` (row 17 of a
``datasets.Dataset`` read in this process). Every image cell reader in visionkit resolves
references when it needs the pixels (``encode``, ``ask``, thumbnails, the widgets), so
``df.to_parquet(...)`` next to the source writes a few bytes per row, not a second copy of
the images. The table's other columns (labels, captions, ids) come along.

Resolving a Parquet reference reads the row group that holds it (``datasets`` writes 100
images per row group), so the last few row groups read are kept (up to ``CACHE_BYTES``): in
row order, each row group is read once. Dataset references resolve only in the process that
called ``read_images`` (the Dataset is kept alive for them); save it with
``dataset.to_parquet(...)`` for references that work anywhere.

Struct cells, as ``pd.read_parquet`` returns them (``{"bytes": b"...", "path": "x.jpg"}``),
are image cells too: ``df.vision`` works on such a column directly.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .._state import register
from ..errors import ImageError, ReadImagesWarning

__all__ = [
    "CACHE_BYTES",
    "is_table_ref",
    "read_ref",
    "struct_bytes",
    "table_rows",
]

CACHE_BYTES = 256 * 1024 * 1024
_BATCH = 256

_REF = re.compile(
    r"^(?P<source>.+\.(?:parquet|pq)|dataset:[0-9a-zA-Z_\-]+)#(?P<column>[^#\[\]]+)\[(?P<row>\d+)\]$"
)


@dataclass(frozen=True)
class TableRef:
    source: str  # a Parquet file's path or URL, or "dataset:<fingerprint>"
    column: str
    row: int

    def __str__(self) -> str:
        return f"{self.source}#{self.column}[{self.row}]"


def is_table_ref(cell: Any) -> bool:
    return isinstance(cell, str) and "#" in cell and _REF.match(cell) is not None


def parse_ref(cell: str) -> TableRef:
    m = _REF.match(cell)
    if m is None:
        raise ImageError(f"not a table reference: {cell[:80]!r}")
    return TableRef(m.group("source"), m.group("column"), int(m.group("row")))


def struct_bytes(value: Mapping[str, Any], *, row: object = None) -> bytes:
    """The image bytes of a ``{bytes, path}`` value: its bytes, else the file its path names."""
    data = value.get("bytes")
    if data:
        return bytes(data)
    path = value.get("path")
    if path:
        from .cells import read_bytes

        return read_bytes(path, row=row)
    raise ImageError("no image (a struct with neither bytes nor path)")


# --------------------------------------------------------------------------------------------
# resolving references


_DATASETS: dict[str, Any] = {}
_DATASETS_LOCK = threading.Lock()


def _register_dataset(dataset: Any) -> str:
    key = f"dataset:{dataset._fingerprint}"
    with _DATASETS_LOCK:
        _DATASETS[key] = dataset
    return key


class _RowGroups:
    """The last row groups read, up to ``CACHE_BYTES`` of Arrow memory, and one lock per key so
    that threads wanting the same row group read it once."""

    def __init__(self) -> None:
        self._data: OrderedDict[tuple, Any] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._loading: dict[tuple, threading.Lock] = {}

    def get(self, key: tuple, load: Any) -> Any:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                if key in self._data:
                    return self._data[key]
            value = load()
            size = getattr(value, "nbytes", 0)
            with self._lock:
                self._loading.pop(key, None)
                self._data[key] = value
                self._bytes += size
                while self._bytes > CACHE_BYTES and len(self._data) > 1:
                    _, old = self._data.popitem(last=False)
                    self._bytes -= getattr(old, "nbytes", 0)
            return value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0

    def size(self) -> tuple[int, int]:
        """(row groups held, their Arrow bytes)."""
        with self._lock:
            return len(self._data), self._bytes


_CACHE = _RowGroups()


def read_ref(cell: str, *, row: object = None) -> bytes:
    """The image bytes a table reference points at (see the module docs)."""
    ref = parse_ref(cell)
    if ref.source.startswith("dataset:"):
        with _DATASETS_LOCK:
            dataset = _DATASETS.get(ref.source)
        if dataset is None:
            raise ImageError(
                "the dataset this row refers to was read in another Python process; "
                "read it again with read_images(dataset, image_column=...)"
            )
        if ref.row >= len(dataset):
            raise ImageError(f"row {ref.row} is past the dataset's end ({len(dataset)} rows)")
        value = dataset.with_format("arrow")[ref.row][ref.column][0].as_py()
    else:
        value = _parquet_value(ref)
    return _cell_bytes(value, row=row)


def _parquet_value(ref: TableRef) -> Any:
    pf = _parquet_file(ref.source)
    meta = pf.metadata
    start = 0
    for group in range(meta.num_row_groups):
        n = meta.row_group(group).num_rows
        if ref.row < start + n:
            if ref.column not in pf.schema_arrow.names:
                raise ImageError(f"{ref.source} has no column {ref.column!r}")
            column = _CACHE.get(
                (ref.source, group, ref.column, _stamp(ref.source)),
                lambda g=group: pf.read_row_group(g, columns=[ref.column]).column(0),
            )
            return column[ref.row - start].as_py()
        start += n
    raise ImageError(f"row {ref.row} is past the end of {ref.source} ({start} rows)")


def _cell_bytes(value: Any, *, row: object) -> bytes:
    if value is None:
        raise ImageError("no image (missing value)")
    if isinstance(value, Mapping):
        return struct_bytes(value, row=row)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        from .cells import read_bytes

        return read_bytes(value, row=row)
    raise ImageError(f"a table value of type {type(value).__name__} is not an image")


_FILES: dict[tuple[str, object], Any] = {}
_FILES_LOCK = threading.Lock()


def _parquet_file(source: str) -> Any:
    import pyarrow.parquet as pq

    key = (source, _stamp(source))
    with _FILES_LOCK:
        pf = _FILES.get(key)
    if pf is None:
        pf = pq.ParquetFile(_open(source))
        with _FILES_LOCK:
            _FILES[key] = pf
    return pf


def _open(source: str) -> Any:
    from .remote import filesystem, is_remote_url

    if is_remote_url(source):
        fs, path = filesystem(source)
        try:
            return fs.open(path, "rb")
        except FileNotFoundError:
            raise ImageError(f"file not found: {source}") from None
    import os

    try:
        return open(os.path.expanduser(source), "rb")
    except FileNotFoundError:
        raise ImageError(f"file not found: {source}") from None


def _stamp(source: str) -> object:
    """Changes when a local file is rewritten (so a stale row group is never served)."""
    import os

    from .remote import is_remote_url

    if is_remote_url(source):
        return None
    try:
        st = os.stat(os.path.expanduser(source))
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


# --------------------------------------------------------------------------------------------
# reading headers from tables


def is_dataset(source: Any) -> bool:
    return type(source).__module__.startswith("datasets.") and hasattr(source, "with_format")


def table_rows(
    source: Any,
    column: str,
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> Iterator[tuple[str | None, Any, dict[str, Any]]]:
    """``(reference, value, other columns)`` for every row of a table source's image column.

    ``source`` is a ``datasets.Dataset``, or Parquet files: a path, URL, glob or a list.
    The reference is None for string columns (the value is then the cell itself).
    """
    if is_dataset(source):
        yield from _dataset_rows(source, column)
        return
    for path in _parquet_paths(source, storage_options):
        yield from _parquet_rows(path, column)


def _dataset_rows(dataset: Any, column: str) -> Iterator[tuple[str | None, Any, dict[str, Any]]]:
    if column not in dataset.column_names:
        raise KeyError(f"read_images: the dataset has no column {column!r}: {dataset.column_names}")
    key = _register_dataset(dataset)
    others = [c for c in dataset.column_names if c != column]
    arrow = dataset.with_format("arrow")
    n = 0
    for batch in arrow.iter(batch_size=_BATCH):
        yield from _batch_rows(key, batch, column, others, n)
        n += batch.num_rows


def _parquet_paths(source: Any, storage_options: Mapping[str, Any] | None) -> list[str]:
    import glob
    import os

    from .remote import is_remote_url, list_images, remember_options

    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    out: list[str] = []
    for item in items:
        text = os.fspath(item)
        if is_remote_url(text):
            remember_options(text, storage_options)
            found = list_images(
                text, storage_options=storage_options, is_image_name=_is_parquet_name
            )
            out.extend(sorted(url for url, _ in found))
        elif re.search(r"[*?\[]", text):
            matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            if not matches:
                import warnings

                warnings.warn(
                    f"read_images: {text} matches no file", ReadImagesWarning, stacklevel=4
                )
            out.extend(m for m in matches if os.path.isfile(m))
        elif os.path.isdir(os.path.expanduser(text)):
            folder = os.path.expanduser(text)
            out.extend(
                sorted(
                    os.path.join(root, f)
                    for root, _, files in os.walk(folder)
                    for f in files
                    if _is_parquet_name(f)
                )
            )
        elif os.path.exists(os.path.expanduser(text)):
            out.append(text)
        else:
            raise FileNotFoundError(f"read_images: no such file: {text}")
    return out


def _is_parquet_name(name: str) -> bool:
    return name.lower().endswith((".parquet", ".pq"))


def _parquet_rows(path: str, column: str) -> Iterator[tuple[str | None, Any, dict[str, Any]]]:
    pf = _parquet_file(path)
    names = pf.schema_arrow.names
    if column not in names:
        raise KeyError(f"read_images: {path} has no column {column!r}; columns are {names}")
    others = [c for c in names if c != column and _scalar(pf.schema_arrow.field(c).type)]
    n = 0
    for batch in pf.iter_batches(batch_size=_BATCH, columns=[column, *others]):
        yield from _batch_rows(path, batch, column, others, n)
        n += batch.num_rows


def _scalar(kind: Any) -> bool:
    """Columns worth carrying along: not binary blobs or nested values (other images)."""
    import pyarrow as pa

    return not (
        pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_nested(kind)
        or (pa.types.is_dictionary(kind) and pa.types.is_binary(kind.value_type))
    )


def _batch_rows(
    source: str, batch: Any, column: str, others: list[str], offset: int
) -> Iterator[tuple[str | None, Any, dict[str, Any]]]:
    import pyarrow as pa

    values = batch.column(column)
    kind = values.type
    strings = pa.types.is_string(kind) or pa.types.is_large_string(kind)
    extra = {c: batch.column(c).to_pylist() for c in others if _scalar(batch.column(c).type)}
    for i in range(batch.num_rows):
        value = values[i].as_py()
        ref = None if strings else f"{source}#{column}[{offset + i}]"
        yield ref, value, {c: v[i] for c, v in extra.items()}


def read_table_images(
    source: Any, column: str | None, *, storage_options: Mapping[str, Any] | None = None
) -> Any:
    """``read_images`` for a table source: header columns plus the table's other columns."""
    import pandas as pd

    from .cells import find_image_column
    from .decode import open_bytes
    from .formats import sniff_format
    from .read import COLUMNS, _cell_row, _empty_row, _frame, header_info

    if column is None:
        if not is_dataset(source):
            raise ValueError(
                "read_images: name the image column of a Parquet file (image_column=...)"
            )
        column = find_image_column(pd.DataFrame(columns=source.column_names), who="read_images")
    rows: list[dict[str, Any]] = []
    extras: list[dict[str, Any]] = []
    for ref, value, other in table_rows(source, column, storage_options=storage_options):
        extras.append(other)
        if ref is None:
            rows.append(_cell_row(value))
            continue
        row = _empty_row(ref)
        try:
            data = _cell_bytes(value, row=None)
            row["bytes"] = len(data)
            row["format"] = sniff_format(data[:32])
            with open_bytes(data, source=ref, check=False) as im:
                row.update(header_info(im))
        except ImageError as exc:
            row["error"] = exc.reason
        rows.append(row)
    frame = _frame(rows)
    if extras and extras[0]:
        more = pd.DataFrame(extras, index=frame.index)
        more.columns = [f"{c}_table" if c in COLUMNS else c for c in more.columns]
        frame = pd.concat([frame, more], axis=1)
    return frame


def _held_datasets() -> tuple[int, str]:
    with _DATASETS_LOCK:
        keys = sorted(_DATASETS)
    return len(keys), ", ".join(keys)


def _forget_datasets() -> None:
    with _DATASETS_LOCK:
        _DATASETS.clear()


def _held_tables() -> tuple[int, str]:
    with _FILES_LOCK:
        files = len(_FILES)
    groups, nbytes = _CACHE.size()
    return files + groups, f"{files} open Parquet files, {groups} row groups ({nbytes:,} bytes)"


def _forget_tables() -> None:
    with _FILES_LOCK:
        _FILES.clear()
    _CACHE.clear()


register("datasets", __name__, _held_datasets, _forget_datasets)
register("table row groups and files", __name__, _held_tables, _forget_tables)
