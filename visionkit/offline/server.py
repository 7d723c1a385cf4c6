"""``OfflineServer``: lifecycle, test controls (faults, stats) and the chat pipeline."""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..providers import Provider, get_provider, providers
from ..tokens import text_tokens
from .answers import completion, sse_body
from .describe import FactsCache, ImageFacts
from .faults import Fault, TokenBucket, fault_name, fault_reply, retry_headers
from .handler import Handler, HTTPServer
from .rules import Reply, check_key, model_not_found, parse_request
from .stats import RequestRecord, ServerStats

__all__ = ["DEFAULT_MODEL", "OfflineServer"]

DEFAULT_MODEL = "visionkit-offline"


@dataclass
class OfflineServer:
    """A local OpenAI-compatible server enforcing a provider profile's rules (inference.net's).

    ``start()``/``stop()`` or ``with OfflineServer(latency=0.2) as server: server.base_url``.
    See ``visionkit.offline``'s docstring for what it enforces and answers.
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
            TokenBucket(self.rate_limit, self.burst or max(1.0, self.rate_limit))
            if self.rate_limit
            else None
        )
        self._httpd: HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._created = int(time.time())
        self._facts = FactsCache(pixels=self.pixels)

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def max_body_bytes(self) -> int | None:
        return self.provider.max_body_bytes

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the offline server is not running; call start() first")
        host, port = self._httpd.server_address[:2]
        if isinstance(host, bytes):
            host = host.decode()
        return f"http://{host}:{port}/v1"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def start(self) -> OfflineServer:
        """Bind an ephemeral port (or ``port``) and serve in a daemon thread; returns self."""
        if self._httpd is not None:
            return self
        httpd = HTTPServer((self.host, self.port), Handler)
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
            headers=retry_headers(wait),
        )

    def _should_fail(self, digest: str, attempt: int) -> bool:
        if self.fail_rate <= 0:
            return False
        h = hashlib.blake2b(f"{self.seed}:{digest}:{attempt}".encode(), digest_size=8).digest()
        return struct.unpack(">Q", h)[0] / 2**64 < self.fail_rate

    def _chat(self, handler: Handler) -> None:
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
        reply: Reply | None = None
        sse = False
        payload = b""
        headers: dict[str, str] = {}
        try:
            try:
                answer = self._answer(handler, rec)
                if answer is not None:
                    sse, payload, headers = answer
                    rec.status = 200
            except Reply as r:
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
        self, handler: Handler, rec: RequestRecord
    ) -> tuple[bool, bytes, dict[str, str]] | None:
        """Check one chat request and build its answer: (is SSE, body, headers).

        Raises Reply for an error answer; returns None to drop the connection unanswered.
        """
        # The body is read (or drained) first so a keep-alive connection stays in sync.
        body = handler._read_body()
        check_key(handler.headers.get("Authorization"), self.api_key)
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
                return None
            if fault.status is not None:
                raise fault_reply(fault)
        limited = self._rate_check()
        if limited is not None:
            raise limited
        parsed = parse_request(body, self.provider, self.max_images, full=self.pixels)
        known = [m["id"] for m in self.model_list()]
        if not self.any_model and parsed.model not in known:
            raise model_not_found(parsed.model, known)
        rec.images = len(parsed.images) + len(parsed.urls)
        rec.image_bytes = sum(part.size for part in parsed.images)
        facts: list[ImageFacts] = []
        image_tokens = 0
        for part in parsed.images:
            try:
                f = self._facts.get(part)
            except Exception as exc:
                raise Reply(
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
            raise Reply(
                self.fail_status,
                "The server had an error while processing your request (simulated by "
                "the offline stand-in's fail_rate).",
                type="server_error",
                code="internal_error" if self.fail_status >= 500 else None,
            )
        response, completion_tokens = completion(parsed, facts, handler._request_id)
        prompt_tokens = image_tokens + text_tokens(*parsed.texts)
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
            return True, sse_body(response, parsed.include_usage), headers
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


def _int_header(value: str | None) -> int:
    return int(value) if value and value.isdigit() else 0
