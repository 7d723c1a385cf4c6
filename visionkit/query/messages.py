"""A row's error text for any failure: the provider's own message, or visionkit's reason."""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import VisionError

__all__ = ["describe_error"]


def describe_error(exc: BaseException) -> str:
    """A row's error text for an SDK or visionkit error (the provider's own message)."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        body = exc.body
        message = None
        if isinstance(body, Mapping):
            inner = body.get("error", body)
            message = inner.get("message") if isinstance(inner, Mapping) else str(inner)
        return f"{type(exc).__name__} ({exc.status_code}): {message or exc.message}"
    if isinstance(exc, openai.APIError):
        return f"{type(exc).__name__}: {exc.message}"
    if isinstance(exc, VisionError):
        reason = getattr(exc, "reason", None)
        return f"{type(exc).__name__}: {reason or exc}"
    return f"{type(exc).__name__}: {exc}"
