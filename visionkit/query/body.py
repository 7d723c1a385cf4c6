"""Build one chat-completions request per row and check it against the provider's rules.

Everything here runs before a byte goes on the wire, so a request that breaks a documented rule
(formats, data URIs only, images per request, body size) becomes that row's ``RequestError``
instead of a 4xx the provider charges a round trip for.

- ``build_body``: the JSON body the ``openai`` SDK will send (system message, then one user
  message with the images first and the text last, as in the provider's guide).
- ``serialize_body`` / ``body_bytes``: the body's JSON bytes exactly as the SDK serialises
  it (``json.dumps(ensure_ascii=False, separators=(",", ":"), allow_nan=False)`` in UTF-8),
  and their size. ``ask`` sends these bytes, so what was measured is what goes out.
- ``BodyMaker``: the same bytes with all but the prompt and the images fixed, the fixed parts'
  JSON written once for a whole call instead of once a row (as ``cache.KeyMaker`` does for keys).
- ``check_body``: the profile's rules; ``prepare_request`` encodes the images (with encode's
  budget for this many images), checks, and when the body is still too big re-encodes the
  images to the bytes that are left before giving up on the row.
"""

from __future__ import annotations

import binascii
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any

from ..errors import ImageError, RequestError
from ..images.decode import open_bytes
from ..images.encode import encode_image
from ..images.formats import header_size
from ..providers import Provider
from ..tokens import text_tokens

__all__ = [
    "BodyMaker",
    "PreparedRequest",
    "body_bytes",
    "build_body",
    "check_body",
    "check_parts",
    "encoded_size",
    "image_tokens",
    "prepare_request",
    "serialize_body",
]

# Room for JSON punctuation around each image part beyond the data URI itself.
_PART_OVERHEAD = 64


def build_body(
    *,
    model: str,
    prompt: str,
    images: Sequence[str],
    system: str | None = None,
    response_format: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The chat-completions body: optional system message, then images and the prompt."""
    content: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": uri}} for uri in images
    ]
    content.append({"type": "text", "text": prompt})
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": content})
    body: dict[str, Any] = {"model": model, "messages": messages}
    if response_format is not None:
        body["response_format"] = dict(response_format)
    if params:
        body.update(params)
    return body


def serialize_body(body: Mapping[str, Any]) -> bytes:
    """``body`` as the JSON bytes the ``openai`` SDK would send (its ``openapi_dumps``).

    ``ask`` sends these very bytes (``post(..., content=...)``), so the size checked is the
    size sent, and the SDK does not serialise a large body a second time on the event loop.
    """
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=str)
    return text.encode("utf-8")


class BodyMaker:
    """``serialize_body(build_body(...))`` for one call's fixed model, system message, schema
    and options: ``maker(prompt, uris)`` splices the prompt's and the images' JSON strings
    into the rest, serialised once (a row's body costs its strings, not the whole dict again).
    The bytes are the same as ``serialize_body``'s, which a test holds; options that replace
    the messages themselves make it serialise each body whole."""

    def __init__(
        self,
        *,
        model: str,
        system: str | None = None,
        response_format: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        self.model, self.system = model, system
        self.response_format = dict(response_format) if response_format is not None else None
        self.params = dict(params or {})
        self._pieces: dict[int, list[bytes] | None] = {}  # number of images -> the fixed parts

    def build(self, prompt: str, images: Sequence[str]) -> dict[str, Any]:
        """The body as a dict (``build_body``)."""
        return build_body(
            model=self.model,
            prompt=prompt,
            images=images,
            system=self.system,
            response_format=self.response_format,
            params=self.params,
        )

    def _parts(self, n: int) -> list[bytes] | None:
        """The body's JSON for ``n`` images cut around the prompt then each image (in the order
        they are written), or None when the options hide them (``messages`` replaced)."""
        if n not in self._pieces:
            marks = [f"\x00{os.urandom(8).hex()}\x00" for _ in range(n + 1)]
            text = serialize_body(self.build(marks[0], marks[1:])).decode("utf-8")
            found = [text.find(_dumps(m)) for m in marks]
            pieces: list[bytes] | None = None
            if all(
                i >= 0 and text.count(_dumps(m)) == 1 for i, m in zip(found, marks, strict=True)
            ):
                order = sorted(range(n + 1), key=found.__getitem__)
                if order == [*range(1, n + 1), 0]:  # the images, then the prompt (build_body)
                    pieces, rest = [], text
                    for i in order:
                        head, _, rest = rest.partition(_dumps(marks[i]))
                        pieces.append(head.encode("utf-8"))
                    pieces.append(rest.encode("utf-8"))
            self._pieces[n] = pieces
        return self._pieces[n]

    def spliced(self, n: int) -> bool:
        """Whether bodies with ``n`` images are spliced (else serialised whole)."""
        return self._parts(n) is not None

    def __call__(self, prompt: str, images: Sequence[str]) -> bytes:
        """The body's JSON bytes (``serialize_body(self.build(prompt, images))``)."""
        pieces = self._parts(len(images))
        if pieces is None:
            return serialize_body(self.build(prompt, images))
        values = [*images, prompt]
        out = [pieces[0]]
        for value, piece in zip(values, pieces[1:], strict=True):
            out.append(_dumps(value).encode("utf-8"))
            out.append(piece)
        return b"".join(out)


def _dumps(text: str) -> str:
    """A string as ``serialize_body`` writes it inside the body: ``json.dumps(text,
    ensure_ascii=False)`` without building an encoder each time."""
    return encode_basestring(text)


def body_bytes(body: Mapping[str, Any]) -> int:
    """Size in bytes of ``body`` as the ``openai`` SDK serialises it."""
    return len(serialize_body(body))


def _images_in(body: Mapping[str, Any]) -> list[str]:
    urls = []
    for message in body.get("messages", ()):
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "image_url":
                    urls.append(part["image_url"]["url"])
    return urls


def _mime_format(uri: str) -> str | None:
    head = uri[5 : uri.find(",")] if uri.startswith("data:") else ""
    mime = head.split(";")[0].lower()
    if not mime.startswith("image/"):
        return None
    fmt = mime[6:]
    return "jpeg" if fmt in ("jpg", "pjpeg") else fmt


def check_body(
    body: Mapping[str, Any], provider: Provider, *, row: object = None, payload: bytes | None = None
) -> int:
    """Check ``body`` against ``provider``'s rules; returns its size in bytes.

    ``payload``: ``body`` already serialised (``serialize_body``), to measure without redoing it.

    Raises ``RequestError`` naming the row and the rule: too many images, a URL where only
    data URIs are accepted, a format the provider does not take, an image or a body too big.
    """
    size = len(payload) if payload is not None else body_bytes(body)
    return check_parts(_images_in(body), size, provider, row=row)


def check_parts(images: Sequence[str], size: int, provider: Provider, *, row: object = None) -> int:
    """``check_body`` for a body already taken apart: its image URLs and its size in bytes."""
    if provider.max_images is not None and len(images) > provider.max_images:
        raise RequestError(
            f"{len(images)} images in one request, but {provider.name} allows at most "
            f"{provider.max_images}",
            row=row,
        )
    for uri in images:
        if not uri.startswith("data:"):
            if provider.data_uri_only:
                raise RequestError(
                    f"{provider.name} accepts images only as base64 data URIs, not URLs",
                    row=row,
                )
            continue
        fmt = _mime_format(uri)
        if fmt not in provider.formats:
            raise RequestError(
                f"image format {fmt!r} is not accepted by {provider.name} "
                f"(accepted: {', '.join(provider.formats)})",
                row=row,
            )
        if provider.max_image_bytes is not None and len(uri) > provider.max_image_bytes:
            raise RequestError(
                f"an image of {len(uri):,} bytes exceeds {provider.name}'s "
                f"{provider.max_image_bytes:,}-byte limit per image",
                row=row,
            )
    if provider.max_body_bytes is not None and size >= provider.max_body_bytes:
        raise RequestError(
            f"request body of {size:,} bytes is not under {provider.name}'s limit of "
            f"{provider.max_body_bytes:,} bytes",
            row=row,
        )
    return size


@dataclass
class PreparedRequest:
    """A checked body ready to send: its JSON bytes, size and estimated tokens.

    Only the serialised ``payload`` is kept (a request in flight holds its images once);
    ``body`` parses it back for inspection. ``image_sizes`` is the (width, height) of each
    image as encoded in it -- what the model sees, after ``max_side`` and any shrinking to
    fit the body limit -- for callers that map the model's pixel coordinates back
    (``vk.propose_boxes``).
    """

    payload: bytes
    nbytes: int
    image_tokens: int
    text_tokens: int
    image_sizes: tuple[tuple[int, int], ...] = ()

    @property
    def body(self) -> dict[str, Any]:
        return json.loads(self.payload)

    @property
    def estimated_tokens(self) -> int:
        return self.image_tokens + self.text_tokens


# Base64 characters decoded first to find an image's size: enough for any PNG, GIF or WebP
# header and for a JPEG's frame header behind ordinary metadata (ICC profile, JFIF).
_HEAD_CHARS = 65_536
_HEAD_STEPS = (1024, _HEAD_CHARS)


def encoded_size(uri: str, *, row: object = None) -> tuple[int, int]:
    """(width, height) of the image inside a base64 ``data:`` URI, from its header.

    Decodes the first KiB of base64, then 64 KiB (``visionkit.images.formats.header_size``), and
    the whole payload only when the header is further in (a JPEG behind a large metadata block)
    or the format is one without a header reader here (then Pillow reads it). An image whose
    size cannot be read is ``row``'s ``RequestError``: never an estimate of 0 tokens.
    """

    comma = uri.find(",")
    start = comma + 1 if uri.startswith("data:") and comma > 0 else len(uri)
    size = None
    try:
        # A few hundred bytes hold any PNG, GIF or WebP header and a stripped JPEG's frame
        # header; only then 64 KiB, then all (slices of the URI, never a copy of all of it).
        for chars in _HEAD_STEPS:
            end = min(len(uri), start + chars)
            head = uri[start : end - (end - start) % 4]
            size = header_size(binascii.a2b_base64(head))
            if size is not None or end == len(uri):
                break
        if size is None and start < len(uri):
            data = binascii.a2b_base64(uri[start:])
            if len(head) < len(uri) - start:
                size = header_size(data)
            if size is None:
                with open_bytes(data, check=False) as im:
                    size = im.size
    except (binascii.Error, ValueError, ImageError):
        size = None
    if size is None:
        what = _mime_format(uri) or "non-image"
        raise RequestError(
            f"cannot read the size of the encoded {what} image, so its tokens cannot be "
            "estimated; the request was not sent",
            row=row,
        )
    return size


def image_tokens(uris: Sequence[str], provider: Provider, *, row: object = None) -> int:
    """The provider's token estimate for encoded images, their sizes read from the URIs.

    Raises ``RequestError`` for ``row`` if a size cannot be read (see ``encoded_size``).
    """
    total = 0
    for uri in uris:
        w, h = encoded_size(uri, row=row)
        total += int(provider.estimate(w, h))
    return total


def prepare_request(
    images: Sequence[Any],
    *,
    provider: Provider,
    model: str,
    prompt: str,
    system: str | None = None,
    response_format: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    encode_options: Mapping[str, Any] | None = None,
    row: object = None,
    maker: BodyMaker | None = None,
) -> PreparedRequest:
    """Encode ``images`` (any image cells), build the body and check it.

    Images are encoded with the budget one image may take when ``len(images)`` share the
    body; if the prompt is so long that the body is still too big, they are re-encoded to the
    bytes that remain. Raises ``RequestError`` / ``ImageError`` for this row otherwise.
    ``maker``: the call's ``BodyMaker``, so that the fixed parts are not serialised again for
    every row; it then decides the system message, schema and options (``system``,
    ``response_format`` and ``params`` make one when it is not given).
    """
    options = dict(encode_options or {})
    n = len(images)
    if provider.max_images is not None and n > provider.max_images:
        raise RequestError(
            f"{n} images in one request, but {provider.name} allows at most {provider.max_images}",
            row=row,
        )
    if maker is None:
        maker = BodyMaker(
            model=model, system=system, response_format=response_format, params=params
        )

    def encode_all(max_bytes: int | None) -> list[str]:
        opts = dict(options)
        if max_bytes is not None:
            opts["max_bytes"] = min(max_bytes, opts.get("max_bytes") or max_bytes)
        return [encode_image(cell, provider=provider, row=row, **opts) for cell in images]

    def serialize(uris: list[str]) -> tuple[bytes, list[str]]:
        """The body's bytes and the image URLs in it."""
        try:
            payload = maker(prompt, uris)
            spliced = maker.spliced(len(uris))
            return payload, uris if spliced else _images_in(maker.build(prompt, uris))
        except ValueError as exc:  # NaN or infinity in an option: not valid JSON
            raise RequestError(f"the request cannot be sent as JSON: {exc}", row=row) from None

    uris = encode_all(provider.image_budget(images=max(n, 1)) if n else None)
    payload, sent = serialize(uris)
    try:
        size = check_parts(sent, len(payload), provider, row=row)
    except RequestError:
        limit = provider.max_body_bytes
        size = len(payload)
        if limit is None or size < limit or n == 0:
            raise
        # The body is over the limit: give the images what the rest of the body leaves.
        rest = len(serialize([""] * n)[0])
        share = (limit - 1 - rest) // n - _PART_OVERHEAD
        if share <= 1024:
            raise RequestError(
                f"the prompt and options take {rest:,} bytes, leaving no room for "
                f"{n} image(s) under {provider.name}'s {limit:,}-byte body limit",
                row=row,
            ) from None
        try:
            uris = encode_all(share)
        except ImageError as exc:
            raise RequestError(
                f"the image cannot be made small enough to fit {provider.name}'s "
                f"{limit:,}-byte body limit: {exc.reason}",
                row=row,
            ) from None
        payload, sent = serialize(uris)
        size = check_parts(sent, len(payload), provider, row=row)
    sizes = tuple(encoded_size(uri, row=row) for uri in uris)
    return PreparedRequest(
        payload=payload,
        nbytes=size,
        image_tokens=sum(int(provider.estimate(w, h)) for w, h in sizes),
        text_tokens=text_tokens(prompt, system),
        image_sizes=sizes,
    )
