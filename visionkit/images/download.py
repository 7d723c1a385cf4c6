"""Download an image over http(s), streamed, with a size cap and a timeout."""

from __future__ import annotations

import urllib.error
import urllib.request

from ..errors import ImageError

__all__ = ["DOWNLOAD_MAX_BYTES", "DOWNLOAD_TIMEOUT", "download"]


DOWNLOAD_TIMEOUT = 30.0  # seconds, per connect / per read

DOWNLOAD_MAX_BYTES = 50 * 1024 * 1024  # a bigger response is cut off, never held in memory


def download(url: str, *, timeout: float, max_bytes: int) -> bytes:
    """GET ``url``, streamed, refusing anything over ``max_bytes`` (checked as it arrives)."""
    request = urllib.request.Request(url, headers={"User-Agent": "visionkit"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise ImageError(f"download over {_size_text(max_bytes)} cap ({length} bytes)")
            chunks, total = [], 0
            while True:
                chunk = response.read(min(1 << 16, max_bytes + 1 - total))
                if not chunk:
                    break
                total += len(chunk)
                if total > max_bytes:
                    raise ImageError(f"download over {_size_text(max_bytes)} cap")
                chunks.append(chunk)
    except urllib.error.HTTPError as exc:
        raise ImageError(f"download failed: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            raise ImageError(f"download failed: timed out after {timeout:g} s") from exc
        raise ImageError(f"download failed: {reason}") from exc
    except TimeoutError as exc:
        raise ImageError(f"download failed: timed out after {timeout:g} s") from exc
    except (OSError, ValueError) as exc:
        raise ImageError(f"download failed: {type(exc).__name__}: {exc}") from exc
    return b"".join(chunks)


def _size_text(n: int) -> str:
    if n >= 1024 * 1024 and n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)} MB"
    return f"{n:,} bytes"
