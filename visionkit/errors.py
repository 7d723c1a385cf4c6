"""The visionkit exception tree.

    VisionError
    ├── ImageError (ValueError)        an image cannot be read, decoded or encoded
    ├── RequestError (ValueError)      a request breaks the provider's rules before it is sent
    ├── BudgetExceeded (RuntimeError)  the estimated tokens exceed ``budget_tokens``
    ├── MissingAPIKey (RuntimeError)   a provider was named but its key variable is unset
    ├── CacheError (RuntimeError)      the answer cache file is not SQLite or is damaged
    └── ReplayError (LookupError)      a replayed run met requests that were never recorded

Errors from the network are the ``openai`` SDK's own (``openai.APIStatusError`` and friends).
"""

from __future__ import annotations

__all__ = [
    "BudgetExceeded",
    "CacheError",
    "ImageError",
    "MissingAPIKey",
    "ReplayError",
    "RequestError",
    "VisionError",
]


class VisionError(Exception):
    """Base class of every error visionkit raises itself."""


class ImageError(VisionError, ValueError):
    """An image cannot be read, decoded or encoded; ``row`` names the DataFrame row if known."""

    def __init__(self, message: str, *, row: object = None, source: object = None) -> None:
        self.row = row
        self.source = source
        self.reason = message
        if row is not None:
            message = f"row {row!r}: {message}"
        super().__init__(message)


class RequestError(VisionError, ValueError):
    """A request would break the provider's documented rules (formats, image count, body size)."""

    def __init__(self, message: str, *, row: object = None) -> None:
        self.row = row
        self.reason = message
        if row is not None:
            message = f"row {row!r}: {message}"
        super().__init__(message)


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
