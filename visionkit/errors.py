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
"""

from __future__ import annotations

import sys
from pathlib import Path
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
