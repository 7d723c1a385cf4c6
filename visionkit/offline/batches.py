"""The Batches endpoints of the stand-in's Batch API, and the runner that works through a batch.

OpenAI's Batch API, which inference.net copies: ``POST /v1/batches`` (``input_file_id``,
``endpoint`` ``/v1/chat/completions``, ``completion_window`` ``24h``, ``metadata``, and
inference.net's ``webhook_url``, which must be HTTPS: recorded, never called), ``GET
/v1/batches`` (newest first, ``after``/``limit`` cursor pages), ``GET /v1/batches/{id}``,
``POST /v1/batches/{id}/cancel``.

A batch moves ``validating`` -> ``in_progress`` -> ``finalizing`` -> ``completed``, or to
``failed`` when the file does not validate (``errors.data`` lists each bad line: invalid JSON,
a missing or repeated ``custom_id``, a method other than POST, a ``url`` other than the batch's
endpoint, a body that is not an object, a second model, more lines than
``max_requests_per_file``), to ``expired`` when lines were left unrun, or through
``cancelling`` to ``cancelled``. Each line's body is answered by the same ``ChatEngine`` as the
synchronous endpoint, under the same per-request rules (body under 1 MB measured on the body
re-serialised compactly -- how visionkit writes it; 2 images; base64 data URIs only; png, jpeg,
webp, gif), so the same body gets the same answer either way. Answers go to the output file,
error answers (status and OpenAI error body) and lines left unrun (``batch_expired``,
``batch_cancelled``) to the error file, each line matched by ``custom_id``; an expired or
cancelled batch still delivers (and bills) what completed. ``request_counts.failed`` counts
error answers and unrun lines alike.

How batches run is a ``RunnerSettings`` (the server makes it from its ``batch_*`` and
``line_*`` fields when it starts): seconds spent validating, in progress (lines spread evenly
over it), finalizing and cancelling; a fraction of every batch's lines left unrun (the batch
expires); a per-line failure rate (deterministic given the seed, the body and how often it was
run, so a resubmitted line can succeed); and ``inject_batch(...)`` for the next batch only.
The service keeps its batches, its plans and its ``BatchCounters`` under a lock of its own.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ..providers import BatchLimits
from .chat import ChatEngine
from .files import FileRecord, FileStore
from .handler import Request, Response
from .input_file import validate_file
from .rules import Reply
from .stats import BatchCounters

__all__ = ["TERMINAL", "BatchPlan", "BatchRecord", "BatchService", "RunnerSettings"]

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass(frozen=True)
class BatchPlan:
    """One-shot behaviour for the next created batch (``OfflineServer.inject_batch``)."""

    expire_fraction: float | None = None
    fail_lines: frozenset[str] = frozenset()
    fail_status: int = 500
    message: str | None = None


@dataclass
class BatchRecord:
    """One batch as the stand-in keeps it; ``as_dict()`` is the OpenAI ``Batch`` object."""

    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None
    webhook_url: str | None
    created_at: int
    status: str = "validating"
    times: dict[str, int] = field(default_factory=dict)
    total: int = 0
    completed: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    model: str | None = None
    cancel_requested: threading.Event = field(default_factory=threading.Event, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """The batch as the Batch API returns it (OpenAI's ``Batch`` object)."""
        stamps = (
            "in_progress_at",
            "finalizing_at",
            "completed_at",
            "failed_at",
            "expired_at",
            "cancelling_at",
            "cancelled_at",
        )
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.model,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "expires_at": self.created_at + _window_seconds(self.completion_window),
            **{name: self.times.get(name) for name in stamps},
            "request_counts": {
                "total": self.total,
                "completed": self.completed,
                "failed": self.failed,
            },
            "usage": {
                "input_tokens": self.input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": self.output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.input_tokens + self.output_tokens,
            },
            "metadata": self.metadata,
        }


@dataclass(frozen=True)
class RunnerSettings:
    """How the stand-in runs every batch (``OfflineServer``'s ``batch_*`` and ``line_*``)."""

    validate_time: float = 0.0  # seconds a batch spends validating
    run_time: float = 0.0  # seconds in progress; the lines are spread evenly over it
    finalize_time: float = 0.0
    cancel_time: float = 0.0  # seconds from cancelling to cancelled
    expire_fraction: float = 0.0  # the last lines of every batch left unrun: it expires
    line_fail_rate: float = 0.0  # lines answered with line_fail_status
    line_fail_status: int = 500
    errors_in_output: bool = False  # error answers in the output file, not the error file
    seed: int = 0


class _Stopped(Exception):
    """The server is stopping: the runner thread ends."""


class BatchService:
    """Routes ``/v1/batches*`` and runs each batch in its own daemon thread."""

    def __init__(
        self,
        *,
        engine: ChatEngine,
        files: FileStore,
        limits: BatchLimits,
        settings: RunnerSettings,
        stopping: threading.Event,
    ) -> None:
        self.engine = engine
        self.files = files
        self.limits = limits
        self.settings = settings
        self.counters = BatchCounters()
        self._lock = threading.Lock()  # guards the batches, the plans and the counters
        self._stopping = stopping
        self._running = threading.Event()
        self._running.set()
        self._batches: dict[str, BatchRecord] = {}
        self._plans: list[BatchPlan] = []
        self._threads: list[threading.Thread] = []
        self._line_runs: Counter[str] = Counter()

    # -- controls ------------------------------------------------------------------------------

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    def inject(self, plan: BatchPlan) -> None:
        with self._lock:
            self._plans.append(plan)

    def get(self, batch_id: str) -> BatchRecord:
        with self._lock:
            record = self._batches.get(batch_id)
        if record is None:
            raise Reply(404, f"No batch found with id '{batch_id}'.", param="batch_id")
        return record

    def reset_counters(self) -> BatchCounters:
        """Start counting afresh; returns the new counters (``server.reset_stats()``)."""
        with self._lock:
            self.counters = BatchCounters()
            return self.counters

    def join(self, timeout: float = 5.0) -> None:
        for thread in list(self._threads):
            thread.join(timeout)

    # -- HTTP ----------------------------------------------------------------------------------

    def create(self, request: Request) -> Response:
        body = request.read_body(self.engine.max_body_bytes)
        try:
            params = json.loads(body)
        except ValueError:
            raise Reply(400, "We could not parse the JSON body of your request.") from None
        if not isinstance(params, dict):
            raise Reply(400, "The request body must be a JSON object.")
        file_id = params.get("input_file_id")
        if not isinstance(file_id, str) or not file_id:
            raise Reply(400, "input_file_id is required.", param="input_file_id")
        try:
            source = self.files.get(file_id)
        except Reply:
            raise Reply(
                400, f"Input file {file_id!r} was not found.", param="input_file_id"
            ) from None
        if source.purpose != "batch":
            raise Reply(
                400,
                f"File {file_id!r} has purpose {source.purpose!r}; batch input files must be "
                "uploaded with purpose='batch'.",
                param="input_file_id",
            )
        stand_in = "the offline stand-in runs batches for {} only."
        endpoint = _only(params, "endpoint", self.limits.endpoint, stand_in)
        window = _only(
            params, "completion_window", self.limits.completion_window, "only {} is supported."
        )
        metadata = _check_metadata(params.get("metadata"))
        webhook = params.get("webhook_url")
        if webhook is not None and (
            not isinstance(webhook, str) or not webhook.lower().startswith("https://")
        ):
            raise Reply(400, "webhook_url must be an HTTPS URL.", param="webhook_url")
        record = BatchRecord(
            id="batch_" + uuid.uuid4().hex[:24],
            input_file_id=file_id,
            endpoint=endpoint,
            completion_window=window,
            metadata=metadata,
            webhook_url=webhook,
            created_at=int(time.time()),
        )
        with self._lock:
            plan = self._plans.pop(0) if self._plans else BatchPlan()
            self._batches[record.id] = record
            self.counters.batches_created += 1
        thread = threading.Thread(
            target=self._run,
            args=(record, source, plan),
            name=f"visionkit-offline:{record.id}",
            daemon=True,
        )
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()
        return Response.json(200, record.as_dict())

    def retrieve(self, batch_id: str) -> Response:
        record = self.get(batch_id)
        with self._lock:
            return Response.json(200, record.as_dict())

    def list(self, request: Request) -> Response:
        try:
            limit = int(request.query.get("limit", 20))
        except ValueError:
            raise Reply(400, "limit must be an integer.", param="limit") from None
        if not 1 <= limit <= 100:
            raise Reply(400, "limit must be between 1 and 100.", param="limit")
        with self._lock:
            batches = sorted(self._batches.values(), key=lambda b: b.created_at, reverse=True)
            ids = [b.id for b in batches]
            after = request.query.get("after")
            if after is not None:
                if after not in ids:
                    raise Reply(400, f"Unknown cursor after={after!r}.", param="after")
                batches = batches[ids.index(after) + 1 :]
            page = [b.as_dict() for b in batches[:limit]]
        return Response.json(
            200,
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(batches) > limit,
            },
        )

    def cancel(self, batch_id: str) -> Response:
        record = self.get(batch_id)
        with self._lock:
            if record.status in ("validating", "in_progress"):
                record.status = "cancelling"
                record.times["cancelling_at"] = int(time.time())
                record.cancel_requested.set()
            elif record.status != "cancelling":
                raise Reply(
                    409,
                    f"Cannot cancel a batch with status {record.status!r}.",
                    code="batch_not_cancellable",
                )
            return Response.json(200, record.as_dict())

    # -- the runner ----------------------------------------------------------------------------

    def _run(self, record: BatchRecord, source: FileRecord, plan: BatchPlan) -> None:
        try:
            self._sleep(self.settings.validate_time)
            if record.cancel_requested.is_set():
                self._sleep(self.settings.cancel_time)
                self._finish(record, "cancelled", None, None)
                return
            errors, total, model = validate_file(source.path, self.limits)
            if errors:
                with self._lock:
                    record.errors = errors
                    record.status = "failed"
                    record.times["failed_at"] = int(time.time())
                return
            with self._lock:
                record.total, record.model = total, model
                if record.status == "validating":
                    record.status = "in_progress"
                record.times["in_progress_at"] = int(time.time())
            fraction = self.settings.expire_fraction
            if plan.expire_fraction is not None:
                fraction = plan.expire_fraction
            run_limit = total - math.ceil(fraction * total) if fraction > 0 else total
            self._work(record, source, plan, total, run_limit)
        except _Stopped:
            return

    def _work(
        self, record: BatchRecord, source: FileRecord, plan: BatchPlan, total: int, limit: int
    ) -> None:
        out_id, out_path = self.files.new_path()
        err_id, err_path = self.files.new_path()
        start = time.monotonic()
        unrun_reason: str | None = None
        with (
            open(source.path, "rb") as lines,
            open(out_path, "wb") as out,
            open(err_path, "wb") as err,
        ):
            for i, raw in enumerate(lines):
                if unrun_reason is None:
                    if record.cancel_requested.is_set():
                        unrun_reason = "batch_cancelled"
                    elif i >= limit:
                        unrun_reason = "batch_expired"
                    else:
                        self._sleep_until(start + self.settings.run_time * i / max(1, total))
                        if record.cancel_requested.is_set():
                            unrun_reason = "batch_cancelled"
                if unrun_reason is None:
                    self._run_line(record, json.loads(raw), plan, out, err)
                else:
                    self._unrun_line(record, json.loads(raw)["custom_id"], unrun_reason, err)
        outputs = (
            self.files.add(out_id, out_path, f"{record.id}_output.jsonl", "batch_output")
            if out_path.stat().st_size
            else None
        )
        errs = (
            self.files.add(err_id, err_path, f"{record.id}_error.jsonl", "batch_output")
            if err_path.stat().st_size
            else None
        )
        for unused in (o for o, r in ((out_path, outputs), (err_path, errs)) if r is None):
            unused.unlink(missing_ok=True)
        if unrun_reason == "batch_cancelled" or record.cancel_requested.is_set():
            self._sleep(self.settings.cancel_time)
            self._finish(record, "cancelled", outputs, errs)
        elif unrun_reason == "batch_expired":
            self._finish(record, "expired", outputs, errs)
        else:
            with self._lock:
                record.status = "finalizing"
                record.times["finalizing_at"] = int(time.time())
            self._sleep(self.settings.finalize_time)
            self._finish(record, "completed", outputs, errs)

    def _finish(
        self,
        record: BatchRecord,
        status: str,
        outputs: FileRecord | None,
        errors: FileRecord | None,
    ) -> None:
        with self._lock:
            record.output_file_id = outputs.id if outputs else None
            record.error_file_id = errors.id if errors else None
            record.status = status
            record.times[f"{status}_at"] = int(time.time())

    def _run_line(
        self,
        record: BatchRecord,
        line: dict[str, Any],
        plan: BatchPlan,
        out: BinaryIO,
        err: BinaryIO,
    ) -> None:
        custom_id = line["custom_id"]
        data = json.dumps(
            line["body"], ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode()
        digest = hashlib.sha256(data).hexdigest()
        request_id = "req_" + uuid.uuid4().hex[:24]
        with self._lock:
            self._line_runs[digest] += 1
            runs = self._line_runs[digest]
        answer = None
        try:
            if custom_id in plan.fail_lines:
                raise _line_failure(plan.fail_status, plan.message)
            if self._should_fail(digest, runs):
                raise _line_failure(self.settings.line_fail_status, None)
            answer = self.engine.answer(data, request_id)
            status, body = 200, answer.response
        except Reply as reply:
            status, body = reply.status, reply.body
        result = {
            "id": "batch_req_" + uuid.uuid4().hex[:24],
            "custom_id": custom_id,
            "response": {"status_code": status, "request_id": request_id, "body": body},
            "error": None,
        }
        to_output = answer is not None or self.settings.errors_in_output
        (out if to_output else err).write(_jsonl(result))
        with self._lock:
            counters = self.counters
            counters.lines += 1
            if answer is not None:
                counters.lines_answered += 1
                counters.answered_bodies[digest] += 1
                record.completed += 1
                record.input_tokens += answer.prompt_tokens
                record.output_tokens += answer.completion_tokens
            else:
                counters.lines_failed += 1
                record.failed += 1

    def _unrun_line(self, record: BatchRecord, custom_id: str, code: str, err: BinaryIO) -> None:
        message = {
            "batch_expired": "This request could not be executed before the completion window "
            "expired.",
            "batch_cancelled": "This request was not executed because the batch was cancelled.",
        }[code]
        result = {
            "id": "batch_req_" + uuid.uuid4().hex[:24],
            "custom_id": custom_id,
            "response": None,
            "error": {"code": code, "message": message},
        }
        err.write(_jsonl(result))
        with self._lock:
            record.failed += 1

    def _should_fail(self, digest: str, runs: int) -> bool:
        rate = self.settings.line_fail_rate
        if rate <= 0:
            return False
        key = f"{self.settings.seed}:line:{digest}:{runs}".encode()
        h = hashlib.blake2b(key, digest_size=8).digest()
        return struct.unpack(">Q", h)[0] / 2**64 < rate

    def _sleep(self, seconds: float) -> None:
        self._sleep_until(time.monotonic() + seconds)

    def _sleep_until(self, deadline: float) -> None:
        """Wait for ``deadline`` (and while paused); raises _Stopped when the server stops."""
        while True:
            if self._stopping.is_set():
                raise _Stopped
            if not self._running.is_set():
                self._running.wait(0.05)
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._stopping.wait(min(left, 0.05))


def _only(params: dict[str, Any], name: str, allowed: str, why: str) -> str:
    """``params[name]``, which must be ``allowed``; else a 400 saying ``why`` (``{}``: it)."""
    value = params.get(name)
    if value != allowed:
        raise Reply(400, f"Invalid {name} {value!r}: {why.format(repr(allowed))}", param=name)
    return allowed


def _check_metadata(metadata: Any) -> dict[str, str] | None:
    if metadata is None:
        return None
    ok = isinstance(metadata, dict) and len(metadata) <= 16
    if ok:
        for key, value in metadata.items():
            if not (isinstance(key, str) and len(key) <= 64):
                ok = False
            if not (isinstance(value, str) and len(value) <= 512):
                ok = False
    if not ok:
        raise Reply(
            400,
            "metadata must be at most 16 pairs of strings: keys up to 64 characters, values up "
            "to 512.",
            param="metadata",
        )
    return dict(metadata)


def _line_failure(status: int, message: str | None) -> Reply:
    return Reply(
        status,
        message
        or "The server had an error while processing this request (injected by the "
        "offline stand-in).",
        type="server_error" if status >= 500 else "invalid_request_error",
    )


def _jsonl(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def _window_seconds(window: str) -> int:
    units = {"h": 3600, "d": 86400, "m": 60}
    try:
        return int(window[:-1]) * units[window[-1]]
    except (ValueError, KeyError, IndexError):
        return 86400
