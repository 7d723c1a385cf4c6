"""A local OpenAI-compatible stand-in for inference.net, for tests, tutorials and key-less users.

Usage::

    import openai, visionkit.offline
    with visionkit.offline.serve(latency=0.2) as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="offline")
        client.chat.completions.create(model="visionkit-offline", messages=[...])
        base_url.server.stats.status_counts       # what the server saw

or from a shell, for any OpenAI client: ``python -m visionkit.offline --port 8000 --latency 0.2``.

It is a real HTTP/1.1 server on 127.0.0.1 (stdlib ``ThreadingHTTPServer``, one thread per
keep-alive connection) serving ``POST /v1/chat/completions`` and ``GET /v1/models``. Its answers
are honest: a deterministic description of the pixels (size, format, dominant named colours,
brightness), never a pretend understanding of the content; in JSON mode the same facts as fields.

What it enforces, in this order, with OpenAI-shaped errors (``{"error": {"message", "type",
"param", "code"}}``) -- these are inference.net's documented rules (its vision guide), taken from
the provider profile (``profile="offline"``, or any other registered profile):

==========================================  ======  =====================================
rule                                        status  why
==========================================  ======  =====================================
``Authorization: Bearer <key>``             401     the key is never echoed or logged
body smaller than 1,000,000 bytes           413     "must be less than 1MB"; decided from
                                                    Content-Length, the body is drained in
                                                    chunks, never held in memory
rate limit (token bucket), if set           429     ``Retry-After`` + ``retry-after-ms``
valid JSON, ``model``, ``messages``         400
known model                                 404     see ``models`` below
images only as base64 ``data:`` URIs        400     "no images from a URL"
png / jpeg / webp / gif, and the bytes      400     sniffed from magic bytes, then Pillow
match the declared mimetype
at most 2 images per request                400
==========================================  ======  =====================================

``usage.prompt_tokens`` is the provider's token formula on each image's real size (read from its
header) plus ``ceil(len(text) / 4)`` for the text of all messages; ``completion_tokens`` is
``ceil(len(answer) / 4)``.

Models: the configured ``model`` ("visionkit-offline") and inference.net's default model name
are accepted, so code written for inference.net runs unchanged; any other name is a 404 like a
real provider's, unless ``any_model=True`` (``--any-model``), for pipelines with their own names.

Knobs for tests and benchmarks: ``latency`` (seconds per answered request, slept in the handler
thread so requests overlap), ``fail_rate`` (a fraction answered with ``fail_status``; decided by
hashing ``seed``, the body and how many times that body was seen, so a given run fails the same
requests and a retry can succeed), ``rate_limit`` (requests/second, ``burst`` bucket size; each
refused request is told, in ``Retry-After`` (whole seconds, as HTTP requires) and
``retry-after-ms`` (exact, read first by the openai SDK), when a token frees *for it*: successive
refusals get successive tokens, so clients honouring the header come back spread out), and
``OfflineServer.inject(...)``: one-shot faults consumed by the next chat requests (a status with
optional ``Retry-After``, a ``delay`` to provoke client timeouts, ``drop=True`` to close the
connection without answering). ``pixels=False`` reads only each image's header (size, format;
every rule still enforced) -- about 1.2 instead of 7 ms of server CPU per 200 KB JPEG, for
benchmarks where the server shares the client's CPU. ``OfflineServer.stats`` counts what
happened (requests, connections, statuses, peak concurrency, image bytes, retries, bodies seen
more than once, server CPU per request); it is updated *before* the answer is sent, so a client
holding an answer can trust the stats to include it.

Surprises met while building it (measured on the 2-core CI machine):

- The openai SDK (httpx2) sends a ``Content-Length`` body on a keep-alive connection and an
  ``x-stainless-retry-count`` header on each attempt; the server counts retries from it. The SDK
  itself costs ~4.5 ms of client CPU per request, more than this server does per text request.
- ``socketserver``'s default listen backlog is 5: 32 AsyncOpenAI requests opening connections at
  once got 9 connection resets in 96 and >1 s stalls. The backlog here is 1024.
- ``http.server`` sends headers and body separately; with Nagle's algorithm and delayed ACKs a
  keep-alive response took 45 ms instead of 0.5 ms. Responses go out in one send, TCP_NODELAY.
- Answering 413 while the client is still sending, then closing, makes the kernel reset the
  connection and the client sees a connection error instead of the 413. So an oversized body is
  read and discarded in 64 KiB chunks (up to ``DRAIN_LIMIT``) before the 413 is sent; a client
  sending ``Expect: 100-continue`` gets the 413 before it sends the body.
- Decoding base64 costs ~1 ms of GIL-held CPU per 200 KB in CPython (binascii is not SIMD) --
  as much as the JSON parse and HTTP handling together. Header-only mode therefore checks the
  alphabet with ``bytes.translate`` (~0.15 ms) and decodes only the first 64 KiB.
- The guide's token formula has ``min``/``max`` swapped; see ``visionkit.tokens``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hashlib
import hmac
import io
import json
import logging
import math
import os
import re
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from PIL import Image

from .profiles import Provider, get_provider, providers
from .sources import sniff_format

__all__ = [
    "BaseURL",
    "Fault",
    "ImageFacts",
    "OfflineServer",
    "RequestRecord",
    "ServerStats",
    "describe_image",
    "fill_schema",
    "serve",
    "shared",
    "start",
]

log = logging.getLogger("visionkit.offline")

DEFAULT_MODEL = "visionkit-offline"
DRAIN_LIMIT = 256 * 1024 * 1024  # bodies up to this size are drained before a 413; larger: closed
PREFIX = "Offline stand-in (describes pixels only)"

MIMETYPES = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",  # the guide says "jpg/jpeg"; clients send both spellings
    "image/webp": "webp",
    "image/gif": "gif",
}


# --------------------------------------------------------------------------------------------
# Describing pixels
# --------------------------------------------------------------------------------------------


def _colour_names(rgb: np.ndarray) -> np.ndarray:
    """A colour name per RGB pixel (floats in 0..1), from hue, saturation and value."""
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    mx = rgb.max(axis=1)
    mn = rgb.min(axis=1)
    delta = mx - mn
    sat = np.where(mx > 0, delta / np.maximum(mx, 1e-9), 0.0)
    safe = np.maximum(delta, 1e-9)
    hue = np.where(
        mx == r,
        ((g - b) / safe) % 6,
        np.where(mx == g, (b - r) / safe + 2, (r - g) / safe + 4),
    )
    hue = hue * 60.0
    names = np.full(len(rgb), "grey", dtype=object)
    chroma = (sat >= 0.2) & (delta >= 0.08)
    bins = [
        (0, 15, "red"),
        (15, 45, "orange"),
        (45, 70, "yellow"),
        (70, 165, "green"),
        (165, 195, "cyan"),
        (195, 255, "blue"),
        (255, 290, "purple"),
        (290, 345, "pink"),
        (345, 361, "red"),
    ]
    for lo, hi, name in bins:
        names[chroma & (hue >= lo) & (hue < hi)] = name
    # Dark or desaturated oranges/reds/yellows read as brown.
    brownish = chroma & (hue >= 8) & (hue < 50) & ((mx < 0.6) | (sat < 0.45) & (mx < 0.8))
    names[brownish] = "brown"
    names[~chroma & (mx >= 0.85)] = "white"
    names[mx < 0.16] = "black"
    return names


@dataclass(frozen=True)
class ImageFacts:
    """What the stand-in can honestly say about one image (``brightness`` None: not analysed)."""

    width: int
    height: int
    format: str
    dominant_colours: tuple[str, ...]
    brightness: str | None
    frames: int = 1
    transparent: bool = False

    def phrase(self) -> str:
        size = f"{self.width}x{self.height}"
        fmt = self.format.upper()
        if self.frames > 1:
            kind = f"a {size} animated {fmt} ({self.frames} frames)"
        else:
            kind = f"a {size} {fmt}"
        if self.brightness is None:
            return f"{kind} (pixels not analysed)"
        if not self.dominant_colours:
            return f"{kind}, fully transparent"
        *rest, last = self.dominant_colours
        colours = f"{', '.join(rest)} and {last}" if rest else last
        extra = ", partly transparent" if self.transparent else ""
        return f"{kind}, mostly {colours}, {self.brightness}{extra}"

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["dominant_colours"] = list(self.dominant_colours)
        out["description"] = f"{PREFIX}: {self.phrase()}."
        return out


MAX_ANALYSED_PIXELS = 40_000_000  # a 1 MB PNG can hold a 20000 x 20000 image; don't decode it


def describe_image(data: bytes, *, pixels: bool = True, sample: int = 64) -> ImageFacts:
    """Size, format, dominant named colours and brightness of an encoded image.

    Decodes a reduced copy (JPEG draft mode) scaled to at most ``sample`` x ``sample`` pixels.
    With ``pixels=False``, or for images above ``MAX_ANALYSED_PIXELS``, only the header is read
    (size, format, frames). Raises an exception when Pillow cannot read the image.
    """
    with Image.open(io.BytesIO(data)) as im:
        width, height = im.size
        fmt = (im.format or sniff_format(data) or "unknown").lower()
        frames = int(getattr(im, "n_frames", 1) or 1)
        if not pixels or width * height > MAX_ANALYSED_PIXELS:
            return ImageFacts(width, height, fmt, (), None, frames)
        if fmt == "jpeg":
            im.draft("RGB", (sample, sample))
        im.load()
        has_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
        small = im.convert("RGBA" if has_alpha else "RGB")
    small.thumbnail((sample, sample), Image.Resampling.BILINEAR)
    arr = np.asarray(small, dtype=np.float32).reshape(-1, 4 if has_alpha else 3) / 255.0
    transparent = False
    if has_alpha:
        opaque = arr[:, 3] >= 0.5
        transparent = bool((~opaque).any())
        arr = arr[opaque, :3]
    if len(arr) == 0:
        return ImageFacts(width, height, fmt, (), "fully transparent", frames, True)
    names = _colour_names(arr)
    counts = Counter(names.tolist())
    total = len(names)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    dominant = [name for name, n in ranked if n / total >= 0.15][:3] or [ranked[0][0]]
    luma = float((arr @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).mean())
    brightness = (
        "mostly dark" if luma < 0.3 else "mostly bright" if luma > 0.7 else "medium brightness"
    )
    return ImageFacts(width, height, fmt, tuple(dominant), brightness, frames, transparent)


class _FactsCache:
    """A small thread-safe LRU of ImageFacts by image digest (retries resend the same image)."""

    def __init__(self, *, pixels: bool = True, size: int = 1024) -> None:
        self._items: OrderedDict[bytes, ImageFacts] = OrderedDict()
        self._pixels = pixels
        self._size = size
        self._lock = threading.Lock()

    def get(self, part: _ImagePart) -> ImageFacts:
        if not part.complete:
            with contextlib.suppress(_NeedsFullImage):
                return self._header_only(part)
        key = hashlib.blake2b(part.full(), digest_size=16).digest()
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        facts = describe_image(part.full(), pixels=self._pixels)
        with self._lock:
            self._items[key] = facts
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return facts

    @staticmethod
    def _header_only(part: _ImagePart) -> ImageFacts:
        """Facts from the decoded first bytes (GIF frame counts need the whole file)."""
        if part.data[:3] == b"GIF":
            raise _NeedsFullImage
        try:
            return describe_image(part.data, pixels=False)
        except Exception:
            raise _NeedsFullImage from None


class _NeedsFullImage(Exception):
    """The header was not within the decoded prefix."""


# --------------------------------------------------------------------------------------------
# Answers
# --------------------------------------------------------------------------------------------

_QUESTION_WORDS = re.compile(
    r"\?|^\s*(is|are|does|do|did|can|could|should|will|what|which|who|whom|whose|where|how|"
    r"why|when|count|name|identify|classify)\b",
    re.IGNORECASE,
)


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def answer_text(facts: Sequence[ImageFacts], prompt: str) -> str:
    """The plain-text answer: the pixels described, and an honest word about the question."""
    if not facts:
        body = f"{PREFIX}: this request holds no image, so there is nothing to describe."
    elif len(facts) == 1:
        body = f"{PREFIX}: {facts[0].phrase()}."
    else:
        parts = "; ".join(f"image {i} is {f.phrase()}" for i, f in enumerate(facts, 1))
        body = f"{PREFIX}: {parts}."
    if prompt.strip() and _QUESTION_WORDS.search(prompt):
        body += (
            f' It cannot see what the image shows, so it does not answer "{_short(prompt)}";'
            " use a real vision model for that."
        )
    return body


def _facts_payload(facts: Sequence[ImageFacts], prompt: str) -> dict[str, Any]:
    images = [f.as_dict() for f in facts]
    first = dict(images[0]) if images else {}
    first["description"] = answer_text(facts, prompt)
    first["images"] = images
    return first


_ALIASES = {
    "description": ("description", "caption", "summary", "answer", "text", "explanation"),
    "dominant_colours": ("dominant_colours", "dominant_colors", "colours", "colors"),
    "width": ("width", "image_width"),
    "height": ("height", "image_height"),
    "format": ("format", "image_format", "file_format"),
    "brightness": ("brightness",),
    "images": ("images",),
    "frames": ("frames", "n_frames"),
}
_LOOKUP = {alias: fact for fact, names in _ALIASES.items() for alias in names}


def _resolve(schema: Any, root: dict[str, Any]) -> dict[str, Any]:
    seen = 0
    while isinstance(schema, dict) and "$ref" in schema and seen < 32:
        ref = schema["$ref"]
        target: Any = root
        if isinstance(ref, str) and ref.startswith("#/"):
            for part in ref[2:].split("/"):
                target = target.get(part, {}) if isinstance(target, dict) else {}
        else:
            target = {}
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        seen += 1
    return schema if isinstance(schema, dict) else {}


def _fits(value: Any, schema: dict[str, Any]) -> bool:
    if "enum" in schema:
        return value in schema["enum"]
    if "const" in schema:
        return value == schema["const"]
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind else []
    if not kinds:
        return True
    checks = {
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "array": lambda v: isinstance(v, list),
        "object": lambda v: isinstance(v, dict),
        "null": lambda v: v is None,
    }
    return any(checks.get(k, lambda v: False)(value) for k in kinds)


def fill_schema(
    schema: Any, facts: dict[str, Any], *, root: dict[str, Any] | None = None, depth: int = 0
) -> Any:
    """A value valid for a JSON schema, filled best-effort from ``facts``.

    Known property names (width, height, format, dominant_colours/colors, brightness,
    description/caption/summary/answer) take the facts; anything else gets a type-correct
    default: the schema's ``default`` if it has one, else strings the description, numbers 0 (or
    their minimum), booleans false, enums their first value, arrays ``[]`` (or ``minItems``
    items), objects filled recursively.
    """
    root = root if root is not None else (schema if isinstance(schema, dict) else {})
    schema = _resolve(schema, root)
    if depth > 12:
        return None
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            non_null = [o for o in options if _resolve(o, root).get("type") != "null"]
            if key == "allOf":
                merged: dict[str, Any] = {}
                for option in options:
                    merged.update(_resolve(option, root))
                return fill_schema(merged, facts, root=root, depth=depth + 1)
            return fill_schema((non_null or options)[0], facts, root=root, depth=depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    description = str(facts.get("description", PREFIX))
    if kind == "object":
        props = schema.get("properties")
        if not isinstance(props, dict):
            return dict(facts)
        out: dict[str, Any] = {}
        for name, sub in props.items():
            sub = _resolve(sub, root)
            fact = _LOOKUP.get(str(name).lower().replace("-", "_"))
            value = facts.get(fact) if fact else None
            if fact == "format" and isinstance(value, str):
                upper = [e for e in sub.get("enum", []) if str(e).lower() == value]
                value = upper[0] if upper else value
            if value is not None and _fits(value, sub):
                out[name] = value
            elif sub.get("type") == "array" and fact == "images" and isinstance(value, list):
                item = sub.get("items", {})
                out[name] = [fill_schema(item, v, root=root, depth=depth + 1) for v in value]
            elif "default" in sub:
                out[name] = sub["default"]  # the schema's own fallback
            else:
                out[name] = fill_schema(sub, facts, root=root, depth=depth + 1)
        return out
    if kind == "array":
        n = int(schema.get("minItems", 0) or 0)
        return [fill_schema(schema.get("items", {}), facts, root=root, depth=depth + 1)] * n
    if kind == "string":
        if schema.get("format") in ("date-time", "date", "time", "uri", "email", "uuid"):
            defaults = {
                "date-time": "1970-01-01T00:00:00Z",
                "date": "1970-01-01",
                "time": "00:00:00",
                "uri": "about:blank",
                "email": "offline@example.invalid",
                "uuid": "00000000-0000-0000-0000-000000000000",
            }
            return defaults[schema["format"]]
        text = description
        max_len = schema.get("maxLength")
        if isinstance(max_len, int):
            text = text[:max_len]
        min_len = schema.get("minLength")
        if isinstance(min_len, int) and len(text) < min_len:
            text = text.ljust(min_len, ".")
        return text
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        value = 0 if low is None else low + (1 if "exclusiveMinimum" in schema else 0)
        high = schema.get("maximum")
        if high is not None and value > high:
            value = high
        return math.ceil(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return False
    return None


# --------------------------------------------------------------------------------------------
# Stats and faults
# --------------------------------------------------------------------------------------------


@dataclass
class Fault:
    """A one-shot fault for the next chat request (see ``OfflineServer.inject``)."""

    status: int | None = None
    retry_after: float | None = None
    delay: float = 0.0
    drop: bool = False
    message: str | None = None


@dataclass(slots=True)
class RequestRecord:
    """One chat request as the server saw it (no headers, no key)."""

    request_id: str
    status: int
    digest: str
    body_bytes: int
    images: int
    image_bytes: int
    retry_count: int
    started: float
    elapsed: float
    fault: str | None = None


@dataclass
class ServerStats:
    """Counters of what an OfflineServer saw; read them through ``server.stats``."""

    requests: int = 0  # every HTTP request, any path
    connections: int = 0  # TCP connections accepted (keep-alive clients reuse theirs)
    chat_requests: int = 0  # POST /v1/chat/completions
    status_counts: Counter[int] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    images: int = 0
    image_bytes: int = 0
    body_bytes: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0  # requests whose x-stainless-retry-count was above 0
    dropped: int = 0
    cpu_seconds: float = 0.0  # CPU time the handler threads spent on chat requests
    bodies: Counter[str] = field(default_factory=Counter, repr=False)
    records: deque[RequestRecord] = field(default_factory=lambda: deque(maxlen=100_000), repr=False)

    @property
    def answered(self) -> int:
        """Chat requests answered with 200."""
        return sum(1 for r in self.records if r.status == 200)

    @property
    def duplicates(self) -> dict[str, int]:
        """Bodies (by SHA-256) sent more than once -> how many times."""
        return {d: n for d, n in self.bodies.items() if n > 1}

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "connections": self.connections,
            "chat_requests": self.chat_requests,
            "answered": self.answered,
            "status_counts": dict(self.status_counts),
            "max_in_flight": self.max_in_flight,
            "images": self.images,
            "image_bytes": self.image_bytes,
            "body_bytes": self.body_bytes,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "retries": self.retries,
            "dropped": self.dropped,
            "cpu_ms_per_request": round(1000 * self.cpu_seconds / max(1, self.chat_requests), 3),
            "duplicate_bodies": sum(n - 1 for n in self.bodies.values() if n > 1),
        }


class _TokenBucket:
    """Requests/second with a burst; a refused request is told when a token will be free *for
    it*: refusals are handed successive future tokens, so clients that honour Retry-After come
    back spread out instead of all at once (a thundering herd of retries)."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()
        self.promised: deque[float] = deque()  # times told to refused requests, ascending

    def take(self) -> float:
        """0.0 when a request may go now (and takes a token), else seconds until one frees."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        while self.promised and self.promised[0] <= now:
            self.promised.popleft()
        wait = (len(self.promised) + 1 - self.tokens) / self.rate
        self.promised.append(now + wait)
        return wait


# --------------------------------------------------------------------------------------------
# Request checking
# --------------------------------------------------------------------------------------------


class _Reply(Exception):
    """An error answer: raised anywhere in the handler, turned into OpenAI-shaped JSON."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": type, "param": param, "code": code}}
        self.headers = headers or {}


@dataclass
class _Parsed:
    model: str
    texts: list[str]
    prompt: str
    images: list[_ImagePart]
    urls: list[str]
    response_format: dict[str, Any] | None
    max_tokens: int | None
    n: int
    stream: bool
    include_usage: bool


_DATA_URI = re.compile(r"^data:([^;,]*)((?:;[^;,]*)*),", re.IGNORECASE)


def _b64decode(text: str) -> bytes:
    """Strict base64: standard alphabet, correct padding, no whitespace or line breaks."""
    raw = text.encode("ascii")
    if sys.version_info >= (3, 11):
        return binascii.a2b_base64(raw, strict_mode=True)
    return base64.b64decode(raw, validate=True)  # pragma: no cover (Python 3.10)


_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
HEADER_PREFIX = 65_536  # base64 characters decoded to read a header when pixels=False


def _b64_size(raw: bytes) -> int:
    """The decoded size of strict base64 ``raw``, checked without decoding (~10x cheaper)."""
    body = raw.rstrip(b"=")
    pad = len(raw) - len(body)
    if len(raw) % 4 or pad > 2 or body.translate(None, _B64_ALPHABET):
        raise ValueError("not strict base64")
    return len(raw) // 4 * 3 - pad


@dataclass
class _ImagePart:
    param: str
    data: bytes  # the decoded image, or only its first bytes when ``complete`` is False
    size: int
    complete: bool = True
    base64: str = field(default="", repr=False)  # kept when incomplete, to decode it all later

    def full(self) -> bytes:
        if not self.complete:
            self.data = _b64decode(self.base64)
            self.complete = True
            self.base64 = ""
        return self.data


def _decode_data_uri(
    url: str, param: str, formats: Sequence[str], *, full: bool = True
) -> _ImagePart:
    m = _DATA_URI.match(url[:512])
    if not m:
        raise _Reply(400, f"Malformed data URI in {param}.", param=param, code="invalid_image_url")
    mime = m.group(1).strip().lower()
    params = [p.strip().lower() for p in m.group(2).split(";") if p.strip()]
    fmt = MIMETYPES.get(mime)
    if fmt is None or fmt not in formats:
        allowed = ", ".join(formats)
        raise _Reply(
            400,
            f"Unsupported image mimetype {mime or '(none)'!r} in {param}; "
            f"supported formats are {allowed}.",
            param=param,
            code="invalid_image_format",
        )
    if "base64" not in params:
        raise _Reply(
            400,
            f"The data URI in {param} is not base64-encoded (expected ';base64,').",
            param=param,
            code="invalid_image_url",
        )
    try:
        if full:
            data = _b64decode(url[m.end() :])
            size = len(data)
        else:
            raw = url[m.end() :].encode("ascii")
            size = _b64_size(raw)
            data = binascii.a2b_base64(raw[:HEADER_PREFIX])
    except (binascii.Error, ValueError):
        raise _Reply(
            400,
            f"Invalid base64 data in {param} (standard alphabet, padded, no whitespace or "
            "line breaks).",
            param=param,
            code="invalid_image_url",
        ) from None
    if not data:
        raise _Reply(400, f"Empty image in {param}.", param=param, code="invalid_image")
    real = sniff_format(data)
    if real != fmt:
        said = f"{real.upper()} bytes" if real else "bytes that are not a known image format"
        raise _Reply(
            400,
            f"The image in {param} is declared as {mime} but holds {said}.",
            param=param,
            code="invalid_image_format",
        )
    if len(data) == size:
        return _ImagePart(param, data, size)
    return _ImagePart(param, data, size, complete=False, base64=url[m.end() :])


def _parse(
    body: bytes, provider: Provider, max_images_override: int | None, *, full: bool = True
) -> _Parsed:
    try:
        req = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _Reply(
            400, f"We could not parse the JSON body of your request ({exc}).", code="invalid_json"
        ) from None
    if not isinstance(req, dict):
        raise _Reply(400, "The request body must be a JSON object.", code="invalid_json")
    model = req.get("model")
    if not isinstance(model, str) or not model:
        raise _Reply(400, "You must provide a model parameter.", param="model")
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _Reply(400, "'messages' must be a non-empty array.", param="messages")
    texts: list[str] = []
    user_texts: list[str] = []
    images: list[_ImagePart] = []
    urls: list[str] = []
    seen_images = 0
    max_images = max_images_override if max_images_override is not None else provider.max_images
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise _Reply(400, f"{where} must be an object.", param=where)
        role = msg.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool"):
            raise _Reply(400, f"Invalid role {role!r} in {where}.", param=f"{where}.role")
        content = msg.get("content")
        if isinstance(content, str):
            texts.append(content)
            if role == "user":
                user_texts.append(content)
            continue
        if content is None and role in ("assistant", "tool"):
            continue
        if not isinstance(content, list):
            raise _Reply(
                400, f"{where}.content must be a string or an array.", param=f"{where}.content"
            )
        for j, part in enumerate(content):
            p = f"{where}.content[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                text = part.get("text")
                if not isinstance(text, str):
                    raise _Reply(400, f"{p}.text must be a string.", param=f"{p}.text")
                texts.append(text)
                if role == "user":
                    user_texts.append(text)
            elif kind == "image_url":
                if role != "user":
                    raise _Reply(400, f"Images are only allowed in user messages ({p}).", param=p)
                seen_images += 1
                if max_images is not None and seen_images > max_images:
                    raise _Reply(
                        400,
                        f"Too many images: at most {max_images} images are allowed per request.",
                        param=p,
                        code="too_many_images",
                    )
                image_url = part.get("image_url")
                url = image_url.get("url") if isinstance(image_url, dict) else None
                param = f"{p}.image_url.url"
                if not isinstance(url, str) or not url:
                    raise _Reply(
                        400,
                        f"{p}.image_url must be an object with a 'url' string.",
                        param=param,
                    )
                if url[:5].lower() == "data:":
                    images.append(_decode_data_uri(url, param, provider.formats, full=full))
                elif provider.data_uri_only:
                    raise _Reply(
                        400,
                        f"Images must be sent as base64 data URIs; URLs are not supported "
                        f"({param} starts with {_short(url, 24)!r}).",
                        param=param,
                        code="invalid_image_url",
                    )
                else:
                    urls.append(url)
            else:
                raise _Reply(
                    400,
                    f"Unsupported content part type {kind!r} in {p}; "
                    "expected 'text' or 'image_url'.",
                    param=f"{p}.type",
                )
    response_format = req.get("response_format")
    if response_format is not None:
        kind = response_format.get("type") if isinstance(response_format, dict) else None
        if kind not in ("text", "json_object", "json_schema"):
            raise _Reply(
                400,
                "response_format.type must be 'text', 'json_object' or 'json_schema'.",
                param="response_format",
            )
        if kind == "json_schema":
            js = response_format.get("json_schema")
            if not isinstance(js, dict) or not isinstance(js.get("schema", {}), dict):
                raise _Reply(
                    400,
                    "response_format.json_schema must be an object with a 'schema'.",
                    param="response_format.json_schema",
                )
    max_tokens = req.get("max_completion_tokens", req.get("max_tokens"))
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        raise _Reply(400, "max_tokens must be a positive integer.", param="max_tokens")
    n = req.get("n", 1)
    if n is None:
        n = 1
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 8:
        raise _Reply(400, "n must be an integer from 1 to 8.", param="n")
    stream_options = req.get("stream_options") or {}
    return _Parsed(
        model=model,
        texts=texts,
        prompt="\n".join(user_texts),
        images=images,
        urls=urls,
        response_format=response_format if isinstance(response_format, dict) else None,
        max_tokens=max_tokens,
        n=n,
        stream=bool(req.get("stream", False)),
        include_usage=bool(
            isinstance(stream_options, dict) and stream_options.get("include_usage")
        ),
    )


def _text_tokens(texts: Sequence[str]) -> int:
    return sum(math.ceil(len(t) / 4) for t in texts)


# --------------------------------------------------------------------------------------------
# The HTTP server
# --------------------------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the default of 5 resets connections at concurrency 32
    allow_reuse_address = True
    app: OfflineServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-request is normal here (timeouts, drops); stay quiet.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            return
        log.exception("offline server: unexpected error")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "visionkit-offline"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = 120  # idle keep-alive connections give their thread back after this
    server: _HTTPServer

    # -- plumbing ------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        self.server.app._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.app._track(self.connection, False)

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def handle_expect_100(self) -> bool:
        length = self._content_length()
        limit = self.server.app.max_body_bytes
        if limit is not None and length is not None and length >= limit:
            # Refuse before the client sends a byte of the body (RFC 9110, 10.1.1).
            self._request_id = _request_id()
            self.server.app._count_request()
            self.server.app._count_status(413)
            self._send_error_reply(self._too_large(length), close=True)
            return False
        return super().handle_expect_100()

    def _content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        if value is None:
            return None
        try:
            n = int(value)
        except ValueError:
            return -1
        return n if n >= 0 else -1

    def _send(
        self,
        status: int,
        payload: bytes,
        *,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        close: bool = False,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        # One send for headers and body: two small sends meet Nagle + delayed ACK (~40 ms).
        self._headers_buffer.append(b"\r\n")  # type: ignore[attr-defined]
        self._headers_buffer.append(payload)  # type: ignore[attr-defined]
        self.flush_headers()

    def _send_json(self, status: int, obj: Any, **kwargs: Any) -> None:
        self._send(status, json.dumps(obj, ensure_ascii=False).encode(), **kwargs)

    def _send_error_reply(self, reply: _Reply, *, close: bool = False) -> None:
        headers = {"x-request-id": self._request_id, **reply.headers}
        self._send_json(reply.status, reply.body, headers=headers, close=close)

    def _too_large(self, length: int) -> _Reply:
        limit = self.server.app.max_body_bytes
        return _Reply(
            413,
            f"Request body too large: {length:,} bytes; the limit is {limit:,} bytes "
            "(the body must be smaller than that).",
            code="request_too_large",
        )

    def _read_body(self) -> bytes:
        """The request body, or a _Reply (413/411/400) after draining what the client sent."""
        limit = self.server.app.max_body_bytes
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(limit)
        length = self._content_length()
        if length is None:
            raise _Reply(411, "A Content-Length header is required.", code="length_required")
        if length < 0:
            self.close_connection = True
            raise _Reply(400, "Invalid Content-Length header.")
        if limit is not None and length >= limit:
            if length <= DRAIN_LIMIT:
                self._drain(length)
            else:
                self.close_connection = True
            raise self._too_large(length)
        return self.rfile.read(length)

    def _drain(self, length: int) -> None:
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(65536, remaining))
            if not chunk:
                break
            remaining -= len(chunk)

    def _read_chunked(self, limit: int | None) -> bytes:
        """A ``Transfer-Encoding: chunked`` body, read in pieces; past ``limit`` it is only
        drained (up to ``DRAIN_LIMIT``) and a 413 follows."""
        parts: list[bytes] = []
        size = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                n = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                n = -1
            if n < 0:
                self.close_connection = True
                raise _Reply(400, "Malformed chunked body.")
            if n == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                break
            while n > 0:
                piece = self.rfile.read(min(n, 65536))
                if not piece:
                    self.close_connection = True
                    raise _Reply(400, "Truncated chunked body.")
                n -= len(piece)
                size += len(piece)
                if limit is None or size < limit:
                    parts.append(piece)
                elif size > DRAIN_LIMIT:
                    self.close_connection = True
                    raise self._too_large(size)
                else:
                    parts.clear()
            self.rfile.readline(8)
        if limit is not None and size >= limit:
            raise self._too_large(size)
        return b"".join(parts)

    # -- routes --------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._request_id = _request_id()
        app = self.server.app
        app._count_request()
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            if path in ("", "/health"):  # a liveness probe needs no key
                app._count_status(200)
                self._send_json(200, {"status": "ok", "service": PREFIX})
                return
            app._check_key(self.headers.get("Authorization"))
            if path == "/v1/models":
                app._count_status(200)
                self._send_json(200, {"object": "list", "data": app.model_list()})
                return
            if path.startswith("/v1/models/"):
                name = path[len("/v1/models/") :]
                for entry in app.model_list():
                    if entry["id"] == name or app.any_model:
                        app._count_status(200)
                        self._send_json(200, {**entry, "id": name})
                        return
                raise app._model_not_found(name)
            raise _Reply(404, f"Unknown path {self.path!r}.", code="unknown_url")
        except _Reply as reply:
            app._count_status(reply.status)
            self._send_error_reply(reply)

    def do_POST(self) -> None:
        self._request_id = _request_id()
        app = self.server.app
        app._count_request()
        path = self.path.split("?", 1)[0].rstrip("/")
        if path != "/v1/chat/completions":
            try:
                self._read_body()
                reply = _Reply(404, f"Unknown path {self.path!r}.", code="unknown_url")
            except _Reply as r:
                reply = r
            status = reply.status
            app._count_status(status)
            self._send_error_reply(reply)
            return
        app._chat(self)

    def do_PUT(self) -> None:
        self._method_not_allowed()

    do_DELETE = do_PATCH = do_PUT

    def _method_not_allowed(self) -> None:
        self._request_id = _request_id()
        self.close_connection = True
        self._send_error_reply(_Reply(405, f"Method {self.command} not allowed."), close=True)


@dataclass
class OfflineServer:
    """A local OpenAI-compatible server enforcing a provider profile's rules (inference.net's).

    ``start()``/``stop()`` or ``with OfflineServer(latency=0.2) as server: server.base_url``.
    See the module docstring for what it enforces and answers.
    """

    latency: float = 0.0
    fail_rate: float = 0.0
    rate_limit: float | None = None
    burst: float | None = None  # token-bucket size; default: one second's worth (>= 1)
    api_key: str | None = "offline"
    model: str = DEFAULT_MODEL
    seed: int = 0
    profile: str | Provider = "offline"
    fail_status: int = 500
    any_model: bool = False
    max_images: int | None = None  # override the profile's limit
    pixels: bool = True  # False: read image headers only (size, format), for cheap benchmarks
    host: str = "127.0.0.1"
    port: int = 0
    stats: ServerStats = field(default_factory=ServerStats, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.fail_rate <= 1.0:
            raise ValueError(
                f"fail_rate must be between 0 and 1, but {self.fail_rate!r} was passed"
            )
        if self.latency < 0:
            raise ValueError(f"latency must be >= 0, but {self.latency!r} was passed")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise ValueError(f"rate_limit must be > 0, but {self.rate_limit!r} was passed")
        self.provider = get_provider(self.profile)
        self._lock = threading.Lock()
        self._faults: deque[Fault] = deque()
        self._bucket = (
            _TokenBucket(self.rate_limit, self.burst or max(1.0, self.rate_limit))
            if self.rate_limit
            else None
        )
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._created = int(time.time())
        self._facts = _FactsCache(pixels=self.pixels)

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def max_body_bytes(self) -> int | None:
        return self.provider.max_body_bytes

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the offline server is not running; call start() first")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def start(self) -> OfflineServer:
        """Bind an ephemeral port (or ``port``) and serve in a daemon thread; returns self."""
        if self._httpd is not None:
            return self
        httpd = _HTTPServer((self.host, self.port), _Handler)
        httpd.app = self
        self._stopping.clear()
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"visionkit-offline:{httpd.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake sleeping handlers and close every open connection."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def serve_forever(self) -> None:
        """Serve in the foreground until interrupted (used by ``python -m visionkit.offline``)."""
        self.start()
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(0.5)
        finally:
            self.stop()

    def __enter__(self) -> OfflineServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.base_url if self._httpd is not None else "stopped"
        return (
            f"OfflineServer({where}, profile={self.provider.name!r}, latency={self.latency}, "
            f"fail_rate={self.fail_rate}, rate_limit={self.rate_limit})"
        )

    # -- test controls -------------------------------------------------------------------

    def inject(
        self,
        status: int | None = None,
        *,
        count: int = 1,
        retry_after: float | None = None,
        delay: float = 0.0,
        drop: bool = False,
        message: str | None = None,
    ) -> None:
        """Queue ``count`` one-shot faults for the next chat requests, in order.

        ``inject(status=429, count=2, retry_after=0.1)`` refuses the next two requests with
        ``Retry-After``; ``inject(status=500)`` fails one; ``inject(delay=5)`` holds the next
        answer 5 s (to provoke a client timeout); ``inject(drop=True)`` reads the request and
        closes the connection without answering.
        """
        if status is None and not delay and not drop:
            raise ValueError("inject needs a status, a delay or drop=True")
        with self._lock:
            for _ in range(count):
                self._faults.append(Fault(status, retry_after, delay, drop, message))

    def pending_faults(self) -> int:
        with self._lock:
            return len(self._faults)

    def reset_stats(self) -> ServerStats:
        """Start counting afresh; returns the old stats."""
        with self._lock:
            old, self.stats = self.stats, ServerStats()
        return old

    def model_list(self) -> list[dict[str, Any]]:
        names = [self.model]
        default = providers["inference.net"].default_model
        if default and default not in names:
            names.append(default)
        return [
            {"id": name, "object": "model", "created": self._created, "owned_by": "visionkit"}
            for name in names
        ]

    # -- internals -----------------------------------------------------------------------

    def _track(self, conn: socket.socket, opened: bool) -> None:
        with self._lock:
            if opened:
                self._connections.add(conn)
                self.stats.connections += 1
            else:
                self._connections.discard(conn)

    def _count_request(self) -> None:
        with self._lock:
            self.stats.requests += 1

    def _count_status(self, status: int) -> None:
        with self._lock:
            self.stats.status_counts[status] += 1

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def _check_key(self, header: str | None) -> None:
        if self.api_key is None:
            return
        if not header or not header.lower().startswith("bearer ") or not header[7:].strip():
            raise _Reply(
                401,
                "You didn't provide an API key. Send it in the Authorization header as "
                "'Authorization: Bearer YOUR_KEY'.",
                code="invalid_api_key",
            )
        given = header[7:].strip().encode()
        if not hmac.compare_digest(given, self.api_key.encode()):
            raise _Reply(
                401,
                "Incorrect API key provided. The offline stand-in's key is set by its "
                "api_key option (default 'offline').",
                code="invalid_api_key",
            )

    def _model_not_found(self, name: str) -> _Reply:
        known = [m["id"] for m in self.model_list()]
        return _Reply(
            404,
            f"The model {_short(name, 100)!r} does not exist on this server; available models: "
            f"{', '.join(known)} (start it with any_model=True / --any-model to accept any name).",
            param="model",
            code="model_not_found",
        )

    def _rate_check(self) -> _Reply | None:
        if self._bucket is None:
            return None
        with self._lock:
            wait = self._bucket.take()
        if wait <= 0:
            return None
        return _Reply(
            429,
            f"Rate limit reached: {self.rate_limit:g} requests per second. "
            f"Retry after {wait * 1000:.0f} ms.",
            type="requests",
            code="rate_limit_exceeded",
            headers=_retry_headers(wait),
        )

    def _should_fail(self, digest: str, attempt: int) -> bool:
        if self.fail_rate <= 0:
            return False
        h = hashlib.blake2b(f"{self.seed}:{digest}:{attempt}".encode(), digest_size=8).digest()
        return struct.unpack(">Q", h)[0] / 2**64 < self.fail_rate

    def _chat(self, handler: _Handler) -> None:
        """Answer one chat request; stats are recorded *before* the answer is sent, so a client
        that has its answer can trust ``stats`` to include it."""
        rec = RequestRecord(
            request_id=handler._request_id,
            status=0,
            digest="",
            body_bytes=0,
            images=0,
            image_bytes=0,
            retry_count=_int_header(handler.headers.get("x-stainless-retry-count")),
            started=time.monotonic(),
            elapsed=0.0,
        )
        cpu = time.thread_time()
        with self._lock:
            entry_stats = s = self.stats
            s.chat_requests += 1
            s.in_flight += 1
            s.max_in_flight = max(s.max_in_flight, s.in_flight)
        reply: _Reply | None = None
        sse = False
        payload = b""
        headers: dict[str, str] = {}
        try:
            try:
                answer = self._answer(handler, rec)
                if answer is not None:
                    sse, payload, headers = answer
                    rec.status = 200
            except _Reply as r:
                reply = r
                rec.status = r.status
        finally:
            rec.elapsed = time.monotonic() - rec.started
            with self._lock:
                s = self.stats
                s.cpu_seconds += time.thread_time() - cpu
                entry_stats.in_flight -= 1  # the stats it entered, even if reset since
                s.records.append(rec)
                if rec.status:
                    s.status_counts[rec.status] += 1
                else:
                    s.dropped += 1
        if reply is not None:
            handler._send_error_reply(reply, close=handler.close_connection)
        elif rec.status == 0:
            handler.close_connection = True
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)
        elif sse:
            handler._send(
                200, payload, content_type="text/event-stream; charset=utf-8", headers=headers
            )
        else:
            handler._send(200, payload, headers=headers)

    def _answer(
        self, handler: _Handler, rec: RequestRecord
    ) -> tuple[bool, bytes, dict[str, str]] | None:
        """Check one chat request and build its answer: (is SSE, body, headers).

        Raises _Reply for an error answer; returns None to drop the connection unanswered.
        """
        # The body is read (or drained) first so a keep-alive connection stays in sync.
        body = handler._read_body()
        self._check_key(handler.headers.get("Authorization"))
        rec.body_bytes = len(body)
        rec.digest = hashlib.sha256(body).hexdigest()
        with self._lock:
            self.stats.body_bytes += rec.body_bytes
            self.stats.bodies[rec.digest] += 1
            seen = self.stats.bodies[rec.digest]
            if rec.retry_count > 0:
                self.stats.retries += 1
            fault = self._faults.popleft() if self._faults else None
        if fault is not None:
            rec.fault = _fault_name(fault)
            self._sleep(fault.delay)
            if fault.drop:
                return None
            if fault.status is not None:
                raise _fault_reply(fault)
        limited = self._rate_check()
        if limited is not None:
            raise limited
        parsed = _parse(body, self.provider, self.max_images, full=self.pixels)
        known = [m["id"] for m in self.model_list()]
        if not self.any_model and parsed.model not in known:
            raise self._model_not_found(parsed.model)
        rec.images = len(parsed.images) + len(parsed.urls)
        rec.image_bytes = sum(part.size for part in parsed.images)
        facts: list[ImageFacts] = []
        image_tokens = 0
        for part in parsed.images:
            try:
                f = self._facts.get(part)
            except Exception as exc:
                raise _Reply(
                    400,
                    f"The image in {part.param} could not be decoded ({type(exc).__name__}).",
                    param=part.param,
                    code="invalid_image",
                ) from None
            facts.append(f)
            image_tokens += int(self.provider.estimate(f.width, f.height))
        image_tokens += len(parsed.urls) * int(self.provider.estimate(1, 1))
        with self._lock:
            self.stats.images += rec.images
            self.stats.image_bytes += rec.image_bytes
        self._sleep(self.latency)
        if self._should_fail(rec.digest, seen):
            raise _Reply(
                self.fail_status,
                "The server had an error while processing your request (simulated by "
                "the offline stand-in's fail_rate).",
                type="server_error",
                code="internal_error" if self.fail_status >= 500 else None,
            )
        response, completion_tokens = self._completion(parsed, facts, handler._request_id)
        prompt_tokens = image_tokens + _text_tokens(parsed.texts)
        response["usage"] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        with self._lock:
            self.stats.prompt_tokens += prompt_tokens
            self.stats.completion_tokens += completion_tokens
        headers = {
            "x-request-id": handler._request_id,
            "openai-processing-ms": str(int((time.monotonic() - rec.started) * 1000)),
            **self._ratelimit_headers(),
        }
        if parsed.stream:
            return True, _sse(response, parsed.include_usage), headers
        return False, json.dumps(response, ensure_ascii=False).encode(), headers

    def _ratelimit_headers(self) -> dict[str, str]:
        if self._bucket is None:
            return {}
        with self._lock:
            remaining = int(self._bucket.tokens)
        return {
            "x-ratelimit-limit-requests": f"{self.rate_limit:g}/s",
            "x-ratelimit-remaining-requests": str(max(0, remaining)),
        }

    def _completion(
        self, parsed: _Parsed, facts: list[ImageFacts], request_id: str
    ) -> tuple[dict[str, Any], int]:
        rf = parsed.response_format or {}
        kind = rf.get("type", "text")
        if kind == "json_object":
            content = json.dumps(_facts_payload(facts, parsed.prompt), ensure_ascii=False)
        elif kind == "json_schema":
            schema = rf.get("json_schema", {}).get("schema") or {}
            value = fill_schema(schema, _facts_payload(facts, parsed.prompt))
            content = json.dumps(value, ensure_ascii=False)
        else:
            content = answer_text(facts, parsed.prompt)
        finish = "stop"
        if parsed.max_tokens is not None and math.ceil(len(content) / 4) > parsed.max_tokens:
            content = content[: parsed.max_tokens * 4]
            finish = "length"
        completion_tokens = math.ceil(len(content) / 4)
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": finish,
            }
            for i in range(parsed.n)
        ]
        response = {
            "id": "chatcmpl-" + request_id[4:],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": parsed.model,
            "choices": choices,
            "system_fingerprint": "visionkit-offline",
        }
        return response, completion_tokens * parsed.n


def _request_id() -> str:
    return "req_" + uuid.uuid4().hex[:24]


def _int_header(value: str | None) -> int:
    return int(value) if value and value.isdigit() else 0


def _retry_headers(seconds: float) -> dict[str, str]:
    # Retry-After is integer seconds by the HTTP spec (rounded up); retry-after-ms is exact and
    # is what the openai SDK reads first.
    return {
        "Retry-After": str(max(1, math.ceil(seconds))),
        "retry-after-ms": str(max(1, math.ceil(seconds * 1000))),
    }


def _fault_name(fault: Fault) -> str:
    if fault.drop:
        return "drop"
    if fault.status is not None:
        return f"status {fault.status}"
    return f"delay {fault.delay:g}s"


def _fault_reply(fault: Fault) -> _Reply:
    status = int(fault.status or 500)
    headers = _retry_headers(fault.retry_after) if fault.retry_after is not None else {}
    if status == 429:
        return _Reply(
            429,
            fault.message or "Rate limit reached (injected by the offline stand-in).",
            type="requests",
            code="rate_limit_exceeded",
            headers=headers,
        )
    if status >= 500:
        return _Reply(
            status,
            fault.message or "The server had an error (injected by the offline stand-in).",
            type="server_error",
            headers=headers,
        )
    return _Reply(
        status,
        fault.message or f"Injected error {status} from the offline stand-in.",
        headers=headers,
    )


def _sse(response: dict[str, Any], include_usage: bool) -> bytes:
    """The completion as a Server-Sent Events stream of chat.completion.chunk objects."""
    base = {k: response[k] for k in ("id", "created", "model", "system_fingerprint")}
    base["object"] = "chat.completion.chunk"
    events = []
    for choice in response["choices"]:
        i = choice["index"]
        text = choice["message"]["content"]
        words = re.findall(r"\S+\s*|\s+", text) or [""]
        first = {"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
        events.append({**base, "choices": [first]})
        for w in words:
            delta = {"index": i, "delta": {"content": w}, "finish_reason": None}
            events.append({**base, "choices": [delta]})
        last = {"index": i, "delta": {}, "finish_reason": choice["finish_reason"]}
        events.append({**base, "choices": [last]})
    if include_usage:
        events.append({**base, "choices": [], "usage": response["usage"]})
    out = [f"data: {json.dumps(e, ensure_ascii=False)}\n\n" for e in events]
    out.append("data: [DONE]\n\n")
    return "".join(out).encode()


# --------------------------------------------------------------------------------------------
# Public helpers
# --------------------------------------------------------------------------------------------


class BaseURL(str):
    """The base URL string ``serve()`` yields, with the running ``server`` attached."""

    server: OfflineServer

    def __new__(cls, url: str, server: OfflineServer) -> BaseURL:
        obj = super().__new__(cls, url)
        obj.server = server
        return obj


@contextlib.contextmanager
def serve(
    *,
    latency: float = 0.0,
    fail_rate: float = 0.0,
    rate_limit: float | None = None,
    api_key: str | None = "offline",
    model: str = DEFAULT_MODEL,
    seed: int = 0,
    profile: str | Provider = "offline",
    fail_status: int = 500,
    burst: float | None = None,
    any_model: bool = False,
    max_images: int | None = None,
    pixels: bool = True,
    port: int = 0,
) -> Iterator[BaseURL]:
    """Run an OfflineServer for the ``with`` block; yields its base URL ``http://127.0.0.1:P/v1``.

    The yielded string has a ``.server`` attribute (the OfflineServer) for ``inject`` and
    ``stats``::

        with visionkit.offline.serve(latency=0.2, rate_limit=20) as url:
            client = openai.OpenAI(base_url=url, api_key="offline")
            ...
            assert url.server.stats.duplicates == {}
    """
    server = OfflineServer(
        latency=latency,
        fail_rate=fail_rate,
        rate_limit=rate_limit,
        burst=burst,
        api_key=api_key,
        model=model,
        seed=seed,
        profile=profile,
        fail_status=fail_status,
        any_model=any_model,
        max_images=max_images,
        pixels=pixels,
        port=port,
    )
    server.start()
    try:
        yield BaseURL(server.base_url, server)
    finally:
        server.stop()


_shared: OfflineServer | None = None
_shared_pid: int | None = None
_shared_lock = threading.Lock()


def shared() -> OfflineServer:
    """The process's one background OfflineServer (started on first use; thread-safe).

    Used by ``visionkit.connect("offline")``. Its key is ``"offline"``; no latency, no faults.
    A forked child process gets its own server.
    """
    global _shared, _shared_pid
    with _shared_lock:
        if _shared is None or _shared_pid != os.getpid() or not _shared.running:
            _shared = OfflineServer().start()
            _shared_pid = os.getpid()
        return _shared


def start() -> str:
    """Start (once per process) the shared background server; returns its base URL."""
    return shared().base_url


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m visionkit.offline",
        description="Run visionkit's offline OpenAI-compatible stand-in in the foreground.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per answer")
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--fail-status", type=int, default=500)
    parser.add_argument("--rate-limit", type=float, default=None, help="requests per second")
    parser.add_argument("--burst", type=float, default=None)
    parser.add_argument(
        "--api-key", default="offline", help="the key clients must send ('' accepts any key)"
    )
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--any-model", action="store_true", help="accept any model name")
    parser.add_argument("--profile", default="offline", help="provider profile whose rules apply")
    parser.add_argument(
        "--no-pixels",
        dest="pixels",
        action="store_false",
        help="read image headers only (size, format), not colours: far less CPU per request",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    server = OfflineServer(
        latency=args.latency,
        fail_rate=args.fail_rate,
        fail_status=args.fail_status,
        rate_limit=args.rate_limit,
        burst=args.burst,
        api_key=args.api_key or None,
        model=args.model,
        any_model=args.any_model,
        pixels=args.pixels,
        profile=args.profile,
        seed=args.seed,
        host=args.host,
        port=args.port,
    )
    server.start()
    # `kill` / Popen.terminate() stop it as cleanly as Ctrl-C (and print the stats).
    signal.signal(signal.SIGTERM, _interrupt)
    key_note = "any key" if server.api_key is None else "the key given by --api-key"
    print(
        f"visionkit offline stand-in at {server.base_url} (model {server.model!r}, {key_note}); "
        "Ctrl-C stops it.",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        print(json.dumps(server.stats.as_dict()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
