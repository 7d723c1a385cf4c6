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

Where the code lives: ``api`` (``serve``, ``shared``, ``start``), ``server`` (``OfflineServer``:
lifecycle, controls, the chat pipeline), ``handler`` (HTTP: body reading and draining, routes),
``rules`` (the checks above and OpenAI-shaped errors), ``describe`` (pixels to facts),
``answers`` (text, JSON and schema answers, usage, streaming), ``faults`` (injected faults, rate
limit), ``stats`` (counters), ``__main__`` (the command line).

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

from .answers import answer_text, fill_schema
from .api import BaseURL, serve, shared, start
from .describe import MAX_ANALYSED_PIXELS, PREFIX, ImageFacts, describe_image
from .faults import Fault
from .handler import DRAIN_LIMIT
from .rules import HEADER_PREFIX, MIMETYPES
from .server import DEFAULT_MODEL, OfflineServer
from .stats import RequestRecord, ServerStats

# The command line lives in __main__.py and is not imported here: importing it from the package
# would make ``python -m visionkit.offline`` warn (runpy finds it in sys.modules already).

__all__ = [
    "DEFAULT_MODEL",
    "DRAIN_LIMIT",
    "HEADER_PREFIX",
    "MAX_ANALYSED_PIXELS",
    "MIMETYPES",
    "PREFIX",
    "BaseURL",
    "Fault",
    "ImageFacts",
    "OfflineServer",
    "RequestRecord",
    "ServerStats",
    "answer_text",
    "describe_image",
    "fill_schema",
    "serve",
    "shared",
    "start",
]
