"""The HTTP layer: a threading server with a deep listen backlog, and the request handler
(body reading and draining, 413 before ``100-continue``, routes, one-send responses)."""

from __future__ import annotations

import json
import logging
import sys
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from .describe import PREFIX
from .rules import Reply, check_key, model_not_found

if TYPE_CHECKING:
    from .server import OfflineServer

__all__ = ["DRAIN_LIMIT", "HTTPServer", "Handler"]

log = logging.getLogger("visionkit.offline")

DRAIN_LIMIT = 256 * 1024 * 1024  # bodies up to this size are drained before a 413; larger: closed


class HTTPServer(ThreadingHTTPServer):
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


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "visionkit-offline"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = 120  # idle keep-alive connections give their thread back after this
    server: HTTPServer

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

    def _send_error_reply(self, reply: Reply, *, close: bool = False) -> None:
        headers = {"x-request-id": self._request_id, **reply.headers}
        self._send_json(reply.status, reply.body, headers=headers, close=close)

    def _too_large(self, length: int) -> Reply:
        limit = self.server.app.max_body_bytes
        return Reply(
            413,
            f"Request body too large: {length:,} bytes; the limit is {limit:,} bytes "
            "(the body must be smaller than that).",
            code="request_too_large",
        )

    def _read_body(self) -> bytes:
        """The request body, or a Reply (413/411/400) after draining what the client sent."""
        limit = self.server.app.max_body_bytes
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(limit)
        length = self._content_length()
        if length is None:
            raise Reply(411, "A Content-Length header is required.", code="length_required")
        if length < 0:
            self.close_connection = True
            raise Reply(400, "Invalid Content-Length header.")
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
                raise Reply(400, "Malformed chunked body.")
            if n == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                break
            while n > 0:
                piece = self.rfile.read(min(n, 65536))
                if not piece:
                    self.close_connection = True
                    raise Reply(400, "Truncated chunked body.")
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
            check_key(self.headers.get("Authorization"), app.api_key)
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
                raise model_not_found(name, [m["id"] for m in app.model_list()])
            raise Reply(404, f"Unknown path {self.path!r}.", code="unknown_url")
        except Reply as reply:
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
                reply = Reply(404, f"Unknown path {self.path!r}.", code="unknown_url")
            except Reply as r:
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
        self._send_error_reply(Reply(405, f"Method {self.command} not allowed."), close=True)


def _request_id() -> str:
    return "req_" + uuid.uuid4().hex[:24]
