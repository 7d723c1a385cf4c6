"""The visionkit exception tree.

    VisionError
    ├── RowError (ValueError)          one row cannot be used (``row``: which, ``reason``: why)
    │   ├── ImageError                 an image cannot be read, decoded or encoded
    │   └── RequestError               a request breaks the provider's rules before it is sent
    ├── BudgetExceeded (RuntimeError)  the estimated tokens exceed ``budget_tokens``
    ├── MissingAPIKey (RuntimeError)   a provider was named but its key variable is unset
    ├── CacheError (RuntimeError)      the answer cache file is not SQLite or is damaged
    └── ReplayError (LookupError)      a replayed run met requests that were never recorded

and the warnings (each a ``UserWarning``, so ``warnings.filterwarnings`` can name one):

    ReadImagesWarning   ``read_images`` left non-image files out, or a folder or glob found nothing
    EncodeWarning       some rows could not be encoded and are NA (``errors="coerce"``)
    OfflineWarning      no API key was found: the offline stand-in answers
    CacheWarning        cached answers failed their checksum and are asked again
    ReplayWarning       a recording holds lines that failed their checksum, conflict, or have
                        no checksum (recorded by an older visionkit)
    BatchWarning        a batch job's server sent something not taken (a result line for an
                        id never sent, a status the API does not document), or a result was
                        read before the job was done

Errors from the network are the ``openai`` SDK's own (``openai.APIStatusError`` and friends).
A row's failure never stops a batch: it becomes that row's ``error`` text.

Every warning visionkit gives goes through ``warn``, which names the user's line: the first
frame outside visionkit in the thread that warns -- or, when that thread is one visionkit or a
scheduler started (``ask``'s run, a thread pool, Dask's threads), the line the main thread is
on, which is the user's call still running. In a Dask task a relay takes it instead
(``visionkit.dask.relay``): the client says it once per call.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = [
    "BatchWarning",
    "BudgetExceeded",
    "CacheError",
    "CacheWarning",
    "EncodeWarning",
    "ImageError",
    "MissingAPIKey",
    "OfflineWarning",
    "ReadImagesWarning",
    "ReplayError",
    "ReplayWarning",
    "RequestError",
    "RowError",
    "VisionError",
]


class VisionError(Exception):
    """Base class of every error visionkit raises itself."""


class RowError(VisionError, ValueError):
    """One row cannot be used: ``row`` names the DataFrame row (if known), ``reason`` says why.

    ``str(exc)`` is ``"row 'r3': <reason>"``; the batch keeps ``reason`` as the row's error.
    """

    def __init__(self, message: str, *, row: object = None) -> None:
        self.row = row
        self.reason = message
        super().__init__(f"row {row!r}: {message}" if row is not None else message)

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt with its keywords, so row, reason (and source) survive pickling: errors
        # cross process boundaries in process pools and on Dask workers.
        return (_rebuild, (type(self), self.reason, dict(self.__dict__)))


class ImageError(RowError):
    """An image cannot be read, decoded or encoded; ``source`` is where it came from, if known."""

    def __init__(self, message: str, *, row: object = None, source: object = None) -> None:
        self.source = source
        super().__init__(message, row=row)


class RequestError(RowError):
    """A request would break the provider's documented rules (formats, image count, body size)."""


def _rebuild(cls: type[RowError], reason: str, state: dict[str, Any]) -> RowError:
    keywords = {k: state.pop(k) for k in ("row", "source") if k in state}
    error = cls(reason, **keywords)
    error.__dict__.update(state)
    return error


class BudgetExceeded(VisionError, RuntimeError):
    """The token estimate for a batch is above the ``budget_tokens`` the caller allowed."""


class MissingAPIKey(VisionError, RuntimeError):
    """A provider was named explicitly but the environment variable holding its key is unset."""


class CacheError(VisionError, RuntimeError):
    """The answer cache file cannot be used (not SQLite, or damaged); ``path`` names it.

    Raised once, at open or by the run that meets the damage; ``partial`` then holds the
    result of the rows answered before the run stopped (answers received are never lost).
    """

    def __init__(self, message: str, *, path: object = None) -> None:
        self.path = path
        self.partial: object = None
        super().__init__(message)


class ReplayError(VisionError, LookupError):
    """A replay (``connect(replay=...)``, strict) met requests its recording does not hold.

    ``partial`` holds the result of the rows that were answered.
    """

    def __init__(self, message: str) -> None:
        self.partial: object = None
        super().__init__(message)


class ReadImagesWarning(UserWarning):
    """``read_images`` left non-image files out of a folder walk, or a folder or glob found
    nothing."""


class EncodeWarning(UserWarning):
    """Some rows could not be encoded and are NA (``encode_series(errors="coerce")``)."""


class OfflineWarning(UserWarning):
    """``connect("auto")`` found no API key and uses the offline stand-in."""


class CacheWarning(UserWarning):
    """Cached answers failed their checksum and were treated as missing (asked again)."""


class ReplayWarning(UserWarning):
    """A recording (``answers.jsonl``) holds lines not used -- they failed their checksum,
    cannot be read, or give one request different answers -- or answers without a checksum,
    used unverified. Said once per store, naming the file, the lines and what to do."""


class BatchWarning(UserWarning):
    """A batch job met something it did not take (see the tree above)."""


_PACKAGE = str(Path(__file__).resolve().parent)


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning name the first frame outside visionkit (the
    user's line), counted from the caller of ``warnings.warn``."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


# Where library code lives (the standard library, site-packages): never the user's line.
_LIBRARIES = tuple(
    sorted(
        {
            os.path.realpath(path)
            for name in ("stdlib", "platstdlib", "purelib", "platlib")
            if (path := sysconfig.get_paths().get(name))
        }
    )
)

# Relays that may take a warning instead of it being said here (a Dask task's: see
# ``visionkit.dask.relay``); each returns True when it took the warning.
RELAYS: list[Callable[[str, type[Warning]], bool]] = []


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """Warn with ``message`` at the user's line (see the module doc): the one way visionkit
    warns. Filters, ``catch_warnings`` and the once-per-line default apply as usual."""
    for relay in RELAYS:
        if relay(message, category):
            return
    warn_at_user(message, category, sys._getframe(1))


def warn_at_user(message: str, category: type[Warning], frame: FrameType | None = None) -> None:
    """Say the warning at the user's line, seen from ``frame`` (default: the caller's)."""
    frame = frame or sys._getframe(1)
    while frame is not None and _ours(frame):
        frame = frame.f_back
    if frame is None or _library(frame):
        # a library called visionkit (pandas, a scheduler): the user's line is further out
        # in this thread, or, in a thread someone started, where the main thread is
        frame = _outer_user_frame(frame) or _user_frame_in_main_thread() or frame
    if frame is None:
        warnings.warn(message, category, stacklevel=2)
        return
    globals_ = frame.f_globals
    warnings.warn_explicit(
        message,
        category,
        frame.f_code.co_filename,
        frame.f_lineno,
        module=globals_.get("__name__"),
        registry=globals_.setdefault("__warningregistry__", {}),
    )


def _ours(frame: FrameType) -> bool:
    return frame.f_code.co_filename.startswith(_PACKAGE)


def _library(frame: FrameType) -> bool:
    name = frame.f_code.co_filename
    return name.startswith("<frozen") or os.path.realpath(name).startswith(_LIBRARIES)


def _outer_user_frame(frame: FrameType | None) -> FrameType | None:
    """The first frame from ``frame`` outwards that is neither visionkit's nor a library's."""
    while frame is not None and (_ours(frame) or _library(frame)):
        frame = frame.f_back
    return frame


def _user_frame_in_main_thread() -> FrameType | None:
    """The innermost frame of the main thread that is neither visionkit's nor a library's:
    the user's line, while a call of theirs waits there for the thread that warns."""
    main = threading.main_thread()
    if main is threading.current_thread() or main.ident is None:
        return None
    return _outer_user_frame(sys._current_frames().get(main.ident))
