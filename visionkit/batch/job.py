"""``BatchJob``: follow a submitted job, collect its results into the answer cache, read them.

``refresh()`` asks the provider about every batch not collected yet; a batch that has reached a
final status (completed, expired, cancelled, failed) is collected at once: its output and error
files are downloaded line by line (never whole in memory), each answer is committed to the
answer cache under its ``custom_id`` (the row's cache key: a later ``ask`` on the same rows
costs nothing), and each failed line's message is kept in the manifest as that row's error.
``wait()`` polls with a growing interval (to ``max_poll`` seconds) and a ``tqdm.auto`` bar of
lines completed and failed across all the job's batches; an interrupt (Ctrl-C, Jupyter's stop
button) ends the wait, never the batches. ``result()`` is ``ask``'s table for the job's rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..query.cache import Cache, CachedAnswer
from ..query.progress import in_ipython
from ..query.replay import Recording
from .manifest import Manifest, manifest_path, stored_label
from .replayed import ReplayedJob, replayed_job
from .result import PENDING, ResultRow, batch_money, result_frame, tally

if TYPE_CHECKING:
    from openai import OpenAI as SyncOpenAI

__all__ = ["TERMINAL", "BatchJob", "batch_jobs", "interrupted_in_notebook"]

logger = logging.getLogger("visionkit")

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
_RECORD_CHUNK = 500  # answers looked up and recorded together while a batch is collected
_CLASSES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    409: "ConflictError",
    422: "UnprocessableEntityError",
    429: "RateLimitError",
}


def line_error(line: dict[str, Any]) -> str:
    """A failed output line's row error, worded as ``ask`` words the same failure."""
    response = line.get("response") or {}
    error = line.get("error") or {}
    if error:
        return f"{error.get('code') or 'error'}: {error.get('message') or ''}".strip()
    status = int(response.get("status_code") or 0)
    body = response.get("body") or {}
    inner = body.get("error", body) if isinstance(body, dict) else {}
    message = inner.get("message") if isinstance(inner, dict) else str(inner)
    name = _CLASSES.get(status, "InternalServerError" if status >= 500 else "APIStatusError")
    return f"{name} ({status}): {message}"


def interrupted_in_notebook(message: str) -> bool:
    """Ctrl-C (Jupyter's stop button) stopped a wait or an upload, never the job: in Jupyter,
    warn with ``message`` and return True (the caller returns the job); elsewhere False (the
    caller re-raises ``KeyboardInterrupt``)."""
    if in_ipython():
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        return True
    return False


def _identity(job: dict[str, Any]) -> tuple[str, str | None]:
    """The (provider, base URL) a job's cache keys were made under (see ``cache_identity``)."""
    if job.get("identity"):
        name, url = json.loads(job["identity"])
        return str(name), url
    name = str(job.get("provider"))  # a manifest from before identities were kept
    base_url = job.get("base_url")
    return (name, None) if name == "offline" else (name, base_url and base_url.rstrip("/"))


def _iter_lines(sdk: Any, file_id: str) -> Iterator[dict[str, Any]]:
    """A result file's lines; one that is not a JSON object is skipped with a warning (its row,
    if any, stays unanswered and is sent again by the next ``submit``), never the whole file."""
    with sdk.files.with_streaming_response.content(file_id) as response:
        for n, text in enumerate(response.iter_lines(), 1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except ValueError as exc:
                line = exc
            if isinstance(line, dict) and isinstance(line.get("custom_id"), str):
                yield line
            else:
                warnings.warn(
                    f"batch result file {file_id}, line {n}: not a result line with a "
                    f"custom_id ({text[:80]!r}); skipped",
                    RuntimeWarning,
                    stacklevel=4,
                )


def _answer(line: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | str:
    """An output line's ``(body, message)`` when it holds an answer (a 2xx response with a
    choice), else the row's error: an error response delivered in the output file (as some
    servers do) is an error, never an answer of None."""
    response = line.get("response")
    response = response if isinstance(response, dict) else {}
    status = int(response.get("status_code") or 200)
    if line.get("error") or not 200 <= status < 300:
        return line_error(line)
    body = response.get("body")
    choices = body.get("choices") if isinstance(body, dict) else None
    first = choices[0] if isinstance(choices, list) and choices else None
    message = first.get("message") if isinstance(first, dict) else None
    if not isinstance(body, dict) or not isinstance(message, dict):
        return f"the result line holds no answer (status {status}, no choices[0].message)"
    return body, message


class BatchJob:
    """A batch job: its rows, input files and batches, as recorded in the manifest.

    ``df.vision.submit(...)`` returns one; ``BatchJob.load(job_id)`` reattaches to one after a
    kernel restart or on another machine sharing the cache directory.
    """

    def __init__(self, job_id: str, manifest: Manifest, cache: Cache, client: Any) -> None:
        self.id = job_id
        self.manifest = manifest
        self.cache = cache
        self.client = client
        self._sdk: SyncOpenAI | None = None

    # -- loading -----------------------------------------------------------------------------

    @classmethod
    def load(
        cls, job_id: str, client: Any = None, *, cache: bool | str | Cache | Any = True
    ) -> BatchJob | ReplayedJob:
        """Reattach to job ``job_id`` recorded beside ``cache`` (default: the default cache).

        ``client``: a ``vk.connect(...)``; by default the job's own provider is connected again
        (its key from the environment). Under replay, the job replayed in this process
        (``visionkit.batch.replayed``)."""
        from ..query.client import connect

        replayed = replayed_job(job_id, client)
        if replayed is not None:
            return replayed

        store = Cache.open(cache)
        if store is None:
            raise ValueError("batch jobs live beside an answer cache; pass cache=True or a path")
        manifest = Manifest(manifest_path(store.path))
        job = manifest.job(job_id)
        if job is None:
            known = ", ".join(j["job_id"] for j in manifest.jobs()[-5:]) or "none"
            raise KeyError(f"no batch job {job_id!r} in {manifest.path} (latest: {known})")
        if client is None:
            name = job["provider"]
            if name == "offline" or name == "openai-compatible":
                client = connect(
                    "offline" if name == "offline" else "auto",
                    base_url=job["base_url"],
                    model=job["model"],
                    batch_base_url=job["batch_base_url"],
                )
            else:
                client = connect(name, model=job["model"], batch_base_url=job["batch_base_url"])
        return cls(job_id, manifest, store, client)

    @property
    def sdk(self) -> SyncOpenAI:
        """The synchronous SDK client on the job's Batch API (made on first use)."""
        if self._sdk is None:
            self._sdk = self.client.batch_sdk()
        return self._sdk

    # -- state -------------------------------------------------------------------------------

    @property
    def batches(self) -> pd.DataFrame:
        """One row per input file: its batch, status and line counts (from the last refresh)."""
        rows = [s for s in self.manifest.shards(self.id) if s["state"] != "lost"]
        columns = [
            "batch_id",
            "file_id",
            "state",
            "status",
            "lines",
            "bytes",
            "completed",
            "failed",
        ]
        return pd.DataFrame([{c: r[c] for c in columns} for r in rows], columns=columns)

    @property
    def status(self) -> str:
        """``uploading`` (files not all uploaded), ``in_progress`` (batches running),
        ``completed`` (every batch completed and collected), or ``incomplete`` (some batch
        expired, was cancelled or failed, or lines failed: ``submit`` again sends those rows)."""
        shards = [s for s in self.manifest.shards(self.id) if s["state"] != "lost"]
        if not shards:
            return "completed"
        if any(s["state"] in ("written", "uploaded", "staged") for s in shards):
            return "uploading"
        if any(s["state"] != "collected" for s in shards):
            return "in_progress"
        if all(s["status"] == "completed" and not s["failed"] for s in shards):
            return "completed"
        # Some lines failed or were left unrun; a later submission may have answered them.
        keys = [r.key for r in self.manifest.rows(self.id) if r.key and r.status != "error"]
        answered = self.cache.get_many(keys)
        return "completed" if len(answered) == len(set(keys)) else "incomplete"

    @property
    def done(self) -> bool:
        return self.status in ("completed", "incomplete")

    def refresh(self) -> BatchJob:
        """Ask the provider about each batch not collected yet; collect those that finished."""
        for shard in self.manifest.shards(self.id):
            if shard["state"] != "created":
                continue
            batch = self.sdk.batches.retrieve(shard["batch_id"])
            counts = batch.request_counts
            self.manifest.update_shard(
                shard["shard_id"],
                status=batch.status,
                completed=counts.completed if counts else 0,
                failed=counts.failed if counts else 0,
                total=counts.total if counts else shard["total"],
                output_file_id=batch.output_file_id,
                error_file_id=batch.error_file_id,
            )
            if batch.status in TERMINAL:
                self._collect(shard, batch)
        return self

    def _collect(self, shard: dict[str, Any], batch: Any) -> None:
        """Commit a finished batch's answers to the cache and its failures to the manifest."""
        tokens = self.manifest.shard_tokens(shard["shard_id"])
        job = self.manifest.job(self.id) or {}
        provider, model = job.get("provider"), job.get("model")
        recording = self.recording
        sent = self.manifest.submissions(self.id) if recording is not None else {}
        delivered: dict[str, CachedAnswer] = {}
        errors: list[tuple[str, str]] = []
        if batch.output_file_id:
            for line in _iter_lines(self.sdk, batch.output_file_id):
                key = line["custom_id"]
                found = _answer(line)
                if isinstance(found, str):
                    errors.append((key, found))
                    continue
                body, message = found
                usage: dict[str, Any] = body.get("usage") or {}
                entry = CachedAnswer(
                    answer=message.get("content"),
                    prompt_tokens=usage.get("prompt_tokens"),
                    completion_tokens=usage.get("completion_tokens"),
                    estimated_tokens=tokens.get(key),
                    model=body.get("model") or model,
                    provider=provider,
                )
                self.cache.put(key, entry)  # committed at once: paid for
                if recording is not None:
                    delivered[key] = entry
                    if len(delivered) >= _RECORD_CHUNK:
                        self._record(delivered, sent, only_new=False, batch_id=batch.id)
                        delivered.clear()
        if recording is not None:
            self._record(delivered, sent, only_new=False, batch_id=batch.id)
            recording.close()  # sorted once per batch, not per chunk
        if batch.error_file_id:
            errors.extend(
                (line["custom_id"], line_error(line))
                for line in _iter_lines(self.sdk, batch.error_file_id)
            )
        if batch.status == "failed" and batch.errors and batch.errors.data:
            reason = "; ".join(
                f"line {e.line}: {e.message}" for e in batch.errors.data[:3] if e is not None
            )
            errors.extend((key, f"batch failed validation: {reason}") for key in tokens)
        self.manifest.set_errors(batch.id, errors)
        self.manifest.update_shard(shard["shard_id"], state="collected")

    def cancel(self) -> BatchJob:
        """Cancel every batch still running; what completed is still delivered and collected."""
        import openai

        for shard in self.manifest.shards(self.id):
            if shard["state"] == "created" and shard["status"] not in TERMINAL:
                with contextlib.suppress(openai.ConflictError):  # finished meanwhile
                    self.sdk.batches.cancel(shard["batch_id"])
        return self.refresh()

    # -- waiting -----------------------------------------------------------------------------

    def _counts(self) -> tuple[int, int, int]:
        shards = self.manifest.shards(self.id)
        return (
            sum(s["total"] or s["lines"] or 0 for s in shards if s["state"] != "lost"),
            sum(s["completed"] or 0 for s in shards),
            sum(s["failed"] or 0 for s in shards),
        )

    def _bar(self, progress: bool) -> Any:
        from tqdm.auto import tqdm

        total, _, _ = self._counts()
        return tqdm(total=total, desc="batch", unit="line", disable=not progress)

    def _show(self, bar: Any) -> None:
        total, completed, failed = self._counts()
        bar.total = total
        bar.n = completed + failed
        bar.set_postfix(completed=completed, failed=failed, status=self.status, refresh=False)
        bar.refresh()

    def wait(
        self,
        timeout: float | None = None,
        *,
        poll: float = 0.5,
        max_poll: float = 60.0,
        progress: bool = True,
    ) -> BatchJob:
        """Wait until every batch finished and was collected (or ``timeout`` seconds passed).

        Polls every ``poll`` seconds, growing by half each time to ``max_poll``. Interrupting
        (Ctrl-C, Jupyter's stop button) stops the wait only: the batches go on, and in Jupyter
        the job is returned with a warning (in a script KeyboardInterrupt is re-raised).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = self._bar(progress)
        try:
            self.refresh()
            for pause in self._pauses(deadline, poll, max_poll, bar):
                time.sleep(pause)
                self.refresh()
            return self
        except KeyboardInterrupt:
            if not interrupted_in_notebook(
                f"stopped waiting for batch job {self.id}; its batches go on. "
                "job.wait() or job.refresh() later collects the results."
            ):
                raise
            return self
        finally:
            bar.close()

    async def wait_async(
        self,
        timeout: float | None = None,
        *,
        poll: float = 0.5,
        max_poll: float = 60.0,
        progress: bool = True,
    ) -> BatchJob:
        """``await job.wait_async()``: ``wait`` without blocking the event loop (Jupyter's).

        Cancelling the task stops the wait only; the batches go on.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = self._bar(progress)
        try:
            await asyncio.to_thread(self.refresh)
            for pause in self._pauses(deadline, poll, max_poll, bar):
                await asyncio.sleep(pause)
                await asyncio.to_thread(self.refresh)
            return self
        finally:
            bar.close()

    def _pauses(
        self, deadline: float | None, poll: float, max_poll: float, bar: Any
    ) -> Iterator[float]:
        """A wait's rhythm, after each refresh: show the progress, stop once every batch is
        collected or the time is up, else the pause before the next refresh (``poll``
        seconds, growing by half each time to ``max_poll``)."""
        while True:
            self._show(bar)
            if self.done or (deadline is not None and time.monotonic() >= deadline):
                return
            yield max(0.0, poll if deadline is None else min(poll, deadline - time.monotonic()))
            poll = min(max_poll, poll * 1.5)

    # -- the result --------------------------------------------------------------------------

    def result(self) -> pd.DataFrame:
        """``ask``'s table for the job's rows (answer, error, tokens, cached, ...) + ``batch_id``,
        on the submitted frame's index; ``attrs["usage"]`` has the totals.

        Rows whose batch has not finished have the error ``pending: ...`` (``wait()`` first).
        With a recording on (``connect(record=...)``), every answer shown is in it afterwards.
        """
        from ..query.schema import make_schema

        job = self.manifest.job(self.id) or {}
        rows = self.manifest.rows(self.id)
        keys = [r.key for r in rows if r.key]
        answers = self.cache.get_many(keys)
        errors = self.manifest.errors(k for k in keys if k not in answers)
        sent = self.manifest.submissions(self.id)
        status = self.status
        schema = make_schema(json.loads(job["schema"])) if job.get("schema") else None
        results = []
        for row in rows:
            times, batch_id = sent.get(row.key, (0, None)) if row.key else (0, None)
            if row.status == "reused":  # a hit reported as bought (see batch.replayed)
                times, batch_id = row.attempts or 1, row.batch_id
            out = ResultRow(
                error=row.error,
                estimated_tokens=row.estimated_tokens,
                cached=row.status == "hit",
                attempts=times,
                batch_id=batch_id,
            )
            entry = answers.get(row.key) if row.key else None
            if entry is not None and row.error is None:
                out.deliver(entry, schema)
            elif row.error is None:
                if row.key in errors:
                    out.error = errors[row.key]
                elif status in ("uploading", "in_progress"):
                    out.error = f"{PENDING}batch job {status} (job.wait() collects it)"
                else:
                    out.error = "not answered: submit the job again to send this row"
            results.append(out)
        recording = self.recording
        if recording is not None:
            self._record({k: answers[k] for k in keys if k in answers}, sent, only_new=True)
            recording.close()
        frame = result_frame([stored_label(r.label) for r in rows], results, schema)
        shards = self.manifest.shards(self.id)
        reused = sum({r.key: r.attempts or 1 for r in rows if r.status == "reused"}.values())
        frame.attrs["usage"] = {
            "rows": len(rows),
            **tally(results),
            "requests": sum(s["lines"] or 0 for s in shards if s["state"] != "lost") + reused,
            "files": len(shards),
            "batches": sum(s["batch_id"] is not None for s in shards),
            "status": status,
            "provider": job.get("provider"),
            "model": job.get("model"),
            "job_id": self.id,
        }
        usage = frame.attrs["usage"]
        usage.update(batch_money(usage))
        return frame

    # -- recording (connect(record=...)) ---------------------------------------------------

    @property
    def recording(self) -> Recording | None:
        """The client's recording when it records (a replayed job is a ``ReplayedJob``)."""
        recording = getattr(self.client, "recording", None)
        return recording if recording is not None and not recording.replaying else None

    def _record(
        self,
        answers: dict[str, CachedAnswer],
        sent: dict[str, tuple[int, str | None]],
        *,
        only_new: bool,
        batch_id: str | None = None,
    ) -> None:
        """Write ``answers`` (this job's, by key) to the recording, as ``ask`` writes its own:
        what each key asked (from the manifest), how many of the job's batches held it
        (``sent``: ``manifest.submissions``), the batch that delivered it. The caller sorts
        the store (``recording.close()``) when it is done."""
        recording = self.recording
        if recording is None or not answers:
            return
        todo = {k: v for k, v in answers.items() if not (only_new and recording.has(k))}
        if todo:
            job = self.manifest.job(self.id) or {}
            identity = _identity(job)
            asked = self.manifest.requests(todo)
            for key, entry in todo.items():
                prompt, system, images = asked.get(key, (job.get("prompt") or "", None, []))
                times, latest = sent.get(key, (1, None))
                recording.add(
                    key,
                    entry,
                    identity=identity,
                    prompt=prompt,
                    system=system,
                    images=images,
                    attempts=max(1, times),
                    batch_id=batch_id or latest,
                )
                recording.first_use(key)

    def __repr__(self) -> str:
        total, completed, failed = self._counts()
        return (
            f"BatchJob({self.id!r}, status={self.status!r}, lines={total}, "
            f"completed={completed}, failed={failed})"
        )


def batch_jobs(cache: bool | str | Cache | Any = True) -> pd.DataFrame:
    """A DataFrame of the batch jobs recorded beside ``cache`` (default: the default cache)."""
    store = Cache.open(cache)
    if store is None:
        raise ValueError("batch jobs live beside an answer cache; pass cache=True or a path")
    path = manifest_path(store.path)
    columns = ["job_id", "created", "provider", "model", "prompt", "files", "lines", "status"]
    if not path.exists():
        return pd.DataFrame(columns=columns)
    manifest = Manifest(path)
    try:
        records = []
        for job in manifest.jobs():
            shards = manifest.shards(job["job_id"])
            states = {s["state"] for s in shards}
            statuses = {s["status"] for s in shards if s["status"]}
            records.append(
                {
                    "job_id": job["job_id"],
                    "created": pd.Timestamp(job["created"], unit="s"),
                    "provider": job["provider"],
                    "model": job["model"],
                    "prompt": job["prompt"],
                    "files": len(shards),
                    "lines": sum(s["lines"] or 0 for s in shards),
                    "status": ", ".join(sorted(statuses)) or ", ".join(sorted(states)) or "-",
                }
            )
    finally:
        manifest.close()
    return pd.DataFrame(records, columns=columns)
