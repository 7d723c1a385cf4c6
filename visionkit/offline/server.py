"""``OfflineServer``: lifecycle, test controls (faults, stats, batches) and the routes."""

from __future__ import annotations

import contextlib
import hashlib
import math
import socket
import struct
import tempfile
import threading
import time
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..providers import BatchLimits, Provider, get_provider, providers
from .answers import sse_body
from .batches import BatchPlan, BatchRecord, BatchService, RunnerSettings
from .chat import ChatEngine
from .describe import PREFIX
from .faults import Fault, TokenBucket, duration_text, fault_name, fault_reply, retry_headers
from .files import FileStore, UploadPacer
from .handler import Handler, HTTPServer, Request, Response
from .marks import SMALL_MODEL
from .rules import Reply, check_key, model_not_found
from .stats import RequestRecord, ServerStats

__all__ = ["DEFAULT_MODEL", "OfflineServer"]

DEFAULT_MODEL = "visionkit-offline"
"""The stand-in's model name (it also accepts inference.net's default model's name)."""


@dataclass
class OfflineServer:
    """A local OpenAI-compatible server enforcing a provider profile's rules (inference.net's).

    ``start()``/``stop()`` or ``with OfflineServer(latency=0.2) as server: server.base_url``.
    See ``visionkit.offline``'s docstring for what it enforces and answers, and
    ``visionkit.offline.batches`` for the Batch API and its knobs (the ``batch_*`` fields).
    """

    latency: float = 0.0
    fail_rate: float = 0.0
    rate_limit: float | None = None
    burst: float | None = None  # token-bucket size; default: one second's worth (>= 1)
    # Announce the rate limit on every chat answer and 429, as providers do: "openai"
    # (x-ratelimit-limit/remaining/reset-requests) or "ietf" (RateLimit-Policy and RateLimit,
    # draft-ietf-httpapi-ratelimit-headers-08); None: say nothing (a limit nobody was told).
    rate_headers: str | None = None
    api_key: str | None = "offline"
    # Where a request may carry the key: "bearer", "basic" (the password of HTTP Basic auth,
    # as a URL's user:KEY@ sends it), "query:NAME" (a ?NAME=KEY parameter); see rules.check_key.
    key_in: tuple[str, ...] = ("bearer",)
    model: str = DEFAULT_MODEL
    seed: int = 0
    profile: str | Provider = "offline"
    fail_status: int = 500
    any_model: bool = False
    max_images: int | None = None  # override the profile's limit
    pixels: bool = True  # False: read image headers only (size, format), for cheap benchmarks
    host: str = "127.0.0.1"
    port: int = 0
    # The Batch API: limits (None: the profile's) and how batches run (read by start():
    # runner_settings()).
    upload_interval: float | None = None  # seconds between accepted file uploads
    max_file_bytes: int | None = None
    max_requests_per_file: int | None = None
    batch_validate_time: float = 0.0  # seconds a batch spends validating
    batch_time: float = 0.0  # seconds in progress; the lines are spread evenly over it
    batch_finalize_time: float = 0.0
    batch_cancel_time: float = 0.0  # seconds from cancelling to cancelled
    batch_expire_fraction: float = 0.0  # the last lines of every batch left unrun: it expires
    line_fail_rate: float = 0.0  # batch lines answered with line_fail_status
    line_fail_status: int = 500
    # Error answers in the output file (with their status), not the error file: some
    # OpenAI-compatible servers deliver them so; a client must not take them for answers.
    batch_errors_in_output: bool = False
    stats: ServerStats = field(default_factory=ServerStats, init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("fail_rate", "batch_expire_fraction", "line_fail_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, but {value!r} was passed")
        for name in (
            "latency",
            "batch_validate_time",
            "batch_time",
            "batch_finalize_time",
            "batch_cancel_time",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, but {getattr(self, name)!r} was passed")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise ValueError(f"rate_limit must be > 0, but {self.rate_limit!r} was passed")
        if self.rate_headers not in (None, "openai", "ietf"):
            raise ValueError(
                "rate_headers must be one of [None, 'openai', 'ietf'], but "
                f"{self.rate_headers!r} was passed"
            )
        self.provider = get_provider(self.profile)
        self._lock = threading.Lock()
        self._faults: deque[Fault] = deque()
        self._bucket = (
            TokenBucket(self.rate_limit, self.burst or max(1.0, self.rate_limit))
            if self.rate_limit
            else None
        )
        self._httpd: HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._created = int(time.time())
        self.engine = ChatEngine(
            self.provider,
            lambda: [m["id"] for m in self.model_list()],
            any_model=self.any_model,
            max_images=self.max_images,
            pixels=self.pixels,
        )
        self.batch_limits = self._batch_limits()
        self._pacer = UploadPacer(self.batch_limits.upload_interval)
        self._storage: tempfile.TemporaryDirectory[str] | None = None
        self._files: FileStore | None = None
        self._batches: BatchService | None = None

    def runner_settings(self) -> RunnerSettings:
        """How the Batch API runs batches: this server's ``batch_*`` and ``line_*`` fields."""
        return RunnerSettings(
            validate_time=self.batch_validate_time,
            run_time=self.batch_time,
            finalize_time=self.batch_finalize_time,
            cancel_time=self.batch_cancel_time,
            expire_fraction=self.batch_expire_fraction,
            line_fail_rate=self.line_fail_rate,
            line_fail_status=self.line_fail_status,
            errors_in_output=self.batch_errors_in_output,
            seed=self.seed,
        )

    def _batch_limits(self) -> BatchLimits:
        limits = self.provider.batch or BatchLimits()
        overrides = {
            name: getattr(self, name)
            for name in ("upload_interval", "max_file_bytes", "max_requests_per_file")
            if getattr(self, name) is not None
        }
        return replace(limits, base_url=None, **overrides)

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def max_body_bytes(self) -> int | None:
        """The largest request body accepted (the profile's; ``None``: no limit)."""
        return self.provider.max_body_bytes

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1`` while running."""
        if self._httpd is None:
            raise RuntimeError("the offline server is not running; call start() first")
        host, port = self._httpd.server_address[:2]
        if isinstance(host, bytes):
            host = host.decode()
        return f"http://{host}:{port}/v1"

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return self._httpd is not None

    def start(self) -> OfflineServer:
        """Bind an ephemeral port (or ``port``) and serve in a daemon thread; returns self."""
        if self._httpd is not None:
            return self
        httpd = HTTPServer((self.host, self.port), Handler)
        httpd.app = self
        self._stopping.clear()
        # Files and batches live in a temporary directory for as long as the server runs.
        self._storage = tempfile.TemporaryDirectory(prefix="visionkit-offline-")
        self._files = FileStore(Path(self._storage.name))
        self._batches = BatchService(
            engine=self.engine,
            files=self._files,
            limits=self.batch_limits,
            settings=self.runner_settings(),
            stopping=self._stopping,
        )
        with self._lock:
            self.stats.batch = self._batches.counters
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
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            httpd.shutdown()  # waits for serve_forever to return: forever if it is not running
        httpd.server_close()
        with self._lock:
            conns = list(self._connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._batches is not None:
            self._batches.join()
        if self._storage is not None:
            self._storage.cleanup()
            self._storage = None

    def serve_forever(self) -> None:
        """Serve in the foreground until interrupted (used by ``python -m visionkit.offline``)."""
        self.start()
        try:
            # Sleep, not Thread.join(timeout): a KeyboardInterrupt landing inside join makes
            # Python 3.11 release the serving thread's state lock and mark it stopped.
            while self._thread is not None and self._thread.is_alive():
                time.sleep(0.2)
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
        """Faults injected with ``inject`` and not yet used."""
        with self._lock:
            return len(self._faults)

    def reset_stats(self) -> ServerStats:
        """Start counting afresh; returns the old stats."""
        batches = self._batches
        counters = batches.reset_counters() if batches is not None else None
        with self._lock:
            old, self.stats = self.stats, ServerStats()
            if counters is not None:
                self.stats.batch = counters
        return old

    def model_list(self) -> list[dict[str, Any]]:
        """The models ``GET /v1/models`` lists."""
        names = [self.model]
        default = providers["inference.net"].default_model
        for name in (default, SMALL_MODEL):  # SMALL_MODEL looks at 448 px (offline.marks)
            if name and name not in names:
                names.append(name)
        return [
            {"id": name, "object": "model", "created": self._created, "owned_by": "visionkit"}
            for name in names
        ]

    def pause_batches(self) -> None:
        """Hold every batch where it is (status, lines run) until ``resume_batches()``."""
        self._batch_service().pause()

    def resume_batches(self) -> None:
        """Let batches run again after ``pause_batches()``."""
        self._batch_service().resume()

    def inject_batch(
        self,
        *,
        expire_fraction: float | None = None,
        fail_lines: Collection[str] = (),
        fail_status: int = 500,
        message: str | None = None,
    ) -> None:
        """Shape the next created batch only: ``expire_fraction`` of its lines (the last ones)
        left unrun so it expires; the lines whose ``custom_id`` is in ``fail_lines`` answered
        with ``fail_status`` and ``message``."""
        if expire_fraction is not None and not 0.0 <= expire_fraction <= 1.0:
            raise ValueError(f"expire_fraction must be between 0 and 1, not {expire_fraction!r}")
        plan = BatchPlan(expire_fraction, frozenset(fail_lines), fail_status, message)
        self._batch_service().inject(plan)

    def batch(self, batch_id: str) -> BatchRecord:
        """The stand-in's record of a batch (also what the API does not show: ``webhook_url``)."""
        try:
            return self._batch_service().get(batch_id)
        except Reply as reply:
            raise KeyError(batch_id) from reply

    def _batch_service(self) -> BatchService:
        if self._batches is None:
            raise RuntimeError("the offline server is not running; call start() first")
        return self._batches

    # -- the HTTP application (see handler.App) --------------------------------------------

    def connection_opened(self, conn: socket.socket) -> None:
        """Called by the HTTP handler for each new connection (counted in ``stats``)."""
        with self._lock:
            self._connections.add(conn)
            self.stats.connections += 1

    def connection_closed(self, conn: socket.socket) -> None:
        """Called by the HTTP handler when a connection ends."""
        with self._lock:
            self._connections.discard(conn)

    def handle(self, request: Request) -> Response:
        """Route one request; every answer, error or not, is counted in ``stats``."""
        with self._lock:
            self.stats.requests += 1
        if request.method == "POST" and request.path == "/v1/chat/completions":
            return self._chat(request)  # counts its own status, before answering
        try:
            response = self._route(request)
        except Reply as reply:
            request.refuse_body(reply)
            response = Response.error(reply)
        with self._lock:
            self.stats.status_counts[response.status] += 1
        return response

    def _route(self, request: Request) -> Response:
        method, path = request.method, request.path
        if method == "GET" and path in ("", "/health"):  # a liveness probe needs no key
            return Response.json(200, {"status": "ok", "service": PREFIX})
        check_key(request.headers.get("Authorization"), self.api_key, self.key_in, request.query)
        parts = path.split("/")[1:]  # "/v1/files/ID/content" -> ["v1", "files", "ID", "content"]
        if parts[:2] == ["v1", "models"] and method == "GET":
            return self._models(parts[2:])
        if parts[:2] == ["v1", "files"]:
            return self._files_route(request, method, parts[2:])
        if parts[:2] == ["v1", "batches"]:
            batches = self._batch_service()
            if method == "POST" and len(parts) == 2:
                return batches.create(request)
            if method == "GET" and len(parts) == 2:
                return batches.list(request)
            if method == "GET" and len(parts) == 3:
                return batches.retrieve(parts[2])
            if method == "POST" and len(parts) == 4 and parts[3] == "cancel":
                return batches.cancel(parts[2])
        raise Reply(404, f"Unknown path {method} {path!r}.", code="unknown_url")

    def _models(self, rest: list[str]) -> Response:
        if not rest:
            return Response.json(200, {"object": "list", "data": self.model_list()})
        name = "/".join(rest)
        for entry in self.model_list():
            if entry["id"] == name or self.any_model:
                return Response.json(200, {**entry, "id": name})
        raise model_not_found(name, [m["id"] for m in self.model_list()])

    def _files_route(self, request: Request, method: str, rest: list[str]) -> Response:
        files = self._files
        if files is None:
            raise RuntimeError("the offline server is not running")
        if method == "POST" and not rest:
            try:
                record = files.upload(request, self._pacer, self.batch_limits.max_file_bytes)
            except Reply as reply:
                if reply.status == 429:
                    with self._lock:
                        self.stats.uploads_refused += 1
                raise
            with self._lock:
                self.stats.uploads += 1
                self.stats.upload_bytes += record.bytes
                self.stats.upload_times.append(time.time())
            return Response.json(200, record.as_dict())
        if method == "GET" and not rest:
            return Response.json(200, files.page(request.query))
        if method == "GET" and len(rest) == 1:
            return Response.json(200, files.get(rest[0]).as_dict())
        if method == "GET" and len(rest) == 2 and rest[1] == "content":
            record = files.get(rest[0])
            return Response(200, content_type="application/octet-stream", file=record.path)
        if method == "DELETE" and len(rest) == 1:
            files.delete(rest[0])
            return Response.json(200, {"id": rest[0], "object": "file", "deleted": True})
        raise Reply(404, f"Unknown path {method} {request.path!r}.", code="unknown_url")

    # -- the synchronous chat endpoint -----------------------------------------------------

    def _rate_check(self) -> Reply | None:
        if self._bucket is None:
            return None
        with self._lock:
            wait = self._bucket.take()
        if wait <= 0:
            return None
        return Reply(
            429,
            f"Rate limit reached: {self.rate_limit:g} requests per second. "
            f"Retry after {wait * 1000:.0f} ms.",
            type="requests",
            code="rate_limit_exceeded",
            headers={**retry_headers(wait), **self._ratelimit_headers()},
        )

    def _should_fail(self, digest: str, attempt: int) -> bool:
        if self.fail_rate <= 0:
            return False
        h = hashlib.blake2b(f"{self.seed}:{digest}:{attempt}".encode(), digest_size=8).digest()
        return struct.unpack(">Q", h)[0] / 2**64 < self.fail_rate

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def _chat(self, request: Request) -> Response:
        """Answer one chat request; stats are recorded *before* the answer is sent, so a client
        that has its answer can trust ``stats`` to include it."""
        rec = RequestRecord(
            request_id=request.request_id,
            status=0,
            digest="",
            body_bytes=0,
            images=0,
            image_bytes=0,
            retry_count=request.retry_count,
            started=time.monotonic(),
            elapsed=0.0,
        )
        cpu = time.thread_time()
        with self._lock:
            entry_stats = s = self.stats
            s.chat_requests += 1
            s.in_flight += 1
            s.max_in_flight = max(s.max_in_flight, s.in_flight)
        try:
            try:
                response = self._answer(request, rec)
                rec.status = 0 if response.drop else 200
            except Reply as reply:
                response = Response.error(request.refuse_body(reply))
                rec.status = reply.status
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
                if rec.status == 200:
                    s.answered_bodies[rec.digest] += 1
        return response

    def _answer(self, request: Request, rec: RequestRecord) -> Response:
        """Check one chat request and answer it (raises Reply for an error answer)."""
        # The body is read (or drained) first so a keep-alive connection stays in sync.
        body = request.read_body(self.max_body_bytes)
        check_key(request.headers.get("Authorization"), self.api_key, self.key_in, request.query)
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
            rec.fault = fault_name(fault)
            self._sleep(fault.delay)
            if fault.drop:
                return Response(0, drop=True)
            if fault.status is not None:
                raise fault_reply(fault)
        limited = self._rate_check()
        if limited is not None:
            raise limited
        answer = self.engine.answer(body, request.request_id)
        rec.images = answer.images
        rec.image_bytes = answer.image_bytes
        with self._lock:
            self.stats.images += rec.images
            self.stats.image_bytes += rec.image_bytes
        self._sleep(self.latency)
        if self._should_fail(rec.digest, seen):
            raise Reply(
                self.fail_status,
                "The server had an error while processing your request (simulated by "
                "the offline stand-in's fail_rate).",
                type="server_error",
                code="internal_error" if self.fail_status >= 500 else None,
            )
        with self._lock:
            self.stats.prompt_tokens += answer.prompt_tokens
            self.stats.completion_tokens += answer.completion_tokens
        headers = {
            "openai-processing-ms": str(int((time.monotonic() - rec.started) * 1000)),
            **self._ratelimit_headers(),
        }
        if answer.parsed.stream:
            body_out = sse_body(answer.response, answer.parsed.include_usage)
            return Response(
                200, body_out, content_type="text/event-stream; charset=utf-8", headers=headers
            )
        return Response.json(200, answer.response, headers=headers)

    def _ratelimit_headers(self) -> dict[str, str]:
        """The limit as the ``rate_headers`` style announces it (see the field)."""
        if self._bucket is None or self.rate_headers is None:
            return {}
        bucket = self._bucket
        with self._lock:
            refilled = bucket.tokens + (time.monotonic() - bucket.stamp) * bucket.rate
            remaining = max(0, int(min(bucket.burst, refilled)))
            full_in = max(0.0, (bucket.burst - min(bucket.burst, refilled)) / bucket.rate)
        if self.rate_headers == "openai":
            return {
                "x-ratelimit-limit-requests": str(round(bucket.rate * 60)),
                "x-ratelimit-remaining-requests": str(remaining),
                "x-ratelimit-reset-requests": duration_text(full_in),
            }
        window = bucket.burst / bucket.rate  # the bucket's quota, refilled over this window
        return {
            "RateLimit-Policy": f'"default";q={bucket.burst:g};w={window:g}',
            "RateLimit": f'"default";r={remaining};t={math.ceil(full_in)}',
        }
