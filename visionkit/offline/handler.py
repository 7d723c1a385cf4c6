"""The HTTP layer: a threading server with a deep listen backlog, and the request handler.

The handler knows HTTP only. For each request it builds a ``Request`` (method, path, headers,
and the body *unread*: ``read_body(limit)`` reads or drains it, ``iter_body()`` streams it),
passes it to the application's ``handle(request) -> Response`` and writes the ``Response``
(JSON, bytes or a file streamed from disk, in one send when small). The application
(``OfflineServer``) never touches the handler, and the handler never touches the server's
internals: ``App`` below is the whole contract between them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import socket
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

from ..redact import redact_target
from .rules import Reply, body_too_large

__all__ = ["DRAIN_LIMIT", "App", "HTTPServer", "Handler", "Request", "Response"]

log = logging.getLogger("visionkit.offline")

DRAIN_LIMIT = 256 * 1024 * 1024  # bodies up to this size are drained before a 413; larger: closed
_CHUNK = 65536


@dataclass
class Response:
    """What the application answers: a status and a body (bytes, or a file sent in chunks)."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    close: bool = False  # close the connection after answering
    drop: bool = False  # close the connection without answering (a simulated network fault)
    file: Path | None = None  # stream this file as the body (never read whole into memory)

    @classmethod
    def json(cls, status: int, obj: Any, *, headers: dict[str, str] | None = None) -> Response:
        return cls(status, json.dumps(obj, ensure_ascii=False).encode(), headers=headers or {})

    @classmethod
    def error(cls, reply: Reply, *, close: bool = False) -> Response:
        return cls(
            reply.status, json.dumps(reply.body).encode(), headers=dict(reply.headers), close=close
        )


class App(Protocol):
    """What the HTTP layer needs from the application it serves."""

    def handle(self, request: Request) -> Response: ...

    def connection_opened(self, conn: socket.socket) -> None: ...

    def connection_closed(self, conn: socket.socket) -> None: ...


class Request:
    """One HTTP request as the application sees it; the body is read only when asked for.

    ``read_body(limit)`` returns the whole body, or raises a ``Reply`` (413 when it is ``limit``
    bytes or more, after draining what the client sent so a keep-alive connection stays in
    step; 411 without a length; 400 for a malformed one). A client that sent
    ``Expect: 100-continue`` gets the 413 before it sends a byte of the body. ``iter_body()``
    yields the body in chunks, for uploads too big to hold. ``discard_body()`` drains it.
    """

    def __init__(self, handler: Handler) -> None:
        self._h = handler
        parts = urlsplit(handler.path)
        self.method: str = handler.command
        self.path: str = parts.path.rstrip("/")
        self.query: dict[str, str] = dict(parse_qsl(parts.query))
        self.headers = handler.headers
        self.request_id = "req_" + uuid.uuid4().hex[:24]
        self._consumed = False
        self._continue_sent = False

    @property
    def retry_count(self) -> int:
        """The openai SDK's ``x-stainless-retry-count`` (0 on a first attempt)."""
        value = self.headers.get("x-stainless-retry-count")
        return int(value) if value and value.isdigit() else 0

    @property
    def content_length(self) -> int | None:
        """The declared body length; -1 when malformed; None when absent (or chunked)."""
        if self.chunked:
            return None
        value = self.headers.get("Content-Length")
        if value is None:
            return None
        try:
            n = int(value)
        except ValueError:
            return -1
        return n if n >= 0 else -1

    @property
    def chunked(self) -> bool:
        return "chunked" in self.headers.get("Transfer-Encoding", "").lower()

    @property
    def body_pending(self) -> bool:
        """True until the body has been read, streamed or discarded."""
        return not self._consumed

    def refuse_body(self, reply: Reply) -> Reply:
        """Prepare to answer ``reply`` without using the body; returns ``reply`` to raise."""
        self.discard_body()
        return reply

    def read_body(self, limit: int | None) -> bytes:
        if self._consumed:
            raise RuntimeError("the request body was already read")
        if self.chunked:
            return self._read_chunked(limit)
        length = self.content_length
        if length is None:
            self._consumed = True
            raise Reply(411, "A Content-Length header is required.", code="length_required")
        if length < 0:
            self._consumed = True
            self._h.close_connection = True
            raise Reply(400, "Invalid Content-Length header.")
        if limit is not None and length >= limit:
            raise self.refuse_body(body_too_large(length, limit))
        self._send_continue()
        self._consumed = True
        return self._h.rfile.read(length)

    def iter_body(self) -> Iterator[bytes]:
        """The body in chunks of up to 64 KiB (Content-Length or chunked)."""
        if self._consumed:
            raise RuntimeError("the request body was already read")
        self._send_continue()
        self._consumed = True
        if self.chunked:
            yield from self._chunks(None)
            return
        length = self.content_length
        if length is None or length < 0:
            self._h.close_connection = True
            raise Reply(411, "A valid Content-Length header is required.", code="length_required")
        remaining = length
        while remaining > 0:
            chunk = self._h.rfile.read(min(_CHUNK, remaining))
            if not chunk:
                self._h.close_connection = True
                raise Reply(400, "The request body ended early.")
            remaining -= len(chunk)
            yield chunk

    def discard_body(self) -> None:
        """Drop the body unread: drain it so the connection can serve the next request, or,
        when the client still waits for ``100 Continue`` or the body is huge or its length
        malformed, close the connection after the answer instead. (A request with neither
        Content-Length nor chunked encoding has no body.)"""
        if self._consumed:
            return
        self._consumed = True
        length = self.content_length
        if length is None and not self.chunked:
            return
        if self._expects_continue() or length == -1:
            self._h.close_connection = True
        elif self.chunked:
            try:
                for _ in self._chunks(None):
                    pass
            except Reply:
                self._h.close_connection = True
        elif length is not None and length <= DRAIN_LIMIT:
            self._drain(length)
        else:
            self._h.close_connection = True

    # -- internals ---------------------------------------------------------------------------

    def _expects_continue(self) -> bool:
        expect = self.headers.get("Expect", "").lower() == "100-continue"
        return expect and not self._continue_sent

    def _send_continue(self) -> None:
        if self._expects_continue():
            self._continue_sent = True
            self._h.send_response_only(100)
            self._h.end_headers()

    def _drain(self, length: int) -> None:
        self._send_continue()
        remaining = length
        while remaining > 0:
            chunk = self._h.rfile.read(min(_CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)

    def _chunks(self, limit: int | None) -> Iterator[bytes]:
        """The pieces of a ``Transfer-Encoding: chunked`` body."""
        self._send_continue()
        rfile = self._h.rfile
        while True:
            line = rfile.readline(1024)
            try:
                n = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                n = -1
            if n < 0:
                self._h.close_connection = True
                raise Reply(400, "Malformed chunked body.")
            if n == 0:
                while rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            while n > 0:
                piece = rfile.read(min(n, _CHUNK))
                if not piece:
                    self._h.close_connection = True
                    raise Reply(400, "Truncated chunked body.")
                n -= len(piece)
                yield piece
            rfile.readline(8)

    def _read_chunked(self, limit: int | None) -> bytes:
        """A chunked body, read in pieces; past ``limit`` it is only drained (up to
        ``DRAIN_LIMIT``) and a 413 follows."""
        self._consumed = True
        parts: list[bytes] = []
        size = 0
        for piece in self._chunks(limit):
            size += len(piece)
            if limit is None or size < limit:
                parts.append(piece)
            elif size > DRAIN_LIMIT:
                self._h.close_connection = True
                raise body_too_large(size, limit)
            else:
                parts.clear()
        if limit is not None and size >= limit:
            raise body_too_large(size, limit)
        return b"".join(parts)


class HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the default of 5 resets connections at concurrency 32
    allow_reuse_address = True
    app: App

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-request is normal here (timeouts, drops); stay quiet.
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, OSError)):
            return
        log.exception("offline server: unexpected error")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "visionkit-offline"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = 120  # idle keep-alive connections give their thread back after this
    server: HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.app.connection_opened(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.app.connection_closed(self.connection)

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        # The request line's query may hold a key (?api-key=...): logged masked.
        words = (format % args).split(" ")
        log.debug("%s %s", self.address_string(), " ".join(map(redact_target, words)))

    def handle_expect_100(self) -> bool:
        # Deferred: Request sends "100 Continue" only when the application reads the body, so a
        # request refused first (413, 429, 401) is refused before the client sends a byte.
        return True

    def _dispatch(self) -> None:
        request = Request(self)
        response = self.server.app.handle(request)
        if response.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        request.discard_body()  # a body nobody read: drain it to keep the connection usable
        self._write(response, request.request_id)

    do_GET = do_POST = do_DELETE = _dispatch

    def do_PUT(self) -> None:
        self.close_connection = True
        reply = Reply(405, f"Method {self.command} not allowed.")
        self._write(Response.error(reply, close=True), "req_" + uuid.uuid4().hex[:24])

    do_PATCH = do_PUT

    def _write(self, response: Response, request_id: str) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        length = response.file.stat().st_size if response.file else len(response.body)
        self.send_header("Content-Length", str(length))
        headers = {"x-request-id": request_id, **response.headers}
        for key, value in headers.items():
            self.send_header(key, value)
        if response.close or self.close_connection:
            self.send_header("Connection", "close")
            self.close_connection = True
        self._headers_buffer.append(b"\r\n")  # type: ignore[attr-defined]
        if response.file is None:
            # One send for headers and body: two small sends meet Nagle + delayed ACK (~40 ms).
            self._headers_buffer.append(response.body)  # type: ignore[attr-defined]
            self.flush_headers()
            return
        self.flush_headers()
        with open(response.file, "rb") as f:
            shutil.copyfileobj(f, self.wfile, _CHUNK)
