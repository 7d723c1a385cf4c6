"""Credentials out of URLs: nothing visionkit stores, prints, logs or keys on holds one.

A URL can carry a credential in two places: its userinfo (``https://user:token@host/v1``,
``https://TOKEN@host``) and its query string (``?api-key=...``, ``?key=``, ``?token=``, a shared
access signature's ``sig=``, a presigned URL's ``X-Amz-Signature``). This module is the one place
that knows how to take them out:

- ``redact_url``: the URL with each credential shown as ``***`` -- for reprs, errors, progress
  text, the batch manifest and log lines (``https://***@host/v1?api-key=***``);
- ``public_url``: the URL without them -- what names a server in cache keys and recordings, so
  a new token keeps the cached answers;
- ``split_url``: for ``connect``: the URL the SDK is built on (no userinfo, no query), the query
  parameters the live client sends with every request, and the userinfo as an HTTP Basic
  ``Authorization`` header value (what ``curl``, ``requests`` and ``httpx`` send for it);
- ``redact_text``: every URL inside a message, masked;
- ``install_log_filter``: masks the URLs in the log records of the HTTP libraries visionkit
  drives (``httpx``/``httpx2`` log each request line with its URL at INFO).

A query parameter is a credential when its name contains one of ``CREDENTIAL_WORDS`` (``key``,
``token``, ``sig``, ``secret``, ``pass``, ``auth``, ``credential``, ``session``...),
case-insensitively: ``api-version=2024-10-21`` stays, ``api-key=...`` goes.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from ._state import register

__all__ = [
    "CREDENTIAL_WORDS",
    "MASK",
    "has_credentials",
    "install_log_filter",
    "is_credential_name",
    "public_url",
    "redact_query",
    "redact_target",
    "redact_text",
    "redact_url",
    "split_url",
]

MASK = "***"
CREDENTIAL_WORDS = (
    "key",
    "token",
    "sig",
    "secret",
    "pass",
    "pwd",
    "auth",
    "credential",
    "session",
    "jwt",
)
_SAFE = "-_.~*"  # left as they are in a query shown: unreserved characters, and the mask
_CREDENTIAL = re.compile("|".join(CREDENTIAL_WORDS), re.IGNORECASE)
# A URL inside free text: a scheme, "://", then anything up to whitespace or a quote/bracket.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")


def is_credential_name(name: str) -> bool:
    """Whether a query parameter named ``name`` holds a credential (see the module doc)."""
    return bool(_CREDENTIAL.search(name))


def _parts(url: str) -> tuple[str, str, str, str, str] | None:
    """``urlsplit`` of ``url``, or None for something that is not a URL with a host."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        return None
    if not parts.scheme or not parts.netloc:
        return None
    return parts.scheme, parts.netloc, parts.path, parts.query, parts.fragment


def has_credentials(url: str | None) -> bool:
    """Whether ``url`` carries userinfo or a credential query parameter (masked or not)."""
    split = None if url is None else _parts(url)
    if split is None:
        return False
    _, netloc, _, query, _ = split
    pairs = parse_qsl(query, keep_blank_values=True)
    return "@" in netloc or any(is_credential_name(k) for k, _ in pairs)


def redact_url(url: str) -> str:
    """``url`` with its userinfo and credential query values shown as ``***``; anything that is
    not a URL with a host is returned as it is."""
    if "@" not in url and "?" not in url:
        return url  # the common case, without parsing
    split = _parts(url)
    if split is None:
        return url
    scheme, netloc, path, query, fragment = split
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    return urlunsplit((scheme, netloc, path, redact_query(query), fragment))


def redact_query(query: str) -> str:
    """A query string with the values of its credential parameters shown as ``***``."""
    if not query:
        return query
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(is_credential_name(k) for k, _ in pairs):
        return query
    shown = [(k, MASK if is_credential_name(k) else quote(v, safe=_SAFE)) for k, v in pairs]
    return "&".join(f"{quote(k, safe=_SAFE)}={v}" for k, v in shown)


def redact_target(target: str) -> str:
    """A request target (``/v1/files?api-key=...``, as a server logs it), its query redacted."""
    path, mark, query = target.partition("?")
    return path + mark + redact_query(query) if mark else target


def public_url(url: str | None) -> str | None:
    """``url`` without its userinfo and credential query parameters (nor a trailing slash):
    what names a server in cache keys and recordings."""
    if url is None:
        return None
    url = str(url)
    split = _parts(url)
    if split is None:
        return url.rstrip("/")
    scheme, netloc, path, query, _ = split
    netloc = netloc.rpartition("@")[2]
    kept = [
        (k, v) for k, v in parse_qsl(query, keep_blank_values=True) if not is_credential_name(k)
    ]
    return urlunsplit((scheme, netloc, path.rstrip("/"), urlencode(kept), ""))


def split_url(url: str) -> tuple[str, dict[str, str], str | None]:
    """``(base, query, authorization)`` for a live client: ``base`` without userinfo or query
    (the SDK appends paths to it, which a query would break), every query parameter to send
    with each request, and the userinfo as a Basic ``Authorization`` value (or None).

    Raises ``ValueError`` for a URL whose credentials were masked (``***``): it cannot connect.
    """
    split = _parts(url)
    if split is None:
        return url, {}, None
    scheme, netloc, path, query, _ = split
    authorization = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        if MASK in (unquote(user), unquote(password)):
            raise ValueError(_masked_message(url))
        pair = f"{unquote(user)}:{unquote(password)}".encode()
        authorization = "Basic " + base64.b64encode(pair).decode("ascii")
    params = dict(parse_qsl(query, keep_blank_values=True))
    if any(v == MASK and is_credential_name(k) for k, v in params.items()):
        raise ValueError(_masked_message(url))
    return urlunsplit((scheme, netloc, path, "", "")), params, authorization


def _masked_message(url: str) -> str:
    return (
        f"{redact_url(url)}: its credentials were removed (***) when visionkit stored or showed "
        "it, so it cannot be used to connect. Pass the URL with its credentials (for example "
        "vk.connect(base_url=...) from your own configuration) instead."
    )


def redact_text(text: str) -> str:
    """``text`` with every URL in it passed through ``redact_url``."""
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


class RedactingFilter(logging.Filter):
    """A logging filter that masks credentials in the URLs of each record's message."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record that cannot format is the handler's business
            return True
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


# The loggers that write request URLs: httpx/httpx2 ("HTTP Request: POST URL ..."), the openai
# SDK, httpcore, aiohttp's client and urllib3; and visionkit's own. A filter on a logger sees
# only the records logged on that very logger, so each is named.
LOGGERS = (
    "httpx",
    "httpx2",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "openai",
    "openai._base_client",
    "aiohttp.client",
    "urllib3.connectionpool",
    "visionkit",
)
_FILTER = RedactingFilter()
_installed = threading.Event()


def install_log_filter() -> None:
    """Put ``RedactingFilter`` on ``LOGGERS`` (once per process; cheap to call again)."""
    if _installed.is_set():
        return
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    _installed.set()


def _held_filter() -> tuple[int, str]:
    if not _installed.is_set():
        return 0, ""
    return len(LOGGERS), "credentials masked in the records of: " + ", ".join(LOGGERS)


register("log filter", __name__, _held_filter)  # kept: it only masks secrets
