"""Checking a chat request against a provider profile's rules, with OpenAI-shaped errors.

``Reply`` is an error answer (``{"error": {"message", "type", "param", "code"}}``);
``parse_request`` checks the JSON body (messages, roles, image count, strict base64 data URIs
whose bytes match their declared format) and returns a ``Parsed`` request; ``check_key`` and
``model_not_found`` are the 401 and 404. See ``visionkit.offline`` for the order of the checks.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..images.formats import sniff_format
from ..providers import Provider

__all__ = [
    "HEADER_PREFIX",
    "MIMETYPES",
    "ImagePart",
    "Parsed",
    "Reply",
    "body_too_large",
    "check_key",
    "model_not_found",
    "parse_request",
    "short",
]

# Not sources.format_from_mime: that also maps bmp/tiff/ico/avif/heic; the server knows only the
# mimetypes of inference.net's documented formats.
MIMETYPES = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",  # the guide says "jpg/jpeg"; clients send both spellings
    "image/webp": "webp",
    "image/gif": "gif",
}


class Reply(Exception):
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
class Parsed:
    model: str
    texts: list[str]
    prompt: str
    images: list[ImagePart]
    urls: list[str]
    response_format: dict[str, Any] | None
    max_tokens: int | None
    n: int
    stream: bool
    include_usage: bool


_DATA_URI = re.compile(r"^data:([^;,]*)((?:;[^;,]*)*),", re.IGNORECASE)


# Not sources.decode_data_uri: it strips whitespace and takes percent-encoded URIs; the server
# must reject both.
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
class ImagePart:
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
) -> ImagePart:
    m = _DATA_URI.match(url[:512])
    if not m:
        raise Reply(400, f"Malformed data URI in {param}.", param=param, code="invalid_image_url")
    mime = m.group(1).strip().lower()
    params = [p.strip().lower() for p in m.group(2).split(";") if p.strip()]
    fmt = MIMETYPES.get(mime)
    if fmt is None or fmt not in formats:
        allowed = ", ".join(formats)
        raise Reply(
            400,
            f"Unsupported image mimetype {mime or '(none)'!r} in {param}; "
            f"supported formats are {allowed}.",
            param=param,
            code="invalid_image_format",
        )
    if "base64" not in params:
        raise Reply(
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
        raise Reply(
            400,
            f"Invalid base64 data in {param} (standard alphabet, padded, no whitespace or "
            "line breaks).",
            param=param,
            code="invalid_image_url",
        ) from None
    if not data:
        raise Reply(400, f"Empty image in {param}.", param=param, code="invalid_image")
    real = sniff_format(data)
    if real != fmt:
        said = f"{real.upper()} bytes" if real else "bytes that are not a known image format"
        raise Reply(
            400,
            f"The image in {param} is declared as {mime} but holds {said}.",
            param=param,
            code="invalid_image_format",
        )
    if len(data) == size:
        return ImagePart(param, data, size)
    return ImagePart(param, data, size, complete=False, base64=url[m.end() :])


def parse_request(
    body: bytes, provider: Provider, max_images_override: int | None, *, full: bool = True
) -> Parsed:
    try:
        req = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Reply(
            400, f"We could not parse the JSON body of your request ({exc}).", code="invalid_json"
        ) from None
    if not isinstance(req, dict):
        raise Reply(400, "The request body must be a JSON object.", code="invalid_json")
    model = req.get("model")
    if not isinstance(model, str) or not model:
        raise Reply(400, "You must provide a model parameter.", param="model")
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Reply(400, "'messages' must be a non-empty array.", param="messages")
    texts: list[str] = []
    user_texts: list[str] = []
    images: list[ImagePart] = []
    urls: list[str] = []
    seen_images = 0
    max_images = max_images_override if max_images_override is not None else provider.max_images
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise Reply(400, f"{where} must be an object.", param=where)
        role = msg.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool"):
            raise Reply(400, f"Invalid role {role!r} in {where}.", param=f"{where}.role")
        content = msg.get("content")
        if isinstance(content, str):
            texts.append(content)
            if role == "user":
                user_texts.append(content)
            continue
        if content is None and role in ("assistant", "tool"):
            continue
        if not isinstance(content, list):
            raise Reply(
                400, f"{where}.content must be a string or an array.", param=f"{where}.content"
            )
        for j, part in enumerate(content):
            p = f"{where}.content[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                text = part.get("text")
                if not isinstance(text, str):
                    raise Reply(400, f"{p}.text must be a string.", param=f"{p}.text")
                texts.append(text)
                if role == "user":
                    user_texts.append(text)
            elif kind == "image_url":
                if role != "user":
                    raise Reply(400, f"Images are only allowed in user messages ({p}).", param=p)
                seen_images += 1
                if max_images is not None and seen_images > max_images:
                    raise Reply(
                        400,
                        f"Too many images: at most {max_images} images are allowed per request.",
                        param=p,
                        code="too_many_images",
                    )
                image_url = part.get("image_url")
                url = image_url.get("url") if isinstance(image_url, dict) else None
                param = f"{p}.image_url.url"
                if not isinstance(url, str) or not url:
                    raise Reply(
                        400,
                        f"{p}.image_url must be an object with a 'url' string.",
                        param=param,
                    )
                if url[:5].lower() == "data:":
                    images.append(_decode_data_uri(url, param, provider.formats, full=full))
                elif provider.data_uri_only:
                    raise Reply(
                        400,
                        f"Images must be sent as base64 data URIs; URLs are not supported "
                        f"({param} starts with {short(url, 24)!r}).",
                        param=param,
                        code="invalid_image_url",
                    )
                else:
                    urls.append(url)
            else:
                raise Reply(
                    400,
                    f"Unsupported content part type {kind!r} in {p}; "
                    "expected 'text' or 'image_url'.",
                    param=f"{p}.type",
                )
    response_format = req.get("response_format")
    if response_format is not None:
        kind = response_format.get("type") if isinstance(response_format, dict) else None
        if kind not in ("text", "json_object", "json_schema"):
            raise Reply(
                400,
                "response_format.type must be 'text', 'json_object' or 'json_schema'.",
                param="response_format",
            )
        if kind == "json_schema":
            js = response_format.get("json_schema")
            if not isinstance(js, dict) or not isinstance(js.get("schema", {}), dict):
                raise Reply(
                    400,
                    "response_format.json_schema must be an object with a 'schema'.",
                    param="response_format.json_schema",
                )
    max_tokens = req.get("max_completion_tokens", req.get("max_tokens"))
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        raise Reply(400, "max_tokens must be a positive integer.", param="max_tokens")
    n = req.get("n", 1)
    if n is None:
        n = 1
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 8:
        raise Reply(400, "n must be an integer from 1 to 8.", param="n")
    stream_options = req.get("stream_options") or {}
    return Parsed(
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


def short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def check_key(
    header: str | None,
    api_key: str | None,
    key_in: Sequence[str] = ("bearer",),
    query: Mapping[str, str] | None = None,
) -> None:
    """Refuse (401) a request that does not carry ``api_key`` in one of the places ``key_in``
    names: ``"bearer"`` (``Authorization: Bearer KEY``), ``"basic"`` (HTTP Basic auth whose
    password is the key, as a URL's ``user:KEY@`` sends it) or ``"query:NAME"`` (the query
    parameter NAME, as a gateway's ``?api-key=KEY``)."""
    if api_key is None:
        return
    candidates: list[str] = []
    scheme, _, value = (header or "").strip().partition(" ")
    if scheme.lower() == "bearer" and "bearer" in key_in:
        candidates.append(value.strip())
    if scheme.lower() == "basic" and "basic" in key_in:
        with contextlib.suppress(ValueError, binascii.Error):
            candidates.append(
                base64.b64decode(value.strip(), validate=True).decode().partition(":")[2]
            )
    for place in key_in:
        if place.startswith("query:") and query and place[6:] in query:
            candidates.append(query[place[6:]])
    candidates = [c for c in candidates if c]
    if not candidates:
        raise Reply(
            401,
            "You didn't provide an API key. Send it in the Authorization header as "
            "'Authorization: Bearer YOUR_KEY'.",
            code="invalid_api_key",
        )
    if not any(hmac.compare_digest(c.encode(), api_key.encode()) for c in candidates):
        raise Reply(
            401,
            "Incorrect API key provided. The offline stand-in's key is set by its "
            "api_key option (default 'offline').",
            code="invalid_api_key",
        )


def model_not_found(name: str, known: Sequence[str]) -> Reply:
    return Reply(
        404,
        f"The model {short(name, 100)!r} does not exist on this server; available models: "
        f"{', '.join(known)} (start it with any_model=True / --any-model to accept any name).",
        param="model",
        code="model_not_found",
    )


def body_too_large(length: int, limit: int) -> Reply:
    """The 413 for a body of ``length`` bytes where bodies must be smaller than ``limit``."""
    return Reply(
        413,
        f"Request body too large: {length:,} bytes; the limit is {limit:,} bytes "
        "(the body must be smaller than that).",
        code="request_too_large",
    )
