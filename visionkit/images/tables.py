"""Image columns inside tables: Parquet files, Arrow columns, Hugging Face ``datasets``.

``read_images("data/*.parquet", image_column="image")`` and ``read_images(dataset,
image_column="image")`` read image headers straight from the table's values (no image is
written to disk). The column may hold ``{bytes, path}`` structs (how Hugging Face
``datasets`` stores its ``Image`` feature), raw binary values, or strings (paths or URLs).

**What the frame holds.** A row whose image bytes are inside the table gets a short
*reference* as its ``path``, not the bytes: ``data/train-00000.parquet#image[17]`` (row 17 of
that file's ``image`` column; the file may be local or remote) or
``dataset:<fingerprint>#image[17]`` (a ``datasets.Dataset`` read in this process). Every
image cell reader in visionkit resolves references when it needs the pixels (``encode``,
``ask``, thumbnails, the widgets; see ``table_refs``), so ``df.to_parquet(...)`` next to the
source writes a few bytes per row, not a second copy of the images. A row whose value names a
file (a path string, or a struct with a path and no bytes) gets that file's location, found
from the table's folder (``table_refs.table_path``). The table's other columns (labels,
captions, ids) come along.

**Paths a table names** are relative to the table's own folder, and by default must stay in
it (``confine_paths=True``): a table from elsewhere could otherwise make visionkit read a
private file (``{"bytes": null, "path": "/home/me/.ssh/id_rsa"}``) and send it to a model.
Such a row gets the error and nothing is read. http(s) URLs are read wherever they point (a
download opens nothing of the user's). A ``datasets.Dataset`` in memory has no folder: its
paths are taken as they are, as ``datasets`` itself does.

Dataset references resolve only in the process that called ``read_images`` (the Dataset is
kept alive for them); save it with ``dataset.to_parquet(...)`` for references that work
anywhere. Struct cells, as ``pd.read_parquet`` returns them (``{"bytes": b"...", "path":
"x.jpg"}``), are image cells too: ``df.vision`` works on such a column directly (their paths
are the user's own cells then, taken as they are).
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ImageError, ReadImagesWarning, warn
from .cells import find_image_column
from .headers import bytes_row, cell_rows
from .remote import is_remote_url, public_url
from .rows import COLUMNS, empty_row, frame
from .table_refs import open_table, register_dataset, table_path, table_reason, tables_call

__all__ = ["is_dataset", "read_table_images", "table_rows"]

_BATCH = 256


def is_dataset(source: Any) -> bool:
    return type(source).__module__.startswith("datasets.") and hasattr(source, "with_format")


@dataclass(frozen=True)
class _TableFile:
    path: str
    named: bool  # named on its own (a damaged one raises), not found by a glob or a listing


def table_rows(
    source: Any,
    column: str,
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> Iterator[tuple[str, str | None, Any, dict[str, Any]]]:
    """``(reference, table, value, other columns)`` for every row of a table source's image
    column; ``table`` is the Parquet file paths in it are relative to (None for a dataset).

    ``source`` is a ``datasets.Dataset``, or Parquet files: a path, URL, glob or a list. A
    damaged file named on its own raises ``ValueError`` naming it; one found by a glob or in a
    folder is left out with a ``ReadImagesWarning`` naming it and why.
    """
    if is_dataset(source):
        yield from _dataset_rows(source, column)
        return
    for table in _parquet_paths(source, storage_options):
        try:
            yield from _parquet_rows(table.path, column)
        except ImageError as exc:
            if table.named:
                raise ValueError(f"read_images: {exc.reason}") from None
            warn(f"read_images left out a table: {exc.reason}", ReadImagesWarning)


def _dataset_rows(dataset: Any, column: str) -> Iterator[tuple[str, None, Any, dict[str, Any]]]:
    if column not in dataset.column_names:
        raise KeyError(f"read_images: the dataset has no column {column!r}: {dataset.column_names}")
    key = register_dataset(dataset)
    others = [c for c in dataset.column_names if c != column]
    n = 0
    for batch in dataset.with_format("arrow").iter(batch_size=_BATCH):
        for ref, value, extra in _batch_rows(key, batch, column, others, n):
            yield ref, None, value, extra
        n += batch.num_rows


def _parquet_paths(source: Any, storage_options: Mapping[str, Any] | None) -> list[_TableFile]:
    from .remote import list_images, remember_options

    top = isinstance(source, (str, os.PathLike))
    items = [source] if top else list(source)
    out: list[_TableFile] = []
    for item in items:
        text = os.fspath(item)
        if is_remote_url(text):
            remember_options(text, storage_options)
            found = list_images(
                text, storage_options=storage_options, is_image_name=_is_parquet_name
            )
            named = top and len(found) == 1 and found[0][0] == text
            out.extend(_TableFile(url, named) for url in sorted(u for u, _ in found))
        elif re.search(r"[*?\[]", text):
            matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            if not matches:
                warn(f"read_images: {text} matches no file", ReadImagesWarning)
            out.extend(_TableFile(m, False) for m in matches if os.path.isfile(m))
        elif os.path.isdir(os.path.expanduser(text)):
            folder = os.path.expanduser(text)
            out.extend(
                _TableFile(p, False)
                for p in sorted(
                    os.path.join(root, f)
                    for root, _, files in os.walk(folder)
                    for f in files
                    if _is_parquet_name(f)
                )
            )
        elif os.path.exists(os.path.expanduser(text)):
            out.append(_TableFile(text, top))
        else:
            raise FileNotFoundError(f"read_images: no such file: {text}")
    return out


def _is_parquet_name(name: str) -> bool:
    return name.lower().endswith((".parquet", ".pq"))


def _parquet_rows(path: str, column: str) -> Iterator[tuple[str, str, Any, dict[str, Any]]]:
    with open_table(path) as pf:
        try:
            names = pf.schema_arrow.names
        except Exception as exc:
            raise ImageError(f"the table {public_url(path)}: {table_reason(exc)}") from None
        if column not in names:
            raise KeyError(
                f"read_images: {public_url(path)} has no column {column!r}; columns are {names}"
            )
        others = [c for c in names if c != column and _scalar(pf.schema_arrow.field(c).type)]
        n = 0
        batches = pf.iter_batches(batch_size=_BATCH, columns=[column, *others])
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except Exception as exc:
                raise ImageError(
                    f"the table {public_url(path)} from row {n} on: {table_reason(exc)}"
                ) from None
            for ref, value, extra in _batch_rows(path, batch, column, others, n):
                yield ref, path, value, extra
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
) -> Iterator[tuple[str, Any, dict[str, Any]]]:
    values = batch.column(column)  # converted one value at a time: images may be big
    extra = {c: batch.column(c).to_pylist() for c in others if _scalar(batch.column(c).type)}
    for i in range(batch.num_rows):
        value = values[i].as_py()
        yield f"{source}#{column}[{offset + i}]", value, {c: v[i] for c, v in extra.items()}


def _named_path(value: Any) -> str | None:
    """The file a table value names instead of holding its bytes (None when it holds them)."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and not value.get("bytes") and value.get("path"):
        path = value["path"]
        return path if isinstance(path, str) else None
    return None


def read_table_images(
    source: Any,
    column: str | None,
    *,
    storage_options: Mapping[str, Any] | None = None,
    concurrency: int | None = None,
    confine_paths: bool = True,
) -> Any:
    """``read_images`` for a table source: header columns plus the table's other columns."""
    import pandas as pd

    from .cells import table_value_bytes

    if column is None:
        if not is_dataset(source):
            raise ValueError(
                "read_images: name the image column of a Parquet file (image_column=...)"
            )
        column = find_image_column(pd.DataFrame(columns=source.column_names), who="read_images")
    rows: list[dict[str, Any] | None] = []
    extras: list[dict[str, Any]] = []
    named: dict[int, str] = {}  # row position -> the file its value names, read in bulk below
    with tables_call():
        for ref, table, value, other in table_rows(source, column, storage_options=storage_options):
            extras.append(other)
            path = _named_path(value)
            if path is not None:
                try:
                    named[len(rows)] = table_path(path, table, confine=confine_paths)
                    rows.append(None)
                except ImageError as exc:
                    rows.append(empty_row(ref) | {"error": exc.reason})
                continue
            try:
                data = table_value_bytes(value, table, row=None)
            except ImageError as exc:
                rows.append(empty_row(ref) | {"error": exc.reason})
                continue
            rows.append(bytes_row(ref, data))
        if named:
            found = cell_rows(
                list(named.values()), storage_options=storage_options, concurrency=concurrency
            )
            for i, row in zip(named, found, strict=True):
                rows[i] = row
    result = frame([r for r in rows if r is not None])
    if extras and extras[0]:
        more = pd.DataFrame(extras, index=result.index)
        more.columns = [f"{c}_table" if c in COLUMNS else c for c in more.columns]
        result = pd.concat([result, more], axis=1)
    return result
