"""A row's error text for any failure: the provider's own message, or visionkit's reason."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Mapping

from ..errors import VisionError

__all__ = ["connection_problem", "describe_error"]


def connection_problem(exc: BaseException) -> str | None:
    """What really went wrong under an SDK connection error, the same on either transport.

    The SDK's aiohttp transport reports a refused connection as ``APITimeoutError: Request
    timed out`` (its connector error surfaces as a connect *timeout*), httpx as
    ``APIConnectionError: Connection error.``; both keep the ``ConnectionRefusedError`` in the
    exception chain, so the cause is read from there.
    """
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return f"host name not found ({cause.strerror or cause})"
        if isinstance(cause, ssl.SSLError):
            return f"TLS error ({cause.reason or cause})"
        if isinstance(cause, ConnectionResetError):
            return "connection reset by the server"
        cause = cause.__cause__ or cause.__context__
    return None


def _where(exc: BaseException) -> str:
    request = getattr(exc, "_request", None) or getattr(exc, "request", None)
    url = getattr(request, "url", None)
    host = getattr(url, "host", None)
    if not host:
        return ""
    port = getattr(url, "port", None)
    return f" by {host}:{port}" if port else f" by {host}"


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
    if isinstance(exc, openai.APIConnectionError):
        problem = connection_problem(exc)
        if problem == "connection refused":
            return f"APIConnectionError: connection refused{_where(exc)}"
        if problem is not None:
            return f"APIConnectionError: {problem}"
    if isinstance(exc, openai.APIError):
        return f"{type(exc).__name__}: {exc.message}"
    if isinstance(exc, VisionError):
        reason = getattr(exc, "reason", None)
        return f"{type(exc).__name__}: {reason or exc}"
    return f"{type(exc).__name__}: {exc}"
