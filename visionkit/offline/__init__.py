"""A local OpenAI-compatible stand-in for inference.net, for tests, tutorials and key-less users.

Usage:

    import openai, visionkit.offline
    with visionkit.offline.serve(latency=0.2) as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="offline")
        client.chat.completions.create(model="visionkit-offline", messages=[...])
        base_url.server.stats.status_counts       # what the server saw

or from a shell, for any OpenAI client: ``python -m visionkit.offline --port 8000 --latency 0.2``.

It is a real HTTP/1.1 server on 127.0.0.1 (stdlib ``ThreadingHTTPServer``, one thread per
keep-alive connection) serving ``POST /v1/chat/completions``, ``GET /v1/models`` and the Batch
API (``/v1/files``, ``/v1/batches``; see below). Its answers are honest: a deterministic
description of the pixels (size, format, dominant named colours, brightness), never a pretend
understanding of the content; in JSON mode the same facts as fields.

What it enforces, in this order, with OpenAI-shaped errors (``{"error": {"message", "type",
"param", "code"}}``) -- these are inference.net's documented rules (its vision guide), taken from
the provider profile (``profile="offline"``, or any other registered profile):

| rule | status | why |
| ---- | ------ | --- |
| ``Authorization: Bearer <key>`` | 401 | the key is never echoed or logged (1) |
| body smaller than 1,000,000 bytes | 413 | "must be less than 1MB" (2) |
| rate limit (token bucket), if set | 429 | ``Retry-After`` + ``retry-after-ms`` |
| valid JSON, ``model``, ``messages`` | 400 | |
| known model | 404 | see ``models`` below |
| images only as base64 ``data:`` URIs | 400 | "no images from a URL" |
| png / jpeg / webp / gif, bytes as declared | 400 | sniffed from magic bytes, then Pillow |
| at most 2 images per request | 400 | |

(1) ``key_in=`` also takes the key as Basic auth's password or a query parameter. (2) Decided
from Content-Length; the body is drained in chunks, never held in memory.

What it can and cannot see: it describes every image's pixels (size, format, named colours,
brightness) and answers any other question about what an image shows with an honest "it
cannot see", except one task: asked *how many marks* (or to *count* them), it counts the small
red marks in each image as it received it (``visionkit.offline.marks``), so resizing changes
what it can see. ``visionkit-offline`` looks at the image as sent; ``visionkit-offline-small``
looks at it at 448 px a side at most, as small vision models do. ``make_marks(path, n)``
writes such a set with its true counts (and simulated annotators), for evaluating prompts,
models and image sizes offline (``df.vision.evaluate``) with a real cost/quality frontier.

``usage.prompt_tokens`` is the provider's token formula on each image's real size (read from its
header) plus ``ceil(len(text) / 4)`` for the text of all messages; ``completion_tokens`` is
``ceil(len(answer) / 4)``.

Models: the configured ``model`` ("visionkit-offline"), ``visionkit-offline-small`` and
inference.net's default model name are accepted, so code written for inference.net runs
unchanged; any other name is a 404 like a real provider's, unless ``any_model=True``
(``--any-model``), for pipelines with their own names.

Knobs for tests and benchmarks: ``latency`` (seconds per answered request, slept in the handler
thread so requests overlap), ``fail_rate`` (a fraction answered with ``fail_status``; decided by
hashing ``seed``, the body and how many times that body was seen, so a given run fails the same
requests and a retry can succeed), ``rate_limit`` (requests/second, ``burst`` bucket size; each
refused request is told, in ``Retry-After`` (whole seconds, as HTTP requires) and
``retry-after-ms`` (exact, read first by the openai SDK), when a token frees *for it*: successive
refusals get successive tokens, so clients honouring the header come back spread out;
``rate_headers="openai"`` or ``"ietf"`` (``--rate-headers``) also announces the limit on every
answer and 429, as ``x-ratelimit-limit/remaining/reset-requests`` or as ``RateLimit-Policy`` and
``RateLimit``), and
``OfflineServer.inject(...)``: one-shot faults consumed by the next chat requests (a status with
optional ``Retry-After``, a ``delay`` to provoke client timeouts, ``drop=True`` to close the
connection without answering). ``pixels=False`` reads only each image's header (size, format;
every rule still enforced) -- about 1.2 instead of 7 ms of server CPU per 200 KB JPEG, for
benchmarks where the server shares the client's CPU. ``OfflineServer.stats`` counts what
happened (requests, connections, statuses, peak concurrency, image bytes, retries, bodies seen
more than once, server CPU per request); it is updated *before* the answer is sent, so a client
holding an answer can trust the stats to include it.

The Batch API (``visionkit.offline.batches`` has the details) is inference.net's, which is
OpenAI's: ``files.create(purpose="batch")`` (streamed to disk, at most ``max_file_bytes``,
paced to one upload per ``upload_interval`` -- 60 s, inference.net's "1 per minute", unless
set -- with 429 and ``Retry-After``), ``batches.create/retrieve/list/cancel`` with the real
statuses, ``request_counts``, and output and error files matched by ``custom_id``. Every line
is answered by the same pipeline as the synchronous endpoint (``chat.ChatEngine``), under the
same rules, so a body gets the same answer both ways. Knobs: ``batch_validate_time``,
``batch_time`` (lines spread over it), ``batch_finalize_time``, ``batch_cancel_time``,
``batch_expire_fraction`` (the last lines left unrun: the batch expires and delivers what
completed), ``line_fail_rate``; ``pause_batches()``/``resume_batches()``; and
``inject_batch(expire_fraction=..., fail_lines=..., fail_status=..., message=...)`` for the next
batch. ``stats`` counts uploads, batches and lines run/answered/failed, and
``stats.paid_twice`` lists bodies answered with 200 more than once, synchronously or in a batch.

Where the code lives: ``api`` (``serve``, ``shared``, ``start``), ``server`` (``OfflineServer``:
lifecycle, controls, routes, the synchronous chat endpoint), ``handler`` (HTTP only: the
``Request`` it hands the server -- body read, drained or streamed on demand -- and the
``Response`` it writes; ``App`` is the whole contract between the two), ``chat`` (one body in,
one completion or error out), ``files`` and ``batches`` (the Batch API), ``rules`` (the checks
above and OpenAI-shaped errors), ``describe`` (pixels to facts), ``answers`` (text, JSON and
schema answers, usage, streaming), ``faults`` (injected faults, rate limit), ``stats``
(counters), ``__main__`` (the command line).

What surprised us while building it (Python's HTTP server, the openai SDK, inference.net's
documents) is on the documentation's Design page, docs/design.md ("The offline stand-in: Python's
HTTP server").
"""

from __future__ import annotations

from .api import BaseURL, serve, shared, start
from .batches import BatchRecord
from .describe import PREFIX, ImageFacts, describe_image
from .marks import SMALL_MODEL, count_marks, make_marks
from .server import DEFAULT_MODEL, OfflineServer
from .stats import RequestRecord, ServerStats

# The command line lives in __main__.py and is not imported here: importing it from the package
# would make ``python -m visionkit.offline`` warn (runpy finds it in sys.modules already).

__all__ = [
    "DEFAULT_MODEL",
    "PREFIX",
    "SMALL_MODEL",
    "BaseURL",
    "BatchRecord",
    "ImageFacts",
    "OfflineServer",
    "RequestRecord",
    "ServerStats",
    "count_marks",
    "describe_image",
    "make_marks",
    "serve",
    "shared",
    "start",
]
