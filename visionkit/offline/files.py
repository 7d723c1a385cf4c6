"""The Files endpoints of the stand-in's Batch API: uploads streamed to disk, paced, and served.

``POST /v1/files`` takes the openai SDK's ``multipart/form-data`` upload (``purpose`` and
``file``), parsed as it arrives by python-multipart's streaming parser and written straight to
a file in the server's temporary directory: a 200 MB upload never sits in memory. Uploads are
paced like inference.net's ("Batch file upload: 1 per minute"): one inside ``upload_interval``
seconds of the last is refused with 429, ``Retry-After`` and ``retry-after-ms`` saying when the
next is welcome; it is refused before its body is read when the client sent
``Expect: 100-continue``, and drained otherwise. A file over ``max_file_bytes`` is a 413.
``GET /v1/files/{id}/content`` streams the file back from disk in 64 KiB pieces.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from python_multipart.multipart import MultipartParser, parse_options_header

if TYPE_CHECKING:  # a TypedDict python-multipart defines for type checkers only
    from python_multipart.multipart import MultipartCallbacks

from .faults import retry_headers
from .handler import Request
from .rules import Reply

__all__ = ["FileRecord", "FileStore", "UploadPacer"]

PURPOSES = ("batch", "batch_output")
_MULTIPART_SLACK = 64 * 1024  # room for the multipart envelope around the file's bytes


@dataclass
class FileRecord:
    """One stored file: its OpenAI ``File`` object fields and where its bytes are."""

    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    path: Path

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": None,
        }


class UploadPacer:
    """At most one accepted upload per ``interval`` seconds; ``try_take`` says how long to wait."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._next = 0.0
        self._lock = threading.Lock()

    def try_take(self) -> float:
        """0.0 and the slot taken, or the seconds until the next upload is welcome."""
        with self._lock:
            now = time.monotonic()
            if now >= self._next:
                self._next = now + self.interval
                return 0.0
            return self._next - now

    def give_back(self) -> None:
        """An upload that took the slot failed (bad request, too large): free the slot."""
        with self._lock:
            self._next = 0.0


class FileStore:
    """Files kept on disk under ``root``, by id; thread-safe."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._files: dict[str, FileRecord] = {}
        self._lock = threading.Lock()

    def get(self, file_id: str) -> FileRecord:
        with self._lock:
            record = self._files.get(file_id)
        if record is None:
            raise Reply(404, f"No such File object: {file_id}", param="file_id", code=None)
        return record

    def list(self, purpose: str | None = None) -> list[FileRecord]:
        with self._lock:
            files = list(self._files.values())
        return [f for f in files if purpose is None or f.purpose == purpose]

    def page(self, query: dict[str, str]) -> dict[str, Any]:
        """``GET /v1/files``: newest first, ``purpose``, ``limit`` and an ``after`` cursor."""
        try:
            limit = int(query.get("limit", 10_000))
        except ValueError:
            raise Reply(400, "limit must be an integer.", param="limit") from None
        files = sorted(self.list(query.get("purpose")), key=lambda f: f.created_at, reverse=True)
        after = query.get("after")
        if after is not None:
            ids = [f.id for f in files]
            if after not in ids:
                raise Reply(400, f"Unknown cursor after={after!r}.", param="after")
            files = files[ids.index(after) + 1 :]
        data = [f.as_dict() for f in files[:limit]]
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": len(files) > limit,
        }

    def new_path(self) -> tuple[str, Path]:
        file_id = "file-" + uuid.uuid4().hex[:24]
        return file_id, self.root / file_id

    def add(self, file_id: str, path: Path, filename: str, purpose: str) -> FileRecord:
        record = FileRecord(
            id=file_id,
            filename=filename,
            purpose=purpose,
            bytes=path.stat().st_size,
            created_at=int(time.time()),
            path=path,
        )
        with self._lock:
            self._files[file_id] = record
        return record

    def delete(self, file_id: str) -> None:
        record = self.get(file_id)
        with self._lock:
            self._files.pop(file_id, None)
        record.path.unlink(missing_ok=True)

    # -- HTTP ----------------------------------------------------------------------------------

    def upload(self, request: Request, pacer: UploadPacer, max_bytes: int | None) -> FileRecord:
        """Parse a multipart upload into a new file; raises Reply (429, 413, 400)."""
        ctype, params = parse_options_header(request.headers.get("Content-Type", ""))
        boundary = params.get(b"boundary")
        if ctype != b"multipart/form-data" or not boundary:
            raise request.refuse_body(
                Reply(400, "Uploads must be multipart/form-data with 'purpose' and 'file'.")
            )
        length = request.content_length
        if max_bytes is not None and length is not None and length > max_bytes + _MULTIPART_SLACK:
            raise request.refuse_body(_too_large(length, max_bytes))
        wait = pacer.try_take()
        if wait > 0:
            raise request.refuse_body(
                Reply(
                    429,
                    f"Rate limit reached for batch file uploads: 1 per {pacer.interval:g} s. "
                    f"Retry after {wait:.1f} s.",
                    type="requests",
                    code="rate_limit_exceeded",
                    headers=retry_headers(wait),
                )
            )
        try:
            return self._receive(request, boundary, max_bytes)
        except BaseException:
            pacer.give_back()
            raise

    def _receive(self, request: Request, boundary: bytes, max_bytes: int | None) -> FileRecord:
        file_id, path = self.new_path()
        part = _Parts(path, max_bytes)
        parser = MultipartParser(boundary, part.callbacks())
        try:
            for chunk in request.iter_body():
                parser.write(chunk)
            parser.finalize()
        except Reply:
            part.discard()
            raise
        except Exception as exc:
            part.discard()
            raise Reply(400, f"Malformed multipart body ({type(exc).__name__}).") from None
        finally:
            part.close()
        if part.too_large:
            part.discard()
            raise _too_large(part.size, max_bytes or 0)
        purpose = part.fields.get("purpose", "")
        if purpose != "batch":
            part.discard()
            raise Reply(
                400,
                f"Invalid purpose {purpose!r}: the offline stand-in stores only purpose='batch' "
                "files.",
                param="purpose",
            )
        if not part.has_file:
            raise Reply(400, "The upload has no 'file' part.", param="file")
        return self.add(file_id, path, part.filename or "upload.jsonl", purpose)


def _too_large(size: int, limit: int) -> Reply:
    return Reply(
        413,
        f"File too large: {size:,} bytes; batch input files may be at most {limit:,} bytes.",
        param="file",
        code="file_too_large",
    )


class _Parts:
    """python-multipart callbacks: form fields to ``fields``, the file part to disk."""

    def __init__(self, path: Path, max_bytes: int | None) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.has_file = False
        self.size = 0
        self.too_large = False
        self._header = b""
        self._value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name = ""
        self._text = bytearray()
        self._out: Any = None

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_done,
            "on_part_data": self._data,
            "on_part_end": self._end,
        }

    def _begin(self) -> None:
        self._headers = {}
        self._name = ""
        self._text = bytearray()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header.lower()] = self._value
        self._header = self._value = b""

    def _headers_done(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = params.get(b"name", b"").decode("utf-8", "replace")
        if self._name == "file":
            self.has_file = True
            name = params.get(b"filename")
            self.filename = name.decode("utf-8", "replace") if name else None
            self._out = open(self.path, "wb")  # noqa: SIM115 (closed in _end/close)

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._name != "file":
            if len(self._text) < 4096:
                self._text += data[start:end]
            return
        self.size += end - start
        if self.max_bytes is not None and self.size > self.max_bytes:
            self.too_large = True  # keep reading (the client is still sending), stop writing
            return
        self._out.write(data[start:end])

    def _end(self) -> None:
        if self._name == "file":
            self._out.close()
        elif self._name:
            self.fields[self._name] = self._text.decode("utf-8", "replace")

    def close(self) -> None:
        if self._out is not None and not self._out.closed:
            self._out.close()

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
