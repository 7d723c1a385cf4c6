"""Images in object stores and other fsspec filesystems: ``s3://``, ``gs://``, ``az://``, ``hf://``...

An image cell or ``read_images`` source that is a URL with a scheme other than ``http(s)``,
``data`` or ``file`` is read through [fsspec](https://filesystem-spec.readthedocs.io) and the
filesystem package for its scheme, installed by an extra: ``visionkit[s3]`` (s3fs),
``visionkit[gcs]`` (gcsfs), ``visionkit[azure]`` (adlfs), ``visionkit[hf]`` (huggingface_hub,
with ``datasets``). Plain ``http(s)`` URLs are *not* read through fsspec but by
``visionkit.images.download`` (one deadline, a size cap, redirects only to http(s)): fsspec's
HTTP filesystem has none of those guards.

Credentials come from where each package looks for them (``AWS_*`` variables and
``~/.aws``, ``GOOGLE_APPLICATION_CREDENTIALS``, ``AZURE_STORAGE_*``, ``HF_TOKEN``, fsspec's
``FSSPEC_<PROTOCOL>_<OPTION>`` variables), or from ``storage_options=`` as in pandas. Options
given to ``read_images`` (or ``set_storage_options``) are remembered *in this process's memory
only* for that source's prefix, so ``encode``, ``ask`` and the widgets read the same cells
with the same options later. They never appear in a repr, an error, a log or a cache key (the
answer cache keys on image *content*).

Reading one object (``read_object``, what ``encode`` and ``ask`` do) is one ranged GET of at
most ``max_bytes`` + 1 bytes within one deadline, retried twice on transient errors; a missing
object is "file not found", a forbidden one "access denied", each that row's error.

What surprised us in fsspec, s3fs, gcsfs, adlfs and moto while building this module (and
what it does about each) is on the documentation's Design page, docs/design.md ("Remote
sources").
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

from .._state import register
from ..errors import ImageError, ReadImagesWarning, warn
from ..redact import redact_url, split_url
from .download import over_cap

__all__ = [
    "REMOTE_TIMEOUT",
    "filesystem",
    "is_remote_url",
    "list_images",
    "public_url",
    "read_object",
    "set_storage_options",
]

logger = logging.getLogger("visionkit")

REMOTE_TIMEOUT = 60.0  # seconds: one deadline per object read (s3fs itself waits up to 60 s)

_RETRIES = 2
_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*)://")
_LOCAL_SCHEMES = frozenset({"http", "https", "file", "data"})

# scheme -> (package that implements it, visionkit extra that installs it)
_EXTRAS = {
    "s3": ("s3fs", "s3"),
    "s3a": ("s3fs", "s3"),
    "gs": ("gcsfs", "gcs"),
    "gcs": ("gcsfs", "gcs"),
    "az": ("adlfs", "azure"),
    "abfs": ("adlfs", "azure"),
    "abfss": ("adlfs", "azure"),
    "adl": ("adlfs", "azure"),
    "hf": ("huggingface_hub", "hf"),
}


def is_remote_url(text: object) -> bool:
    """True for a string URL read through fsspec (``s3://``, ``gs://``, ``memory://``...)."""
    if not isinstance(text, str):
        return False
    m = _URL.match(text)
    return m is not None and m.group(1).lower() not in _LOCAL_SCHEMES


def scheme_of(url: str) -> str:
    m = _URL.match(url)
    return m.group(1).lower() if m else ""


# --------------------------------------------------------------------------------------------
# storage options, remembered per prefix


_OPTIONS: dict[str, dict[str, Any]] = {}
_OPTIONS_LOCK = threading.Lock()


def set_storage_options(
    prefix: str, storage_options: Mapping[str, Any] | None = None, **kw: Any
) -> None:
    """Use these fsspec ``storage_options`` for every image URL that starts with ``prefix``.

    >>> set_storage_options("s3://bucket/", endpoint_url="http://127.0.0.1:9000")  # doctest: +SKIP

    Kept in memory for this process only (never written anywhere); the longest matching prefix
    wins. ``read_images(source, storage_options=...)`` calls this for its source. ``None`` and
    no keywords forget the prefix.
    """
    if not is_remote_url(prefix):
        raise ValueError("set_storage_options needs a URL prefix such as 's3://bucket/'")
    merged = {**(storage_options or {}), **kw}
    with _OPTIONS_LOCK:
        if merged:
            _OPTIONS[prefix] = merged
        else:
            _OPTIONS.pop(prefix, None)


def options_for(url: str) -> dict[str, Any]:
    with _OPTIONS_LOCK:
        best = max((p for p in _OPTIONS if url.startswith(p)), key=len, default=None)
        return dict(_OPTIONS[best]) if best is not None else {}


def remember_options(source: str, options: Mapping[str, Any] | None) -> None:
    """Remember ``options`` for ``source``'s bucket (``s3://bucket/``): its other objects are
    read with the same credentials and endpoint."""
    if options:
        m = re.match(r"^([^:]+://[^/]*)", source)
        set_storage_options((m.group(1) if m else source) + "/", options)


_FILESYSTEMS: dict[tuple[str, str, str], Any] = {}
_FILESYSTEMS_LOCK = threading.Lock()


def filesystem(url: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    """``(fsspec filesystem, path within it)`` for ``url``; a missing package is an
    ``ImportError`` naming the extra to install.

    One filesystem object per scheme, bucket and options, shared by every thread: fsspec's own
    instance cache is per thread for synchronous filesystems (its key includes
    ``threading.get_ident()``), which the 32 header threads would multiply.
    """
    options = dict(storage_options) if storage_options else options_for(url)
    scheme = scheme_of(url)
    m = re.match(r"^[^:]+://([^/]*)", url)
    secret = hashlib.sha256(repr(sorted(options.items())).encode()).hexdigest()
    key = (scheme, m.group(1) if m else "", secret)  # the options only as a hash
    with _FILESYSTEMS_LOCK:
        fs = _FILESYSTEMS.get(key)
    if fs is not None and "::" not in url:
        return fs, fs._strip_protocol(url)
    try:
        import fsspec.core
    except ImportError:
        raise ImportError(_hint(scheme)) from None
    try:
        if scheme in ("gs", "gcs") and options.get("endpoint_url"):
            fs, path = _plain_gcs(url, options)
        else:
            fs, path = fsspec.core.url_to_fs(url, **options)
    except ImportError:
        raise ImportError(_hint(scheme)) from None
    except ValueError as exc:
        if "Protocol not known" in str(exc) or "not known" in str(exc):
            raise ValueError(f"{scheme}:// is not a filesystem fsspec knows") from None
        raise
    with _FILESYSTEMS_LOCK:
        _FILESYSTEMS.setdefault(key, fs)
    return fs, path


def _plain_gcs(url: str, options: Mapping[str, Any]) -> tuple[Any, str]:
    """gcsfs's plain filesystem for a custom ``endpoint_url`` (an emulator, a private endpoint).

    gcsfs (2026.x) hands ``gs://`` to ``ExtendedGcsFileSystem`` unless the environment says
    ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` before it is imported; that class first asks
    each bucket's layout over gRPC (TLS, to the endpoint's host), which an emulator does not
    serve: 60 s of retries per bucket, and an unknown answer is not cached, so it starts again
    on every call. Such an endpoint serves only the JSON API the plain class speaks.
    """
    from gcsfs.core import GCSFileSystem

    fs = GCSFileSystem(**options)
    return fs, fs._strip_protocol(url)


def _hint(scheme: str) -> str:
    package, extra = _EXTRAS.get(scheme, ("fsspec", "s3"))
    return (
        f"reading {scheme}:// images needs {package}: pip install 'visionkit[{extra}]'"
        if scheme in _EXTRAS
        else f"reading {scheme}:// images needs fsspec: pip install fsspec"
    )


def full_url(fs: Any, path: str, scheme: str | None = None) -> str:
    """A path from ``fs`` as a URL with its protocol (fsspec's listings drop it), written with
    ``scheme`` when given: adlfs writes ``abfs://`` for a listing of ``az://``, and the options
    remembered for ``az://container/`` must still apply to what was listed there."""
    url = fs.unstrip_protocol(path)
    own = scheme_of(url)
    return f"{scheme}{url[len(own) :]}" if scheme and own and own != scheme else url


# --------------------------------------------------------------------------------------------
# reading objects


def fetch(
    fs: Any, path: str, start: int, end: int | None, *, timeout: float = REMOTE_TIMEOUT
) -> bytes:
    """Bytes ``start``..``end`` of one object, within ``timeout``, retried on transient errors.

    Raises ``ImageError`` with a plain reason (never the options or the exception's repr).
    """
    deadline = time.monotonic() + timeout
    delay = 0.2
    for attempt in range(_RETRIES + 1):
        left = max(0.1, deadline - time.monotonic())
        try:
            kwargs = {"timeout": left} if _is_async(fs) else {}
            return fs.cat_file(path, start=start, end=end, **kwargs)
        except FileNotFoundError:
            raise ImageError("file not found (no such object)") from None
        except IsADirectoryError:
            raise ImageError("is a directory, not an image file") from None
        except ImportError:
            raise
        except Exception as exc:
            if _forbidden(exc):
                raise ImageError(
                    "access denied (the credentials may not read this object)"
                ) from None
            reason = _reason(exc)
            if not _transient(exc) or attempt == _RETRIES or time.monotonic() >= deadline:
                raise ImageError(f"download failed: {reason}") from None
        time.sleep(min(delay * (1 + random.random()), max(0.0, deadline - time.monotonic())))
        delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover


def read_object(
    url: str,
    *,
    max_bytes: int,
    timeout: float = REMOTE_TIMEOUT,
    storage_options: Mapping[str, Any] | None = None,
) -> bytes:
    """The whole object at ``url``: one GET of at most ``max_bytes`` + 1 bytes (a bigger
    object is refused without being read further)."""
    try:
        fs, path = filesystem(url, storage_options)
    except ValueError as exc:  # an unknown scheme ("c://x.jpg"): this row's problem only
        raise ImageError(str(exc)) from None
    deadline = time.monotonic() + timeout
    # The size first (from the listing fsspec keeps after read_images, else one HEAD): an
    # object over the cap is refused before a byte of it is read.
    size = _known_size(fs, path, timeout)
    if size is not None and size > max_bytes:
        raise ImageError(over_cap("object", max_bytes, size))
    left = max(0.1, deadline - time.monotonic())
    data = fetch(fs, path, 0, max_bytes + 1, timeout=left)
    if len(data) > max_bytes:
        raise ImageError(over_cap("object", max_bytes))
    return data


def object_size(fs: Any, path: str, *, timeout: float = REMOTE_TIMEOUT) -> int | None:
    try:
        kwargs = {"timeout": timeout} if _is_async(fs) else {}
        size = fs.size(path, **kwargs)
    except FileNotFoundError:
        raise ImageError("file not found (no such object)") from None
    except Exception as exc:
        if _forbidden(exc):
            raise ImageError("access denied (the credentials may not read this object)") from None
        return None
    return int(size) if size is not None else None


def _forbidden(exc: BaseException) -> bool:
    """A 401/403 from any store: s3fs raises PermissionError, gcsfs an OSError that says
    "Forbidden" (or "Unauthorized"), adlfs azure-core's HttpResponseError with its status."""
    if isinstance(exc, PermissionError) or getattr(exc, "status_code", None) in (401, 403):
        return True
    text = str(exc).lstrip()
    return isinstance(exc, OSError) and text.startswith(("Forbidden", "Unauthorized"))


def _known_size(fs: Any, path: str, timeout: float) -> int | None:
    """The object's size before reading it, or None when the store will not say: a HEAD
    refused while a GET may be allowed (moto's IAM does that for a user allowed s3:GetObject
    on a prefix, though AWS allows both) is left to the GET to decide."""
    try:
        return object_size(fs, path, timeout=timeout)
    except ImageError as exc:
        if exc.reason.startswith("file not found"):
            raise
        return None


def _is_async(fs: Any) -> bool:
    return bool(getattr(fs, "async_impl", False))


_PERMANENT = (
    "InvalidRange",
    "NoSuchBucket",
    "400",
    "Bad Request",
    "credentials",
    "Credentials",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
)


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, (ValueError, TypeError, NotImplementedError)):
        return False
    return not any(s in f"{type(exc).__name__} {exc}" for s in _PERMANENT)


def _reason(exc: BaseException) -> str:
    name = type(exc).__name__
    if name == "NoCredentialsError":
        return "no credentials found (set them in the environment or ~/.aws, or storage_options=)"
    if name == "FSTimeoutError" or isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = re.sub(r"https?://\S+", "<endpoint>", text)[:200]  # no endpoint URLs with tokens
    return f"{name}: {text}" if text else name


# --------------------------------------------------------------------------------------------
# listing


def list_images(
    source: str,
    *,
    recursive: bool = True,
    storage_options: Mapping[str, Any] | None = None,
    is_image_name: Any = None,
    trust_name: bool = False,
    skipped: list[str] | None = None,
) -> list[tuple[str, int | None]]:
    """``(url, size)`` of the objects a remote source stands for: a prefix (a "folder", walked
    recursively unless ``recursive=False``), a glob, or one object.

    Hidden names (``.``-prefixed) are skipped; ``is_image_name(name)`` (True, False or None for
    "unknown: look at the bytes") filters by extension. A prefix or object that does not exist
    raises ``FileNotFoundError``; a glob matching nothing warns and gives ``[]``.
    ``trust_name``: a source named like an image file is taken to be one without asking the
    store (one request less per item of a long list; a missing one becomes its row's error).
    ``skipped`` collects the names left out by ``is_image_name`` (for a warning).
    """
    try:
        with _slow_note(source):
            return _list(source, recursive, storage_options, is_image_name, trust_name, skipped)
    except Exception as exc:
        if not _forbidden(exc) and type(exc).__name__ not in (
            "NoCredentialsError",
            "PartialCredentialsError",
        ):
            raise
        what = "access denied listing" if _forbidden(exc) else "no credentials found to list"
        raise PermissionError(
            f"read_images: {what} {public_url(source)}: {_credentials_hint(scheme_of(source))}"
        ) from None


SLOW_NOTE_SECONDS = 15.0


@contextlib.contextmanager
def _slow_note(source: str) -> Any:
    """Say so (once, on the ``visionkit`` logger, which Python prints when nothing else is
    set up) when listing ``source`` takes longer than ``SLOW_NOTE_SECONDS``: a store that is
    slow to answer must not look like a hung notebook cell."""
    scheme = scheme_of(source)
    why = (
        " gcsfs first asks each bucket's layout over gRPC; if that is what waits, set "
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false before importing gcsfs"
        if scheme in ("gs", "gcs")
        else ""
    )
    timer = threading.Timer(
        SLOW_NOTE_SECONDS,
        lambda: logger.warning(
            "read_images: still listing %s after %.0f s; the store is slow to answer.%s",
            public_url(source),
            SLOW_NOTE_SECONDS,
            why,
        ),
    )
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _list(
    source: str,
    recursive: bool,
    storage_options: Mapping[str, Any] | None,
    is_image_name: Any,
    trust_name: bool,
    skipped: list[str] | None,
) -> list[tuple[str, int | None]]:
    fs, path = filesystem(source, storage_options)
    base = source.rstrip("/").rsplit("/", 1)[-1]
    named_like_image = is_image_name is not None and is_image_name(base)
    if trust_name and named_like_image and re.search(r"[*?\[/]$|[*?\[]", source) is None:
        return [(source, None)]
    glob_chars = re.search(r"[*?\[]", path) is not None
    root = re.split(r"[*?\[]", path, maxsplit=1)[0].rsplit("/", 1)[0] if glob_chars else path
    with contextlib.suppress(Exception):  # a filesystem without a listings cache
        fs.invalidate_cache(root)
    if glob_chars:
        found = fs.glob(path, detail=True)
        if not found:
            warn(f"read_images: {redact_url(source)} matches no file", ReadImagesWarning)
    else:
        try:
            info = fs.info(path)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"read_images: no such object or prefix: {redact_url(source)}"
            ) from None
        if info.get("type") != "directory":
            return [(source, _size(info))]
        found = fs.find(path, maxdepth=None if recursive else 1, detail=True)
    out = []
    for name, info in found.items():
        if info.get("type") == "directory":
            continue
        base = name.rstrip("/").rsplit("/", 1)[-1]
        if base.startswith("."):
            continue
        if is_image_name is not None and is_image_name(base) is False:
            if skipped is not None:
                skipped.append(base)
            continue
        out.append((full_url(fs, name, scheme_of(source)), _size(info)))
    return out


_HINTS = {
    "s3": (
        "storage_options={'key': ..., 'secret': ...} (or {'anon': True} for a public bucket), "
        "or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile in ~/.aws"
    ),
    "gs": (
        "storage_options={'token': 'path/to/service-account.json'} (or {'token': 'anon'} for "
        "a public bucket), or GOOGLE_APPLICATION_CREDENTIALS"
    ),
    "az": (
        "storage_options={'account_name': ..., 'account_key': ...} or {'connection_string': "
        "...}, or AZURE_STORAGE_CONNECTION_STRING"
    ),
    "hf": "storage_options={'token': ...}, or HF_TOKEN (huggingface-cli login)",
}
_HINTS["s3a"] = _HINTS["s3"]
_HINTS["gcs"] = _HINTS["gs"]
_HINTS["abfs"] = _HINTS["abfss"] = _HINTS["adl"] = _HINTS["az"]


def _credentials_hint(scheme: str) -> str:
    how = _HINTS.get(scheme, "storage_options= with the filesystem's credentials")
    return (
        "the credentials in use may not read it, or none were found. Give credentials that "
        f"may list and read it: {how}"
    )


def public_url(url: str) -> str:
    """``url`` as messages show it: no ``user:password@`` and no query string (which may hold
    a token or a signature); ``visionkit.redact`` takes them out."""
    try:
        return split_url(url)[0]
    except ValueError:  # credentials already masked (***)
        return redact_url(url)


def _size(info: Mapping[str, Any]) -> int | None:
    size = info.get("size")
    return int(size) if isinstance(size, (int, float)) else None


def _held_options() -> tuple[int, str]:
    with _OPTIONS_LOCK:
        held = {prefix: sorted(options) for prefix, options in _OPTIONS.items()}
    shown = [f"{redact_url(p)} ({', '.join(keys)})" for p, keys in sorted(held.items())]
    return len(held), "; ".join(shown)


def _forget_options() -> None:
    with _OPTIONS_LOCK:
        _OPTIONS.clear()


def _held_filesystems() -> tuple[int, str]:
    with _FILESYSTEMS_LOCK:
        keys = sorted({f"{scheme}://{bucket}" for scheme, bucket, _ in _FILESYSTEMS})
    return len(keys), ", ".join(keys)


def _forget_filesystems() -> None:
    with _FILESYSTEMS_LOCK:
        _FILESYSTEMS.clear()


register("storage options", __name__, _held_options, _forget_options)
register("fsspec filesystems", __name__, _held_filesystems, _forget_filesystems)
