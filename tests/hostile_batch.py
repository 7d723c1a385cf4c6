"""A small Batch API (OpenAI's shape) on 127.0.0.1 that misbehaves on purpose, one fault per mode,
for the batch-job trust tests; it counts what it was sent and what it billed.

``HostileBatch(mode=...)`` serves ``/v1/files`` (upload, list, retrieve, content) and
``/v1/batches`` (create, retrieve, list, cancel), and ``/v1/models``. A batch runs the moment
it is created: every line gets an answer (``answer for <custom_id>``) and is billed then, unless
the batch expires (``expire_fraction``: that fraction of its lines, rounded down, the last
ones, is left unrun and unbilled), a line fails (``fail_every``: every n-th line of a batch is
answered 500, unbilled) or the file is over ``max_lines`` (the batch fails validation, nothing
billed). ``polls`` retrieves see it ``in_progress`` before its final status.

Modes (``fault``, applied ``times`` times unless said otherwise):

- ``create_500``: the batch is created (and billed), then the answer is a 500.
- ``create_drop``: the batch is created (and billed), then the connection is dropped unanswered.
- ``upload_drop``: the file is stored, then the connection is dropped unanswered.
- ``upload_500``: the file is stored, then the answer is a 500.
- ``cancel_500``: the batch is cancelled, then the answer is a 500.
- ``poll_hang``: every batch retrieve waits ``hang`` seconds before it answers.
- ``content_hang``: every file download waits ``hang`` seconds before it answers.
- ``content_cut``: a file download sends the first half of the file, then drops the connection.
- ``status_exploded``: retrieve reports the status ``"exploded"`` (every time).
- ``bad_file_id``: retrieve reports a finished batch whose ``output_file_id`` is
  ``"../../v1/files"`` (every time).
- ``foreign_ids``: the output file also holds a line for ``foreign_id`` (a key never
  submitted), one for an unknown id, and a second, different answer for the first line's id.
- ``bad_types``: the first lines of each output file have ``"status_code": "abc"``,
  ``"usage": "lots"``, ``"content": 5`` and ``"custom_id": 7``; the rest are sound.

Counters: ``calls`` (by endpoint), ``billed`` (custom_id -> how many times billed),
``uploads`` (files stored), ``batches`` (created, by id).
"""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

MODEL = "hostile-model"


@dataclass
class Batch:
    id: str
    input_file_id: str
    metadata: dict[str, str] | None
    created_at: int
    status: str = "in_progress"
    final: str = "completed"
    polls_left: int = 0
    total: int = 0
    completed: int = 0
    failed: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[dict[str, Any]] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": self.status,
            "output_file_id": self.output_file_id if self.status == self.final else None,
            "error_file_id": self.error_file_id if self.status == self.final else None,
            "created_at": self.created_at,
            "request_counts": {
                "total": self.total,
                "completed": self.completed,
                "failed": self.failed,
            },
            "metadata": self.metadata,
        }


@dataclass
class HostileBatch:
    fault: str | None = None
    times: int = 1  # how many times a one-shot fault fires
    hang: float = 30.0
    polls: int = 0  # retrieves that see a batch in_progress before its final status
    expire_fraction: float = 0.0
    fail_every: int = 0
    max_lines: int | None = None
    foreign_id: str = "f" * 64
    # counters
    calls: Counter[str] = field(default_factory=Counter)
    billed: Counter[str] = field(default_factory=Counter)
    uploads: int = 0
    batches: dict[str, Batch] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> object + "data"
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def billed_lines(self) -> int:
        return sum(self.billed.values())

    @property
    def billed_twice(self) -> dict[str, int]:
        return {k: n for k, n in self.billed.items() if n > 1}

    def fire(self, fault: str) -> bool:
        """Whether ``fault`` is this server's and still has a shot left (then one is used)."""
        with self._lock:
            if self.fault != fault or self.times <= 0:
                return False
            self.times -= 1
            return True

    # -- files ---------------------------------------------------------------------------------

    def add_file(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        file_id = "file-" + uuid.uuid4().hex[:24]
        obj = {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }
        with self._lock:
            self.files[file_id] = {**obj, "data": data}
        return obj

    def file_object(self, file_id: str) -> dict[str, Any] | None:
        found = self.files.get(file_id)
        return None if found is None else {k: v for k, v in found.items() if k != "data"}

    # -- batches -------------------------------------------------------------------------------

    def run(self, batch: Batch, data: bytes) -> None:
        """Run every line now: answers, failures, unrun lines, billing."""
        lines = [json.loads(raw) for raw in data.splitlines() if raw.strip()]
        batch.total = len(lines)
        if self.max_lines is not None and len(lines) > self.max_lines:
            batch.final = "failed"
            batch.errors = [
                {
                    "code": "too_many_requests",
                    "message": f"The input file has {len(lines):,} requests; a batch may "
                    f"have at most {self.max_lines:,}.",
                    "param": None,
                    "line": None,
                }
            ]
            return
        run = len(lines) - math.floor(self.expire_fraction * len(lines))
        out: list[dict[str, Any]] = []
        err: list[dict[str, Any]] = []
        for n, line in enumerate(lines):
            cid = line["custom_id"]
            if n >= run:
                err.append(_unrun(cid))
                batch.failed += 1
            elif self.fail_every and (n + 1) % self.fail_every == 0:
                err.append(_failed(cid))
                batch.failed += 1
            else:
                out.append(_answer(cid, f"answer for {cid}"))
                batch.completed += 1
                with self._lock:
                    self.billed[cid] += 1
        if run < len(lines):
            batch.final = "expired"
        if self.fault == "foreign_ids" and out:
            first = out[0]["custom_id"]
            out.append(_answer(self.foreign_id, "INJECTED"))
            out.append(_answer("not-a-key-of-this-job", "UNKNOWN"))
            out.append(_answer(first, "DUPLICATE"))
        if self.fault == "bad_types":
            _break_types(out)
        if out:
            batch.output_file_id = self.add_file(
                _jsonl(out), f"{batch.id}_output.jsonl", "batch_output"
            )["id"]
        if err:
            batch.error_file_id = self.add_file(
                _jsonl(err), f"{batch.id}_error.jsonl", "batch_output"
            )["id"]

    def retrieve(self, batch: Batch) -> dict[str, Any]:
        with self._lock:
            if batch.status in ("in_progress", "cancelling"):
                if batch.status == "cancelling":
                    batch.status = batch.final = "cancelled"
                elif batch.polls_left > 0:
                    batch.polls_left -= 1
                else:
                    batch.status = batch.final
            shown = batch.as_dict()
        if self.fault == "status_exploded":
            shown["status"] = "exploded"
        if self.fault == "bad_file_id":
            shown["status"], shown["output_file_id"] = "completed", "../../v1/files"
        return shown


def _answer(custom_id: Any, content: Any) -> dict[str, Any]:
    return {
        "id": "batch_req_" + uuid.uuid4().hex[:12],
        "custom_id": custom_id,
        "response": {
            "status_code": 200,
            "request_id": "req_" + uuid.uuid4().hex[:12],
            "body": {
                "id": "chatcmpl-" + uuid.uuid4().hex[:12],
                "object": "chat.completion",
                "model": MODEL,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 100, "completion_tokens": 7, "total_tokens": 107},
            },
        },
        "error": None,
    }


def _failed(custom_id: str) -> dict[str, Any]:
    body = {"error": {"message": "The server had an error.", "type": "server_error"}}
    return {
        "id": "batch_req_" + uuid.uuid4().hex[:12],
        "custom_id": custom_id,
        "response": {"status_code": 500, "request_id": "req_x", "body": body},
        "error": None,
    }


def _unrun(custom_id: str) -> dict[str, Any]:
    return {
        "id": "batch_req_" + uuid.uuid4().hex[:12],
        "custom_id": custom_id,
        "response": None,
        "error": {"code": "batch_expired", "message": "This request could not be executed."},
    }


def _break_types(out: list[dict[str, Any]]) -> None:
    """The first lines' fields of the wrong type (see the module docstring)."""
    breaks = [
        lambda line: line["response"].__setitem__("status_code", "abc"),
        lambda line: line["response"]["body"].__setitem__("usage", "lots"),
        lambda line: line["response"]["body"]["choices"][0]["message"].__setitem__("content", 5),
        lambda line: line.__setitem__("custom_id", 7),
    ]
    for line, spoil in zip(out, breaks, strict=False):
        spoil(line)


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def _multipart(body: bytes, content_type: str) -> tuple[dict[str, str], bytes, str]:
    """(fields, file bytes, file name) of a small multipart/form-data body."""
    boundary = content_type.split("boundary=", 1)[1].strip('"').encode()
    fields: dict[str, str] = {}
    data, filename = b"", "upload.jsonl"
    for part in body.split(b"--" + boundary)[1:]:
        if part.startswith(b"--"):
            break
        head, _, value = part.lstrip(b"\r\n").partition(b"\r\n\r\n")
        value = value[:-2] if value.endswith(b"\r\n") else value
        text = head.decode("latin-1")
        name = text.split('name="', 1)[1].split('"', 1)[0]
        if 'filename="' in text:
            filename = text.split('filename="', 1)[1].split('"', 1)[0]
            data = value
        else:
            fields[name] = value.decode()
    return fields, data, filename


class _Drop(Exception):
    """Close the connection without an answer."""


def _handler(state: HostileBatch) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(self, status: int, obj: Any, raw: bytes | None = None) -> None:
            data = raw if raw is not None else json.dumps(obj).encode()
            self.send_response(status)
            ctype = "application/octet-stream" if raw is not None else "application/json"
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str) -> None:
            self._send(status, {"error": {"message": message, "type": "server_error"}})

        def _dispatch(self, method: str) -> None:
            url = urlsplit(self.path)
            parts = url.path.strip("/").split("/")[1:]  # without "v1"
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            body = self._body() if method == "POST" else b""
            try:
                self._route(method, parts, query, body)
            except _Drop:
                self.close_connection = True
                self.connection.shutdown(2)

        def _route(self, method: str, parts: list[str], query: dict[str, str], body: bytes) -> None:
            s = state
            if parts == ["models"]:
                s.calls["models.list"] += 1
                return self._send(200, {"object": "list", "data": [{"id": MODEL}]})
            if parts[:1] == ["files"]:
                return self._files(method, parts[1:], query, body)
            if parts[:1] == ["batches"]:
                return self._batches(method, parts[1:], query, body)
            self._error(404, f"unknown path {self.path}")

        def _files(self, method: str, rest: list[str], query: dict[str, str], body: bytes) -> None:
            s = state
            if method == "POST" and not rest:
                s.calls["files.create"] += 1
                fields, data, filename = _multipart(body, self.headers["Content-Type"])
                obj = s.add_file(data, filename, fields.get("purpose", ""))
                with s._lock:
                    s.uploads += 1
                if s.fire("upload_drop"):
                    raise _Drop
                if s.fire("upload_500"):
                    return self._error(500, "upload went wrong (after storing the file)")
                return self._send(200, obj)
            if method == "GET" and not rest:
                s.calls["files.list"] += 1
                found = [s.file_object(i) for i in list(s.files)]
                purpose = query.get("purpose")
                data = [f for f in found if f and (purpose is None or f["purpose"] == purpose)]
                return self._send(200, {"object": "list", "data": data[::-1], "has_more": False})
            obj = s.file_object(rest[0]) if rest else None
            if obj is None:
                return self._error(404, "no such file")
            if method == "GET" and len(rest) == 1:
                s.calls["files.retrieve"] += 1
                return self._send(200, obj)
            if method == "GET" and rest[1:] == ["content"]:
                s.calls["files.content"] += 1
                if s.fault == "content_hang":
                    s._stop.wait(s.hang)
                data = s.files[rest[0]]["data"]
                if s.fire("content_cut"):
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    time.sleep(0.3)  # the client has read what came, then the line drops
                    raise _Drop
                return self._send(200, None, raw=data)
            self._error(404, "unknown files path")

        def _batches(
            self, method: str, rest: list[str], query: dict[str, str], body: bytes
        ) -> None:
            s = state
            if method == "POST" and not rest:
                s.calls["batches.create"] += 1
                params = json.loads(body)
                source = s.files.get(params.get("input_file_id", ""))
                if source is None:
                    return self._error(400, "input file not found")
                batch = Batch(
                    id="batch_" + uuid.uuid4().hex[:24],
                    input_file_id=params["input_file_id"],
                    metadata=params.get("metadata"),
                    created_at=int(time.time()),
                    polls_left=s.polls,
                )
                s.run(batch, source["data"])
                with s._lock:
                    s.batches[batch.id] = batch
                if s.fire("create_500"):
                    return self._error(500, "create went wrong (after creating the batch)")
                if s.fire("create_drop"):
                    raise _Drop
                return self._send(200, batch.as_dict())
            if method == "GET" and not rest:
                s.calls["batches.list"] += 1
                shown = [b.as_dict() for b in sorted(s.batches.values(), key=lambda b: b.id)]
                return self._send(200, {"object": "list", "data": shown, "has_more": False})
            batch = s.batches.get(rest[0]) if rest else None
            if batch is None:
                return self._error(404, "no such batch")
            if method == "GET" and len(rest) == 1:
                s.calls["batches.retrieve"] += 1
                if s.fault == "poll_hang":
                    s._stop.wait(s.hang)
                return self._send(200, s.retrieve(batch))
            if method == "POST" and rest[1:] == ["cancel"]:
                s.calls["batches.cancel"] += 1
                with s._lock:
                    if batch.status not in ("in_progress", "cancelling"):
                        return self._error(409, f"cannot cancel a {batch.status} batch")
                    batch.status = "cancelling"
                if s.fire("cancel_500"):
                    return self._error(500, "cancel went wrong (after cancelling)")
                return self._send(200, batch.as_dict())
            self._error(404, "unknown batches path")

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

    return Handler


class _Quiet(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up on a hung answer: expected here


@contextmanager
def hostile_batch(**knobs: Any) -> Iterator[HostileBatch]:
    """A running ``HostileBatch(**knobs)``; stopped (and any hang released) on exit."""
    state = HostileBatch(**knobs)
    httpd = _Quiet(("127.0.0.1", 0), _handler(state))
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield state
    finally:
        state._stop.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
