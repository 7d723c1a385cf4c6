"""Content digests of images, with local files' digests remembered the way git's index does.

A cache key holds the sha256 of each image's bytes, so learning that a row is already answered
means reading and hashing its file. For a local file that has not changed since a run last
hashed it, that read is not needed: the digest is remembered with the file's stat (size,
mtime and ctime in nanoseconds, inode, device) in the answer cache's file (``Cache.recall`` /
``Cache.remember``), and a file whose stat still matches is not opened at all. Any change to
the file's content changes its stat: a write updates mtime and ctime, a different size shows
at once, a replaced file has another inode.

"Racily clean" files (git's term): file timestamps are coarse (a few ms on Linux), so a file
written in the same tick as our read could keep its stat with other content. A digest is
therefore remembered only for a file whose mtime is at least ``RACY_NS`` old when it is read;
a newer file is simply hashed again next time.

``read_digests(items, index)`` does this for a chunk of image cells at once (one look-up in the
index, one write for what it learnt): each image's ``Read`` -- its digest, and its bytes when
they were read and are small enough to keep (``KEEP_BYTES``; larger ones are read again when
encoded, so a chunk holds at most a few MB) -- or the ``ImageError`` that is the row's error.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat as stat_module
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ImageError
from ..images.cells import cell_kind, local_path, read_bytes
from ..images.download import max_image_bytes
from ..types import is_missing

if TYPE_CHECKING:
    from .cache import Cache

__all__ = ["KEEP_BYTES", "RACY_NS", "Read", "Stamp", "read_digests", "stamp_of"]

RACY_NS = 2_000_000_000  # a file modified this recently is hashed again next time
KEEP_BYTES = 2 * 1024 * 1024  # image bytes kept from the digest's read for encoding
KEEP_TOTAL = 8 * 1024 * 1024  # at most this much kept per chunk

Stamp = tuple[int, int, int, int, int]  # size, mtime_ns, ctime_ns, inode, device


def stamp_of(st: os.stat_result) -> Stamp:
    """What says a file is unchanged: size, mtime and ctime (ns), inode and device."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


@dataclass(slots=True)
class Read:
    """One image: its content digest, and its bytes if they were read and kept."""

    digest: str
    data: bytes | None = None


def _empty(cell: Any) -> bool:
    return is_missing(cell) or (isinstance(cell, (str, bytes)) and not cell)


def read_digests(
    items: Sequence[tuple[Any, object, str]], index: Cache | None, *, keep_all: bool = False
) -> list[Read | ImageError]:
    """Each image's ``Read`` (or the ``ImageError`` that is its row's error), in order.

    ``items``: ``(cell, row label, column name)`` per image. With ``index`` (an answer cache),
    unchanged local files are recalled instead of read, and what was read is remembered.
    ``keep_all``: keep every image's bytes (else only small ones, see ``KEEP_BYTES``).
    """
    out: list[Read | ImageError | None] = [None] * len(items)
    files: dict[int, str] = {}  # item -> local path
    for i, (cell, row, column) in enumerate(items):
        if _empty(cell):
            out[i] = ImageError(f"no image in column {column!r}", row=row)
        elif cell_kind(cell) == "path":
            try:
                path = local_path(cell)
            except (OSError, ValueError):
                continue  # read_bytes says why, in its words
            files[i] = os.path.abspath(path) if index is not None else path
    # Only files the index knows are stat'ed first (the others are read at once): every
    # system call hands the GIL over, and on a busy machine each costs far more than itself.
    known = index.recall(list(set(files.values()))) if index is not None and files else {}
    stats: dict[int, os.stat_result] = {}
    for i, path in files.items():
        if path in known:
            with contextlib.suppress(OSError):  # reading it says why
                stats[i] = os.stat(path)
    learnt: list[tuple[str, Stamp, str]] = []
    kept = 0
    now_ns = time.time_ns()
    for i, (cell, row, _) in enumerate(items):
        if out[i] is not None:
            continue
        file = files.get(i)
        if file is not None:
            remembered = known.get(file)
            now = stats.get(i)
            if remembered is not None and now is not None and remembered[0] == stamp_of(now):
                out[i] = Read(remembered[1])
                continue
            data, stamp = _read_file(file, cell, row)
            if isinstance(data, ImageError):
                out[i] = data
                continue
            digest = hashlib.sha256(data).hexdigest()
            if index is not None and stamp is not None and now_ns - stamp[1] >= RACY_NS:
                learnt.append((file, stamp, digest))
        else:
            try:
                data = read_bytes(cell, row=row)
            except ImageError as exc:
                out[i] = exc
                continue
            digest = hashlib.sha256(data).hexdigest()
        keep = keep_all or (len(data) <= KEEP_BYTES and kept + len(data) <= KEEP_TOTAL)
        kept += len(data) if keep else 0
        out[i] = Read(digest, data if keep else None)
    if learnt and index is not None:
        index.remember(learnt)
    done: list[Read | ImageError] = []
    for r in out:
        assert r is not None
        done.append(r)
    return done


def _read_file(path: str, cell: Any, row: object) -> tuple[bytes | ImageError, Stamp | None]:
    """A local file's bytes and the stamp of what was read (from the open file itself), in
    as few system calls as a file can be read with."""
    data = b""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        try:
            st = os.fstat(fd)
            if stat_module.S_ISREG(st.st_mode) and 0 < st.st_size <= max_image_bytes():
                data = os.read(fd, st.st_size + 1)  # one more: a file that grew shows it
        finally:
            os.close(fd)
    except OSError:
        pass
    if data and len(data) == st.st_size:
        return data, stamp_of(st)
    # Not a regular file, not readable, over the size cap, emptied or changing under us:
    # read_bytes reads it again or says why, in its words.
    try:
        return read_bytes(cell, row=row), None
    except ImageError as exc:
        return exc, None
