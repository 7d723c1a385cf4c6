"""The annotators' save file: every annotator's labels in long form, written atomically.

One row per image and annotator:

    index,path,annotator,label,label_at
    r0,photos/a.jpg,ana,cat,2026-11-30T10:12:03Z
    r0,photos/a.jpg,ben,dog,2026-11-30T11:40:55Z

``index`` is the DataFrame's index label as text, ``path`` the image path (when the DataFrame
has a ``path`` column), ``annotator`` who gave the label (blank without ``annotator=``), then
the label column and ``<column>_at``, when it was given (UTC). A box annotator's cell is the
JSON text of its list of boxes (``[]``: looked at, nothing to box). Blank means unlabelled.

- **Nothing of yours is dropped.** Columns the file has besides these (notes, reviewer) and
  rows this DataFrame does not have are written back unchanged; several label columns (say
  ``label`` and ``boxes``) can share one file.
- **Sessions merge.** Before each write the file is read again if someone else changed it
  since (another person's Annotator on a shared drive, a second widget in the same kernel),
  and only this session's own changes are applied on top; one annotator's label of one row is
  last-writer-wins.
- **Safe writes.** A temporary file beside the target is ``os.replace``-d over it, so a crash
  leaves the old file or the new one. ``~`` is expanded; a symlink is written *through* (the
  file it points to is replaced, the link stays); an existing file keeps its permission bits,
  and a new one gets the usual ``0o666 & ~umask``. (``tempfile.mkstemp`` makes files 0600;
  left alone, every save would have made the labels private to their owner.)
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "AnnotationFile",
    "file_format",
    "now",
    "read_annotations",
    "resolve_path",
    "row_keys",
    "write_atomic",
]

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
KEY = ("index", "path")
WHO = "annotator"

Key = tuple[str, ...]


def now() -> str:
    """The current time as ISO 8601 UTC to the second, as the save file stores it."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def resolve_path(path: str | os.PathLike[str]) -> Path:
    """``path`` with ``~`` expanded (checked for a .csv or .parquet name)."""
    out = Path(os.path.expanduser(os.fspath(path)))
    file_format(out)
    return out


def file_format(path: Path) -> str:
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise ValueError(
            f"save={str(path)!r}: the file name must end in .csv or .parquet"
        ) from None


def row_keys(df: pd.DataFrame, with_path: bool) -> list[Key]:
    """One key per row: the index label as text, plus the path when ``with_path``."""
    index = [str(v) for v in df.index]
    if not with_path:
        return [(i,) for i in index]
    return list(zip(index, (str(p) for p in df["path"]), strict=True))


def _read(path: Path) -> pd.DataFrame:
    if file_format(path) == "csv":
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    else:
        frame = pd.read_parquet(path)
    frame = frame.astype(object)
    return frame.where(frame.notna() & (frame != ""), None)


def read_annotations(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> pd.DataFrame:
    """A save file (or several, merged) as a long DataFrame of text, ``None`` where blank.

    Files without an ``annotator`` column (written before annotators were recorded) get one,
    blank. With several files the rows are stacked; where two hold the same image, annotator
    and column, the later file's row wins. Pivot it for agreement statistics:

        long = vk.read_annotations("labels.csv")
        wide = long.pivot(index="index", columns="annotator", values="label")
        vk.rater_agreement(wide)
    """
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    frames = []
    for p in paths:
        frame = _read(resolve_path(p))
        if "index" not in frame.columns:
            raise ValueError(f"{p} is not a visionkit save file: it has no 'index' column")
        if WHO not in frame.columns:
            frame.insert(min(2, len(frame.columns)), WHO, None)
        frames.append(frame)
    out = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    keys = [c for c in (*KEY, WHO) if c in out.columns]
    if len(frames) > 1:
        filled = out[keys].astype(object).where(out[keys].notna(), "")
        out = out.loc[~filled.duplicated(keep="last")].reset_index(drop=True)
    return out


def _file_mode(target: Path) -> int:
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def write_atomic(path: Path, frame: pd.DataFrame) -> None:
    """Write ``frame`` to ``path`` (CSV or parquet by suffix) atomically, through a symlink,
    keeping an existing file's mode (see the module docstring)."""
    kind = file_format(path)
    target = Path(os.path.realpath(path))  # write through symlinks, to the file they name
    target.parent.mkdir(parents=True, exist_ok=True)
    mode = _file_mode(target)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        text: dict[str, Any] = {"newline": ""} if kind == "csv" else {}
        with os.fdopen(fd, "w" if kind == "csv" else "wb", **text) as f:
            if kind == "csv":
                frame.to_csv(f, index=False)
            else:
                frame.astype({c: "string" for c in frame.columns}).to_parquet(f, index=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class AnnotationFile:
    """One annotator's view of a save file for one label column (see the module docstring).

    ``labels()`` gives this annotator's saved labels by row key and ``others()`` everyone
    else's; ``set()`` records a change and ``write()`` puts it on disk.
    """

    def __init__(
        self, path: str | os.PathLike[str], column: str, annotator: str | None, *, keyed: bool
    ) -> None:
        self.path = resolve_path(path)
        self.column = column
        self.time_column = f"{column}_at"
        self.annotator = annotator or ""
        self.keyed = keyed
        self._frame: pd.DataFrame | None = None
        self._where: dict[tuple[str, ...], int] = {}
        self._stamp: tuple[int, int] | None = None
        self._touched: dict[Key, tuple[str | None, str]] = {}
        self._pending: dict[Key, tuple[str | None, str]] = {}
        self.generation = 0  # counts reloads: what others() says changes only then
        self.reload()

    # -- reading ---------------------------------------------------------------------------
    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            return None  # not written yet (or cannot be: write() will say why)
        return st.st_mtime_ns, st.st_size

    @property
    def key_columns(self) -> list[str]:
        return ["index", "path"] if self.keyed else ["index"]

    def reload(self) -> None:
        """Read the file (if it exists) and index its rows."""
        stamp = self._stat()
        if stamp is None:
            frame = pd.DataFrame(columns=[*self.key_columns, WHO, self.column, self.time_column])
            frame = frame.astype(object)
        else:
            frame = read_annotations(self.path)
            if self.keyed and "path" not in frame.columns:
                self.keyed = False  # an older file keyed by index alone: match it that way
            for name in (self.column, self.time_column):
                if name not in frame.columns:
                    frame[name] = None
        self._frame = frame
        who = frame[WHO].astype(object).where(frame[WHO].notna(), "")
        keys = frame[self.key_columns].astype(object).where(frame[self.key_columns].notna(), "")
        rows = zip(*(keys[c].astype(str) for c in self.key_columns), who.astype(str), strict=True)
        self._where = {tuple(r): i for i, r in enumerate(rows)}
        self._stamp = stamp
        self.generation += 1

    def labels(self) -> dict[Key, str]:
        """This annotator's labels in the file, by row key (blank ones left out)."""
        return self._values(lambda who: who == self.annotator)

    def others(self) -> dict[str, dict[Key, str]]:
        """Every other annotator's labels in the file: ``{annotator: {key: label}}``."""
        assert self._frame is not None
        names = sorted({str(w or "") for w in self._frame[WHO]} - {self.annotator})
        return {name: self._values(lambda who, n=name: who == n) for name in names}

    def _values(self, pick: Any) -> dict[Key, str]:
        assert self._frame is not None
        col = self._frame.columns.get_loc(self.column)
        out = {}
        for full, i in self._where.items():
            if pick(full[-1]):
                value = self._frame.iat[i, col]
                if value is not None:
                    out[full[:-1]] = str(value)
        return out

    # -- writing ---------------------------------------------------------------------------
    def set(self, key: Key, value: str | None, when: str | None = None) -> None:
        """Record this annotator's ``value`` for the row ``key`` (written by ``write()``)."""
        change = (value, when or now())
        self._touched[key] = change
        self._pending[key] = change

    def _apply(self, changes: Iterable[tuple[Key, tuple[str | None, str]]]) -> None:
        assert self._frame is not None
        frame = self._frame
        col = frame.columns.get_loc(self.column)
        at = frame.columns.get_loc(self.time_column)
        new_rows: list[dict[str, Any]] = []
        for key, (value, when) in changes:
            full = (*key[: len(self.key_columns)], self.annotator)
            i = self._where.get(full)
            if i is None:
                row: dict[str, Any] = dict(zip(self.key_columns, key, strict=False))
                row.update(
                    {WHO: self.annotator or None, self.column: value, self.time_column: when}
                )
                self._where[full] = len(frame) + len(new_rows)
                new_rows.append(row)
            else:
                frame.iat[i, col] = value
                frame.iat[i, at] = when
        if new_rows:
            added = pd.DataFrame(new_rows, columns=frame.columns).astype(object)
            self._frame = pd.concat([frame, added], ignore_index=True) if len(frame) else added

    def write(self) -> None:
        """Put this session's changes on disk, merged with what others wrote meanwhile."""
        if self._stat() != self._stamp:
            self.reload()  # someone else wrote: take theirs, then ours on top
            self._apply(self._touched.items())
        else:
            self._apply(self._pending.items())
        self._pending.clear()
        assert self._frame is not None
        write_atomic(self.path, self._frame)
        self._stamp = self._stat()

    @property
    def frame(self) -> pd.DataFrame:
        """The whole file as it stands in memory (every annotator, every column), long form."""
        assert self._frame is not None
        self._apply(self._pending.items())
        self._pending.clear()
        return self._frame.copy()
