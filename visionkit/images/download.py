"""Download images over http(s): streamed, size-capped, one deadline, redirects kept in bounds.

Plain ``http://`` and ``https://`` cells are fetched here (with httpx, which the ``openai`` SDK
already installs), not through fsspec's HTTP filesystem, because a URL in a DataFrame may
point anywhere and fsspec's reader has none of these guards:

- **One deadline per download** (``DOWNLOAD_TIMEOUT``, 30 s): connecting, the response headers
  and the whole body must arrive within it. A per-read timeout (what ``urllib`` and httpx give)
  lets a server that drips a byte every few seconds hold a download for ever.
- **A size cap** (``max_image_bytes()``: 50 MB unless ``VISIONKIT_MAX_IMAGE_BYTES`` says
  otherwise), checked against ``Content-Length`` and again as the body arrives; a bigger
  response is cut off, never held in memory. The same cap holds for bucket objects and local
  files read whole (``visionkit.images.cells.read_bytes``).
- **Redirects**: at most ``MAX_REDIRECTS`` (5), and only to ``http://`` or ``https://`` URLs
  (any host, as a browser would); a redirect elsewhere (``ftp:``, ``file:``, ...) fails the row.
- **Transient failures** (connection refused or reset, 429, 502/503/504) are retried twice,
  within the same deadline. A missing (404) or forbidden (401/403) image fails at once.
- A body cut short (a chunked response whose connection closes mid-chunk) and every other
  network error is the row's ``ImageError``, never an exception out of ``read_images``.

Downloads run on one event loop in a daemon thread shared by all callers (a worker thread of
``encode``, ``ask`` or the widgets just waits for its result): asyncio's cancellation is what
makes the deadline exact, and the connection pool is shared. ``fetch_range`` reads only the
leading bytes of a response (a ``Range`` request, streamed and closed early when a server
ignores it): that is how ``read_images`` reads a URL's header without downloading the image.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import urllib.parse
from collections.abc import Coroutine
from typing import Any

from ..errors import ImageError
from ..redact import install_log_filter, redact_text

__all__ = [
    "DOWNLOAD_MAX_BYTES",
    "DOWNLOAD_TIMEOUT",
    "MAX_IMAGE_BYTES_VARIABLE",
    "MAX_REDIRECTS",
    "download",
    "fetch_range",
    "max_image_bytes",
    "over_cap",
]


DOWNLOAD_TIMEOUT = 30.0  # seconds: one deadline for connecting, headers and the whole body

DOWNLOAD_MAX_BYTES = 50 * 1024 * 1024  # the default cap on one image read whole

# The environment variable that sets the cap (bytes), read at each read: it reaches the command
# line and, set before a cluster starts, Dask workers too.
MAX_IMAGE_BYTES_VARIABLE = "VISIONKIT_MAX_IMAGE_BYTES"

MAX_REDIRECTS = 5

_RETRIES = 2  # transient failures, within the deadline
_RETRY_STATUS = frozenset({429, 502, 503, 504})
_REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 1 << 16


def max_image_bytes() -> int:
    """The most bytes one image may have when it is read whole (downloaded, fetched from a
    bucket, read from disk): ``VISIONKIT_MAX_IMAGE_BYTES`` when set, else 50 MB.

    The cap keeps a mislabelled 10 GB file or an endless response from filling memory; raise
    it for large scans (``os.environ["VISIONKIT_MAX_IMAGE_BYTES"] = str(200 * 1024**2)``).
    """
    text = os.environ.get(MAX_IMAGE_BYTES_VARIABLE, "").strip()
    if not text:
        return DOWNLOAD_MAX_BYTES
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(
            f"{MAX_IMAGE_BYTES_VARIABLE}={text!r} is not a number of bytes above 0 "
            f"(e.g. {200 * 1024 * 1024} for 200 MB)"
        )
    return value


def over_cap(what: str, cap: int, size: int | str | None = None) -> str:
    """The reason a read was refused: ``file over the 50 MB cap (62,914,560 bytes; ...)``,
    saying how to raise the cap."""
    shown = f"{size:,} bytes; " if isinstance(size, int) else f"{size} bytes; " if size else ""
    return f"{what} over the {size_text(cap)} cap ({shown}{MAX_IMAGE_BYTES_VARIABLE} raises it)"


def download(url: str, *, timeout: float = DOWNLOAD_TIMEOUT, max_bytes: int | None = None) -> bytes:
    """GET ``url`` within ``timeout`` seconds in all, refusing anything over ``max_bytes``
    (default ``max_image_bytes()``)."""
    if max_bytes is None:
        max_bytes = max_image_bytes()
    data, _size = _run(_fetch(url, 0, None, timeout=timeout, max_bytes=max_bytes), timeout)
    return data


def fetch_range(
    url: str, start: int, end: int, *, timeout: float = DOWNLOAD_TIMEOUT
) -> tuple[bytes, int | None]:
    """Bytes ``start`` to ``end`` (exclusive) of ``url``, and the whole object's size if known.

    Asks for a ``Range``; a server that ignores it is read only as far as ``end`` and then the
    connection is closed. Fewer bytes than asked means the object ends there.
    """
    return _run(_fetch(url, start, end, timeout=timeout, max_bytes=end - start), timeout)


# --------------------------------------------------------------------------------------------
# the shared event loop


class _Loop:
    lock = threading.Lock()
    loop: asyncio.AbstractEventLoop | None = None
    pid: int | None = None
    client: Any = None


def _loop() -> asyncio.AbstractEventLoop:
    with _Loop.lock:
        if _Loop.loop is None or _Loop.pid != os.getpid() or not _Loop.loop.is_running():
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            threading.Thread(target=run, name="visionkit-download", daemon=True).start()
            ready.wait()
            _Loop.loop, _Loop.pid, _Loop.client = loop, os.getpid(), None
        return _Loop.loop


def _run(coro: Coroutine[Any, Any, Any], timeout: float) -> Any:
    """Run ``coro`` on the download loop and wait for it; past ``timeout`` it is cancelled."""

    async def bounded() -> Any:
        try:
            return await asyncio.wait_for(coro, timeout)
        except asyncio.TimeoutError:
            raise ImageError(f"download failed: timed out after {timeout:g} s") from None

    return asyncio.run_coroutine_threadsafe(bounded(), _loop()).result()


def _client() -> Any:
    if _Loop.client is None:
        import httpx

        install_log_filter()  # httpx logs each request's URL: a user:token@ in it is masked
        _Loop.client = httpx.AsyncClient(
            follow_redirects=False,  # followed by hand: scheme and count checked
            headers={"User-Agent": "visionkit", "Accept-Encoding": "identity"},
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            timeout=None,  # the deadline in _run bounds everything
            # httpx parses a Location header even when it does not follow it, and raises on
            # odd ones ("file:///x", "data:..."): look at it first.
            event_hooks={"response": [_check_location]},
        )
    return _Loop.client


# --------------------------------------------------------------------------------------------
# one download


async def _fetch(
    url: str, start: int, end: int | None, *, timeout: float, max_bytes: int
) -> tuple[bytes, int | None]:
    import httpx

    _check_scheme(url, url)
    delay = 0.2
    for attempt in range(_RETRIES + 1):
        try:
            return await _fetch_once(url, start, end, max_bytes=max_bytes)
        except _Transient as exc:
            if attempt == _RETRIES:
                raise ImageError(f"download failed: {redact_text(str(exc))}") from None
        except ImageError:
            raise
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            if attempt == _RETRIES:
                raise ImageError(f"download failed: cannot connect ({_why(exc)})") from None
        except httpx.RemoteProtocolError as exc:
            raise ImageError(f"download failed: {_protocol_reason(exc)}") from None
        except httpx.HTTPError as exc:
            raise ImageError(f"download failed: {type(exc).__name__}: {_why(exc)}") from None
        except httpx.InvalidURL as exc:
            raise ImageError(f"download failed: invalid URL ({redact_text(str(exc))})") from None
        except Exception as exc:  # socket errors, malformed URLs, a port out of range...
            exc = _single(exc)
            raise ImageError(f"download failed: {type(exc).__name__}: {_why(exc)}") from None
        await asyncio.sleep(delay * (1 + random.random()))
        delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover


class _Transient(Exception):
    """A status worth retrying (429, 502, 503, 504)."""


async def _fetch_once(
    url: str, start: int, end: int | None, *, max_bytes: int
) -> tuple[bytes, int | None]:
    client = _client()
    headers = {}
    if end is not None:
        headers["Range"] = f"bytes={start}-{end - 1}"
    elif start:
        headers["Range"] = f"bytes={start}-"
    current = url
    for _hop in range(MAX_REDIRECTS + 1):
        async with client.stream("GET", current, headers=headers) as response:
            if response.status_code in _REDIRECT_STATUS and "location" in response.headers:
                target = urllib.parse.urljoin(current, response.headers["location"])
                _check_scheme(target, url)
                current = target
                continue
            return await _read_body(response, start, end, max_bytes)
    raise ImageError(f"download failed: more than {MAX_REDIRECTS} redirects")


async def _read_body(
    response: Any, start: int, end: int | None, max_bytes: int
) -> tuple[bytes, int | None]:
    status = response.status_code
    if status in _RETRY_STATUS:
        raise _Transient(f"HTTP {status} {response.reason_phrase}")
    if status == 416:  # range starts past the end: nothing there
        return b"", _total_size(response)
    if status >= 400:
        raise ImageError(f"download failed: HTTP {status} {response.reason_phrase}")
    if status >= 300:
        raise ImageError(f"download failed: HTTP {status} without a Location to follow")
    ranged = status == 206
    skip = 0 if ranged else start  # a server that ignored Range sends from byte 0
    want = None if end is None else end - start
    length = response.headers.get("content-length", "")
    if want is None and length.isdigit() and int(length) > max_bytes:
        raise ImageError(over_cap("download", max_bytes, int(length)))
    chunks: list[bytes] = []
    total = 0
    async for chunk in response.aiter_raw(_CHUNK):
        if skip:
            cut = min(skip, len(chunk))
            chunk, skip = chunk[cut:], skip - cut
            if not chunk:
                continue
        if want is not None and total + len(chunk) >= want:
            chunks.append(chunk[: want - total])
            total = want
            break  # leaving the stream closes the connection: the rest is never read
        total += len(chunk)
        if total > max_bytes:
            raise ImageError(over_cap("download", max_bytes))
        chunks.append(chunk)
    return b"".join(chunks), _total_size(response)


def _total_size(response: Any) -> int | None:
    crange = response.headers.get("content-range", "")  # "bytes 0-99/12345"
    if "/" in crange:
        total = crange.rsplit("/", 1)[1].strip()
        return int(total) if total.isdigit() else None
    length = response.headers.get("content-length", "")
    return int(length) if response.status_code == 200 and length.isdigit() else None


async def _check_location(response: Any) -> None:
    if response.status_code in _REDIRECT_STATUS and "location" in response.headers:
        target = urllib.parse.urljoin(str(response.request.url), response.headers["location"])
        _check_scheme(target, None)


def _check_scheme(target: str, original: str | None) -> None:
    scheme = urllib.parse.urlsplit(target).scheme.lower()
    if scheme not in ("http", "https"):
        where = "" if target == original else " (redirected)"
        raise ImageError(
            f"download failed: refusing {scheme or 'a relative'}: URL{where}; "
            "only http(s) is followed"
        )


def _protocol_reason(exc: Exception) -> str:
    text = str(exc)
    if "incomplete" in text.lower() or "closed" in text.lower():
        return "the connection closed before the whole image arrived"
    return f"malformed HTTP response ({text})"


def _single(exc: Exception) -> Exception:
    """The one error inside an exception group of one (anyio wraps a failed connect so)."""
    inner = getattr(exc, "exceptions", None)
    while isinstance(inner, tuple) and len(inner) == 1 and isinstance(inner[0], Exception):
        exc = inner[0]
        inner = getattr(exc, "exceptions", None)
    return exc


def _why(exc: Exception) -> str:
    return redact_text(str(exc)) or type(exc).__name__


def size_text(n: int) -> str:
    """A byte cap as a message says it: ``50 MB``, or ``1,234 bytes``."""
    if n >= 1024 * 1024 and n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)} MB"
    return f"{n:,} bytes"
