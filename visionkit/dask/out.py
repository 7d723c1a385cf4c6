"""``out=``: each finished partition written as Parquet at once, and skipped when run again.

Layout (local folder or object storage, any fsspec URL):

    out/_visionkit.json        what call wrote here: prompt, provider, model, options (no key)
    out/part.0.parquet         partition 0's result, written the moment it finished
    out/part.1.parquet         ...

``dd.read_parquet(out)`` reads them back as one frame (``_``-prefixed files are skipped).

Each part file carries, in its Parquet metadata, the fingerprint of the call and of the
partition's rows (index labels and image cells). Running the same call again reads a part
whose fingerprints match instead of running the partition: a part with no error is returned as
it is; in a part with errors only the failed rows are asked again (the answered ones are taken
from the file, so not even a cache look-up is needed -- which matters when the workers'
caches are on different machines). A part whose rows changed (the listing grew) is redone;
the answer cache makes its unchanged rows free. ``_visionkit.json`` from a different call
makes ``ask`` refuse the folder before anything runs.

A part file is written to a temporary name and renamed on local disks; on object storage one
PUT is atomic anyway. The files hold answers and usage, never image bytes or the key.
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

__all__ = ["MANIFEST", "check_out", "conform", "read_part", "rows_fingerprint", "write_part"]

MANIFEST = "_visionkit.json"
_META_KEY = b"visionkit"


def _fs(out: str) -> tuple[Any, str]:
    from ..images.remote import filesystem, is_remote_url

    if is_remote_url(out):
        return filesystem(out)
    import fsspec.implementations.local

    fs = fsspec.implementations.local.LocalFileSystem()
    return fs, fs._strip_protocol(out)


def check_out(out: str, fingerprint: str, description: Mapping[str, Any]) -> None:
    """Make ``out`` (or check it holds this call's results); raises on another call's folder."""
    fs, root = _fs(out)
    manifest = f"{root.rstrip('/')}/{MANIFEST}"
    if fs.exists(manifest):
        with fs.open(manifest, "rb") as f:
            found = json.loads(f.read())
        if found.get("fingerprint") != fingerprint:
            raise ValueError(
                f"out={out!r} holds the results of another call ({found.get('prompt')!r}, "
                f"model {found.get('model')!r}); use another folder for this one, or delete it"
            )
        return
    fs.makedirs(root, exist_ok=True)
    body = json.dumps({"fingerprint": fingerprint, **description}, indent=1, default=str)
    with fs.open(manifest, "wb") as f:
        f.write(body.encode())


def _part(root: str, number: int) -> str:
    return f"{root.rstrip('/')}/part.{number}.parquet"


def rows_fingerprint(part: pd.DataFrame, columns: Sequence[str]) -> str:
    """What a partition holds: its index labels and image cells (bytes by digest)."""
    h = hashlib.sha256()
    h.update(repr(part.index.tolist()).encode())
    for col in columns:
        for cell in part[col].tolist():
            if isinstance(cell, (bytes, bytearray, memoryview)):
                h.update(b"b" + hashlib.sha256(bytes(cell)).digest())
            elif isinstance(cell, Mapping) and isinstance(cell.get("bytes"), bytes):
                h.update(b"m" + hashlib.sha256(cell["bytes"]).digest())
            else:
                h.update(b"s" + str(cell).encode())
    return h.hexdigest()


def read_part(out: str, number: int, fingerprint: str, rows: str) -> pd.DataFrame | None:
    """Partition ``number``'s stored result if it was written by this call for these rows."""
    import pyarrow.parquet as pq

    fs, root = _fs(out)
    path = _part(root, number)
    try:
        with fs.open(path, "rb") as f:
            table = pq.read_table(f)
    except FileNotFoundError:
        return None
    meta = json.loads((table.schema.metadata or {}).get(_META_KEY, b"{}"))
    if meta.get("fingerprint") != fingerprint or meta.get("rows") != rows:
        return None
    return table.to_pandas()


def write_part(out: str, number: int, frame: pd.DataFrame, fingerprint: str, rows: str) -> None:
    """Write partition ``number``'s result now (atomically on local disks)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, root = _fs(out)
    table = pa.Table.from_pandas(frame, preserve_index=True)
    extra = json.dumps({"fingerprint": fingerprint, "rows": rows}).encode()
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), _META_KEY: extra})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    path = _part(root, number)
    if getattr(fs, "protocol", None) in ("file", ("file", "local")) or fs.__class__.__name__ == (
        "LocalFileSystem"
    ):
        tmp = f"{root.rstrip('/')}/.part.{number}.{uuid.uuid4().hex[:8]}.tmp"
        with fs.open(tmp, "wb") as f:
            f.write(buffer.getvalue())
        fs.mv(tmp, path)
    else:
        with fs.open(path, "wb") as f:
            f.write(buffer.getvalue())


def conform(frame: pd.DataFrame, meta: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``meta``'s columns and dtypes (text as ``object`` with None, as ``ask``
    gives it; Parquet and pandas 3 would bring back ``str``)."""
    out = {}
    for col, dtype in meta.dtypes.items():
        values = frame[col] if col in frame.columns else pd.Series(None, index=frame.index)
        if pd.api.types.is_object_dtype(dtype):
            values = values.astype(object)
            values = values.where(values.notna(), None)
        else:
            values = values.astype(dtype)
        out[col] = values
    result = pd.DataFrame(out, index=frame.index)
    result.attrs = dict(frame.attrs)
    return result
