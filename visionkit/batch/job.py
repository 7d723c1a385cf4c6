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
import dataclasses
import json
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..errors import BatchWarning, warn
from ..providers import BatchLimits
from ..query.cache import Cache, CachedAnswer
from ..query.progress import in_ipython
from ..query.replay import Recording
from ..redact import has_credentials
from .collect import TimeUp, collect, left
from .limits import BatchSettings, limits_json
from .lines import RUNNING, TERMINAL, BatchState, batch_state
from .manifest import Manifest, manifest_path, stored_label
from .recorded import record_answers
from .replayed import ReplayedJob, replayed_job
from .resend import resend_pending
from .result import PENDING, ResultRow, batch_money, result_frame, tally

if TYPE_CHECKING:
    from openai import OpenAI as SyncOpenAI

__all__ = ["TERMINAL", "BatchJob", "interrupted_in_notebook"]

logger = logging.getLogger("visionkit")

KNOWN = RUNNING | TERMINAL


def interrupted_in_notebook(message: str) -> bool:
    """Ctrl-C (Jupyter's stop button) stopped a wait or an upload, never the job: in Jupyter,
    warn with ``message`` and return True (the caller returns the job); elsewhere False (the
    caller re-raises ``KeyboardInterrupt``)."""
    if in_ipython():
        warn(message, RuntimeWarning)
        return True
    return False


def _transient(exc: BaseException) -> bool:
    """A failed poll or download worth trying again at the next poll (no answer, a 5xx, a
    429), as opposed to a refusal that will not change (401, 404...)."""
    import openai

    if isinstance(exc, (openai.APIConnectionError, TimeUp)):
        return True
    return isinstance(exc, openai.APIStatusError) and (
        exc.status_code >= 500 or exc.status_code in (408, 409, 429)
    )


def _unknown(shard: dict[str, Any]) -> bool:
    """A batch whose last poll reported a status the API does not document (or no readable
    Batch at all): the wait stops on it."""
    return (
        shard["state"] == "created"
        and shard["status"] is not None
        and (shard["status"] not in KNOWN)
    )


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
        self._sent: dict[str, tuple[int, str | None]] | None = None  # per refresh
        self._problems: dict[str, str] = {}  # batch id -> why its status is unknown
        self._warned_early = False

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
            if has_credentials(job["base_url"]) or has_credentials(job["batch_base_url"]):
                raise ValueError(
                    f"batch job {job_id!r} was submitted to {job['batch_base_url']}, whose "
                    "credentials visionkit does not store; pass the client: "
                    "BatchJob.load(job_id, client=vk.connect(base_url=..., model=...))"
                )
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
        ``unknown`` (a batch reports a status the Batch API does not document: see
        ``job.batches``), ``completed`` (every batch completed and collected), or
        ``incomplete`` (some batch expired, was cancelled or failed, or lines failed:
        ``submit`` again sends those rows)."""
        return self._status(self.manifest.shards(self.id))

    def _status(self, shards: list[dict[str, Any]]) -> str:
        shards = [s for s in shards if s["state"] != "lost"]
        if not shards:
            return "completed"
        if any(s["state"] in ("written", "uploaded", "staged") for s in shards):
            return "uploading"
        if any(_unknown(s) for s in shards):
            return "unknown"
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
        """True once every batch of the job has finished and its rows are collected."""
        return self.status in ("completed", "incomplete")

    def sdk_within(self, deadline: float | None) -> SyncOpenAI:
        """The SDK for calls inside a wait with ``deadline``: its own retries off (the next
        poll is the retry, and a retry must not outlast the deadline)."""
        return self.sdk if deadline is None else self.sdk.with_options(max_retries=0)

    def refresh(self) -> BatchJob:
        """Ask the provider about each batch not collected yet; collect those that finished."""
        self._refresh(None)
        return self

    def _refresh(self, deadline: float | None, *, patient: bool = False) -> None:
        """``refresh``, each call given the time left before ``deadline``; ``patient``
        (inside a wait): a transient failure (no answer, a 5xx, a 429) is logged and the
        batch asked again at the next poll, instead of raising."""
        self._sent = None
        for shard in self.manifest.shards(self.id):
            if shard["state"] != "created":
                continue
            if deadline is not None and time.monotonic() >= deadline:
                return
            try:
                state = self._poll(shard, deadline)
                if state is not None and state.status in TERMINAL:
                    collect(self, shard, state, deadline)
            except Exception as exc:
                if not (patient and _transient(exc)):
                    raise
                logger.info("batch %s: %s; asking again at the next poll", shard["batch_id"], exc)

    def _poll(self, shard: dict[str, Any], deadline: float | None) -> BatchState | None:
        """The batch's state, checked, recorded in the manifest; ``None`` when the answer was
        not a Batch object (recorded as the status ``unreadable``: the wait stops on it)."""
        options: dict[str, Any] = {} if deadline is None else {"timeout": left(deadline)}
        batch_id = shard["batch_id"]
        raw = self.sdk_within(deadline).batches.with_raw_response.retrieve(batch_id, **options)
        try:
            state = batch_state(json.loads(raw.text), expected_id=batch_id)
        except ValueError as exc:
            state = f"not JSON ({exc})"
        if isinstance(state, str):
            self._problems[batch_id] = f"its answer does not fit a Batch object: {state}"
            self.manifest.update_shard(shard["shard_id"], status="unreadable")
            return None
        if state.status not in KNOWN:
            self._problems[batch_id] = f"it reports the status {state.status!r}"
        counts = state.counts
        self.manifest.update_shard(
            shard["shard_id"],
            status=state.status,
            completed=counts.completed,
            failed=counts.failed,
            total=counts.total or shard["total"],
            output_file_id=state.output_file_id,
            error_file_id=state.error_file_id,
        )
        return state

    def store(self, answers: dict[str, CachedAnswer], *, batch_id: str, last: bool = False) -> None:
        """Commit collected answers to the cache (one transaction), then to the recording if
        one is on; ``last``: the batch's final chunk (the recording is sorted once)."""
        self.cache.put_many(answers)  # committed before anything else: paid for
        recording = self.recording
        if recording is None:
            return
        if self._sent is None:
            self._sent = self.manifest.submissions(self.id)
        record_answers(
            self.manifest,
            self.id,
            self.recording,
            answers,
            self._sent,
            only_new=False,
            batch_id=batch_id,
        )
        if last:
            recording.close()

    # -- sending again (visionkit.batch.resend) ------------------------------------------

    def limits(self) -> BatchLimits:
        """What the job's files are cut and sent by (as ``submit`` recorded it)."""
        base = BatchSettings().limits(self.client.provider.batch)
        saved = (self.manifest.job(self.id) or {}).get("limits")
        return dataclasses.replace(base, **json.loads(saved)) if saved else base

    def save_limits(self, limits: BatchLimits) -> None:
        """Cut the job's later files by ``limits`` (a server refused a file for its size)."""
        self.manifest.save_job(self.id, limits=json.dumps(limits_json(limits)))

    def upload(self, deadline: float | None = None) -> int:
        """Upload the job's files not uploaded yet and create their batches (the caller holds
        the job's claim); returns how many batches were created."""
        from .upload import upload_pending

        limits = self.limits()
        metadata = json.loads((self.manifest.job(self.id) or {}).get("metadata") or "{}")
        return upload_pending(
            self.id,
            self.manifest,
            self.sdk,
            self.client.batch_base_url or self.client.base_url,
            limits,
            interval=limits.upload_interval,
            metadata=metadata,
            deadline=deadline,
        )

    def _resend(self, deadline: float | None, patient: bool) -> None:
        try:
            resend_pending(self, deadline)
        except Exception as exc:
            if not (patient and _transient(exc)):
                raise
            logger.info("batch job %s: sending again failed (%s); next poll", self.id, exc)

    def cancel(self) -> BatchJob:
        """Cancel every batch still running; what completed is still delivered and collected.

        Each cancel is sent once (the SDK's retries off); after an unclear answer (a 5xx, no
        answer) the batch is asked for its status, and the cancel is sent again only when it
        is still running without ``cancelling``."""
        import openai

        from .upload import unclear

        once = self.sdk.with_options(max_retries=0)
        for shard in self.manifest.shards(self.id):
            if shard["state"] != "created" or shard["status"] in TERMINAL:
                continue
            self.manifest.update_shard(shard["shard_id"], user_cancel=1)  # never sent again
            for attempt in (1, 2):
                try:
                    once.batches.cancel(shard["batch_id"])
                    break
                except openai.ConflictError:  # finished meanwhile
                    break
                except (openai.APIConnectionError, openai.APIStatusError) as exc:
                    if not unclear(exc) or attempt == 2:
                        raise
                    state = self._poll(shard, None)
                    if state is None or state.status not in ("validating", "in_progress"):
                        break  # cancelling, or done: the cancel took effect or is moot
        return self.refresh()

    # -- waiting -----------------------------------------------------------------------------

    @staticmethod
    def _counts(shards: list[dict[str, Any]]) -> tuple[int, int, int]:
        return (
            sum(s["total"] or s["lines"] or 0 for s in shards if s["state"] != "lost"),
            sum(s["completed"] or 0 for s in shards),
            sum(s["failed"] or 0 for s in shards),
        )

    def _bar(self, progress: bool) -> Any:
        from tqdm.auto import tqdm

        total, _, _ = self._counts(self.manifest.shards(self.id))
        return tqdm(total=total, desc="batch", unit="line", disable=not progress)

    def _show(self, bar: Any, shards: list[dict[str, Any]], status: str) -> None:
        total, completed, failed = self._counts(shards)
        bar.total = total
        bar.n = completed + failed
        bar.set_postfix(completed=completed, failed=failed, status=status, refresh=False)
        bar.refresh()

    def wait(
        self,
        timeout: float | None = None,
        *,
        poll: float = 0.5,
        max_poll: float = 60.0,
        progress: bool = True,
        resubmit: bool = True,
    ) -> BatchJob:
        """Wait until every batch finished and was collected (or ``timeout`` seconds passed).

        Polls every ``poll`` seconds, growing by half each time to ``max_poll``. Every call
        inside the wait (polls, downloads) gets the time left as its own timeout, so the wait
        returns by about ``timeout``; a poll that fails for a passing reason (no answer, a
        5xx) is tried again at the next one. A batch reporting a status the Batch API does not
        document ends the wait with a ``BatchWarning`` naming it (``job.status`` is
        ``unknown``). ``resubmit`` (default on): rows a batch left unanswered for a passing
        reason (it expired, the provider cancelled it, a line failed with a 5xx or a 429, the
        file was too large for the server) are sent again, round after round, until every
        row is answered or a round answers none (``visionkit.batch.resend``); only rows still
        missing are paid for. Interrupting (Ctrl-C, Jupyter's stop button) stops the wait only: the
        batches go on, and in Jupyter the job is returned with a warning (in a script
        KeyboardInterrupt is re-raised).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = self._bar(progress)
        try:
            self._round(deadline, resubmit)
            for pause in self._pauses(deadline, poll, max_poll, bar, resubmit):
                time.sleep(pause)
                self._round(deadline, resubmit)
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
        resubmit: bool = True,
    ) -> BatchJob:
        """``await job.wait_async()``: ``wait`` without blocking the event loop (Jupyter's).

        Cancelling the task stops the wait only; the batches go on.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = self._bar(progress)
        try:
            await asyncio.to_thread(self._round, deadline, resubmit)
            for pause in self._pauses(deadline, poll, max_poll, bar, resubmit):
                await asyncio.sleep(pause)
                await asyncio.to_thread(self._round, deadline, resubmit)
            return self
        finally:
            bar.close()

    def _round(self, deadline: float | None, resubmit: bool) -> None:
        """One poll of a wait: refresh, then (``resubmit``) send again what is marked."""
        self._refresh(deadline, patient=True)
        if resubmit:
            self._resend(deadline, patient=True)

    def _pauses(
        self, deadline: float | None, poll: float, max_poll: float, bar: Any, resubmit: bool
    ) -> Iterator[float]:
        """A wait's rhythm, after each refresh: show the progress, stop once every batch is
        collected, a batch reports an unknown status, or the time is up, else the pause before
        the next refresh (``poll`` seconds, growing by half each time to ``max_poll``)."""
        while True:
            shards = self.manifest.shards(self.id)
            status = self._status(shards)  # once a poll
            self._show(bar, shards, status)
            if status == "unknown":
                self._warn_unknown(shards)
                return
            waiting = resubmit and any(s["resend"] and s["state"] == "collected" for s in shards)
            if status in ("completed", "incomplete") and not waiting:
                return
            if deadline is not None and time.monotonic() >= deadline:
                return
            yield max(0.0, poll if deadline is None else min(poll, deadline - time.monotonic()))
            poll = min(max_poll, poll * 1.5)

    def _warn_unknown(self, shards: list[dict[str, Any]]) -> None:
        found = [s for s in shards if _unknown(s)]
        said = "; ".join(
            f"batch {s['batch_id']}: {self._problems.get(s['batch_id'], repr(s['status']))}"
            for s in found[:3]
        )
        warn(
            f"stopped waiting for batch job {self.id}: {said}, which is not one of the Batch "
            f"API's statuses ({', '.join(sorted(KNOWN))}). Its rows stay pending and are not "
            "sent again while the batch may still run; job.refresh() asks again, "
            "job.cancel() cancels it.",
            BatchWarning,
        )

    # -- the result --------------------------------------------------------------------------

    def result(self, *, strict: bool = False) -> pd.DataFrame:
        """``ask``'s table for the job's rows (answer, error, tokens, cached, ...) + ``batch_id``,
        on the submitted frame's index; ``attrs["usage"]`` has the totals.

        Before the job is done, rows whose batch has not finished have the error
        ``pending: ...``, counted as ``pending`` in the usage (never as ``failed``), and a
        ``BatchWarning`` says so once per job (``wait()`` first); ``strict=True`` raises
        ``RuntimeError`` instead. With a recording on (``connect(record=...)``), every answer
        shown is in it afterwards.
        """
        from ..query.schema import make_schema

        shards = self.manifest.shards(self.id)
        status = self._status(shards)
        if status not in ("completed", "incomplete"):
            message = (
                f"batch job {self.id} is {status}: its rows not collected yet are shown as "
                "pending (job.wait() first collects them)"
            )
            if strict:
                raise RuntimeError(message)
            if not self._warned_early:
                self._warned_early = True
                warn(message, BatchWarning)
        job = self.manifest.job(self.id) or {}
        rows = self.manifest.rows(self.id)
        keys = [r.key for r in rows if r.key]
        answers = self.cache.get_many(keys)
        errors = self.manifest.errors(k for k in keys if k not in answers)
        sent = self.manifest.submissions(self.id)
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
                elif status in ("uploading", "in_progress", "unknown"):
                    out.error = f"{PENDING}batch job {status} (job.wait() collects it)"
                else:
                    out.error = "not answered: submit the job again to send this row"
            results.append(out)
        recording = self.recording
        if recording is not None:
            record_answers(
                self.manifest,
                self.id,
                self.recording,
                {k: answers[k] for k in keys if k in answers},
                sent,
                only_new=True,
            )
            recording.close()
        frame = result_frame([stored_label(r.label) for r in rows], results, schema)
        reused = sum({r.key: r.attempts or 1 for r in rows if r.status == "reused"}.values())
        frame.attrs["usage"] = {
            "rows": len(rows),
            **tally(results),
            "requests": sum(s["lines"] or 0 for s in shards if s["state"] != "lost") + reused,
            "files": len(shards),
            "batches": sum(s["batch_id"] is not None for s in shards),
            **{
                name: sum(s[name] or 0 for s in shards)
                for name in ("foreign_lines", "duplicate_lines", "unreadable_lines")
            },
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

    def __repr__(self) -> str:
        shards = self.manifest.shards(self.id)
        total, completed, failed = self._counts(shards)
        return (
            f"BatchJob({self.id!r}, status={self._status(shards)!r}, lines={total}, "
            f"completed={completed}, failed={failed})"
        )
