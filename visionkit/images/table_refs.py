"""References to one value of a table's image column, and resolving them.

A reference is ``data/train.parquet#image[17]`` (row 17 of that Parquet file's ``image``
column; the file may be local or remote) or ``dataset:<fingerprint>#image[17]`` (row 17 of a
``datasets.Dataset`` read in this process). ``ref_value`` returns the value it points at (a
``{bytes, path}`` struct, bytes or a string) and where the table is, so that a path the table
names is found beside it (``table_path``; see ``read_images``' docstring for which paths a
table may name).

Resolving a Parquet reference reads the row group that holds it (``datasets`` writes 100
images per row group), so the last few row groups read are kept (up to ``CACHE_BYTES``): in
row order, each row group is read once. The Parquet files themselves are kept open between
rows, at most ``MAX_OPEN_FILES`` at once (the least recently used is closed), and all of them
are closed when the last call that reads tables ends (``tables_call``): a frame of references
to thousands of files never holds thousands of descriptors. A file that is not Parquet, or is
damaged, is the ``ImageError`` of each row that refers to it, naming the file.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from cachetools import LRUCache

from .._state import register
from ..errors import ImageError
from .remote import is_remote_url, public_url

__all__ = [
    "CACHE_BYTES",
    "MAX_OPEN_FILES",
    "TableRef",
    "is_table_ref",
    "open_table",
    "parse_ref",
    "ref_value",
    "register_dataset",
    "table_path",
    "tables_call",
]

CACHE_BYTES = 256 * 1024 * 1024
MAX_OPEN_FILES = 32

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


# --------------------------------------------------------------------------------------------
# paths a table names


def table_path(path: str, table: str | None, *, confine: bool = True) -> str:
    """Where a path named inside ``table`` (a Parquet file's path or URL) points.

    A relative path is taken from the table's folder (never the working directory). With
    ``confine`` (the default), a path that leads out of that folder (an absolute path
    elsewhere, ``..``, a symbolic link out, another bucket) raises ``ImageError``; http(s)
    URLs and ``data:`` URIs are taken as they are (reading them opens nothing of the user's).
    ``table=None`` (a ``datasets.Dataset`` in memory, which has no folder) takes ``path`` as
    it is, as ``datasets`` itself does.
    """
    low = path[:8].lower()
    if table is None or low.startswith(("http://", "https://", "data:")):
        return path
    if low.startswith("file://"):
        import urllib.parse
        import urllib.request

        path = urllib.request.url2pathname(urllib.parse.urlparse(path).path)
    if is_remote_url(table):
        folder = table.rsplit("/", 1)[0]
        if is_remote_url(path):
            target = path
        elif path.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", path):
            target = path  # a local absolute path named by a remote table
        else:
            scheme, _, rest = folder.partition("://")
            target = f"{scheme}://{posixpath.normpath(posixpath.join(rest, path))}"
        inside = is_remote_url(target) and target.startswith(folder + "/")
    else:
        folder = os.path.dirname(os.path.abspath(os.path.expanduser(table)))
        if is_remote_url(path):
            target, inside = path, False
        else:
            target = os.path.normpath(os.path.join(folder, path))
            real = os.path.realpath(folder)
            inside = os.path.realpath(target).startswith(real.rstrip(os.sep) + os.sep)
    if confine and not inside:
        raise ImageError(
            f"the table names a file outside its folder ({path[:200]}); read_images(..., "
            "confine_paths=False) reads such paths when the table is trusted"
        )
    return target


# --------------------------------------------------------------------------------------------
# datasets read in this process


_DATASETS: dict[str, Any] = {}
_DATASETS_LOCK = threading.Lock()


def register_dataset(dataset: Any) -> str:
    """The reference prefix (``dataset:<fingerprint>``) for ``dataset``, kept alive for it."""
    key = f"dataset:{dataset._fingerprint}"
    with _DATASETS_LOCK:
        if key not in _DATASETS:
            # formatted once: with_format builds a new Dataset object (slow, per row it was)
            _DATASETS[key] = dataset.with_format("arrow")
    return key


def _dataset_value(ref: TableRef) -> Any:
    with _DATASETS_LOCK:
        dataset = _DATASETS.get(ref.source)
    if dataset is None:
        raise ImageError(
            "the dataset this row refers to was read in another Python process; "
            "read it again with read_images(dataset, image_column=...)"
        )
    if ref.row >= len(dataset):
        raise ImageError(f"row {ref.row} is past the dataset's end ({len(dataset)} rows)")
    if ref.column not in dataset.column_names:
        raise ImageError(f"the dataset has no column {ref.column!r}")
    return dataset[ref.row][ref.column][0].as_py()


# --------------------------------------------------------------------------------------------
# open Parquet files


class _ClosingLRU(LRUCache):
    """An LRU whose evicted entries go to ``on_evict`` (which closes them)."""

    def __init__(self, maxsize: int, on_evict: Callable[[Any, Any], None]) -> None:
        super().__init__(maxsize=maxsize)
        self._on_evict = on_evict

    def popitem(self) -> tuple[Any, Any]:
        key, value = super().popitem()
        self._on_evict(key, value)
        return key, value


@dataclass
class _Open:
    reader: Any  # pyarrow.parquet.ParquetFile
    handle: Any  # the file object under it
    users: int = 0
    evicted: bool = False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.reader.close()
        with contextlib.suppress(Exception):
            self.handle.close()


class _OpenTables:
    """Parquet files open for reading, at most ``MAX_OPEN_FILES`` idle or busy at once beyond
    those in use: the least recently used is closed when another is opened (or, if a thread
    is reading it, as soon as it is done); every idle one is closed when the last call ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files = _ClosingLRU(MAX_OPEN_FILES, self._evicted)
        self._calls = 0

    def _evicted(self, key: Any, entry: _Open) -> None:  # under self._lock
        entry.evicted = True
        if entry.users == 0:
            entry.close()

    @contextlib.contextmanager
    def use(self, source: str, version: object) -> Iterator[Any]:
        key = (source, version)
        with self._lock:
            entry = self._files.get(key)
            if entry is not None:
                entry.users += 1
        if entry is None:
            opened = _open_parquet(source)
            with self._lock:
                entry = self._files.get(key)
                if entry is None:
                    entry = opened
                    self._files[key] = entry
                else:
                    opened.close()  # another thread opened it meanwhile
                entry.users += 1
        try:
            yield entry.reader
        finally:
            with self._lock:
                entry.users -= 1
                if entry.evicted and entry.users == 0:
                    entry.close()

    def begin(self) -> None:
        with self._lock:
            self._calls += 1

    def end(self) -> None:
        with self._lock:
            self._calls = max(0, self._calls - 1)
            if self._calls:
                return
            for key, entry in list(self._files.items()):
                if entry.users == 0:
                    del self._files[key]
                    entry.close()

    def count(self) -> int:
        with self._lock:
            return len(self._files)

    def close_idle(self) -> None:
        """Close every file no thread is reading now."""
        with self._lock:
            for key, entry in list(self._files.items()):
                if entry.users == 0:
                    del self._files[key]
                    entry.close()


_OPEN = _OpenTables()


@contextlib.contextmanager
def tables_call() -> Iterator[None]:
    """Around a call that may read many references: when the last such call ends (calls may
    run in several threads at once), every Parquet file they opened is closed."""
    _OPEN.begin()
    try:
        yield
    finally:
        _OPEN.end()


def open_table(source: str) -> contextlib.AbstractContextManager[Any]:
    """``with open_table(path_or_url) as pf:`` a ``pyarrow.parquet.ParquetFile``, kept open
    for the next reader (see the module docs); raises ``ImageError`` naming the file when it
    is missing, not Parquet or damaged."""
    return _OPEN.use(source, stamp(source))


def _open_parquet(source: str) -> _Open:
    import pyarrow.parquet as pq

    handle = _open(source)
    try:
        return _Open(pq.ParquetFile(handle), handle)
    except Exception as exc:
        handle.close()
        raise ImageError(
            f"cannot read the table {public_url(source)}: {table_reason(exc)}"
        ) from None


def table_reason(exc: BaseException) -> str:
    """What pyarrow said about a file it cannot read, in one line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "magic bytes" in text:
        return "not a Parquet file (or cut short: its footer is missing)"
    if any(word in text.lower() for word in ("deserialize", "thrift", "footer", "corrupt")):
        return f"the file is damaged ({text[:160]})"
    return text[:200]


def _open(source: str) -> Any:
    if is_remote_url(source):
        from .remote import filesystem

        fs, path = filesystem(source)
        try:
            return fs.open(path, "rb")
        except FileNotFoundError:
            raise ImageError(f"file not found: {public_url(source)}") from None
        except PermissionError:
            raise ImageError(f"access denied: {public_url(source)}") from None
    try:
        return open(os.path.expanduser(source), "rb")
    except FileNotFoundError:
        raise ImageError(f"file not found: {public_url(source)}") from None
    except OSError as exc:
        raise ImageError(f"cannot open {public_url(source)}: {exc.strerror or exc}") from None


def stamp(source: str) -> object:
    """Changes when a local file is rewritten (so a stale row group is never served)."""
    if is_remote_url(source):
        return None
    try:
        st = os.stat(os.path.expanduser(source))
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


# --------------------------------------------------------------------------------------------
# row groups


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


def ref_value(cell: str) -> tuple[Any, str | None]:
    """``(value, table)``: the value a reference points at, and the Parquet file's path or URL
    that paths inside it are relative to (None for a dataset)."""
    ref = parse_ref(cell)
    if ref.source.startswith("dataset:"):
        return _dataset_value(ref), None
    return _parquet_value(ref), ref.source


def _parquet_value(ref: TableRef) -> Any:
    version = stamp(ref.source)  # once a row: it keys both the open file and the row group
    with _OPEN.use(ref.source, version) as pf:
        try:
            meta = pf.metadata
            start = 0
            for group in range(meta.num_row_groups):
                n = meta.row_group(group).num_rows
                if ref.row < start + n:
                    if ref.column not in pf.schema_arrow.names:
                        raise ImageError(f"{ref.source} has no column {ref.column!r}")
                    column = _CACHE.get(
                        (ref.source, group, ref.column, version),
                        lambda g=group: pf.read_row_group(g, columns=[ref.column]).column(0),
                    )
                    return column[ref.row - start].as_py()
                start += n
        except ImageError:
            raise
        except Exception as exc:
            raise ImageError(f"cannot read the table {ref.source}: {table_reason(exc)}") from None
    raise ImageError(f"row {ref.row} is past the end of {ref.source} ({start} rows)")


def _held_datasets() -> tuple[int, str]:
    with _DATASETS_LOCK:
        keys = sorted(_DATASETS)
    return len(keys), ", ".join(keys)


def _forget_datasets() -> None:
    with _DATASETS_LOCK:
        _DATASETS.clear()


def _held_tables() -> tuple[int, str]:
    files = _OPEN.count()
    groups, nbytes = _CACHE.size()
    return files + groups, f"{files} open Parquet files, {groups} row groups ({nbytes:,} bytes)"


def _forget_tables() -> None:
    _OPEN.close_idle()
    _CACHE.clear()


register("datasets", __name__, _held_datasets, _forget_datasets)
register("table row groups and files", __name__, _held_tables, _forget_tables)
