"""Batch jobs under record and replay (``vk.connect(record=/replay="answers/")``, issue 11).

Replay (``connect(..., replay="answers/")`` or ``VISIONKIT_REPLAY``): ``submit`` writes no
file, uploads nothing, creates no batch and needs no key. It plans the rows as always (the same
cache keys) and answers each from the recording, returning a ``ReplayedJob``: a job already
``completed`` whose ``wait()``, ``wait_async()``, ``refresh()`` and ``cancel()`` return at
once and whose ``result()`` is the table the recorded job showed: answers, tokens, ``cached``,
``attempts`` and ``batch_id`` as recorded. A row never recorded is that row's error saying
how to record it (the job is then ``incomplete``), or, when ``strict`` (the default under
``CI``), ``submit`` raises ``ReplayError`` naming the rows, with ``partial`` holding the table.
``vk.BatchJob.load(job.id)`` finds a job replayed in the same process; ``job.batches`` is
empty (no batch was made), and ``attrs["usage"]`` counts ``files`` and ``batches`` as 0.
``dry_run=True`` estimates as usual (recorded rows count as cached).

Record (``connect(..., record="answers/")`` or ``VISIONKIT_RECORD``): every answer a job
delivers goes into the recording when it is collected (``wait``/``refresh``), with the batch
that delivered it, and ``result()`` adds any answer it shows that the recording lacks (one
collected in a session without a recording, ``BatchJob.load`` in a new session with one).
Rows answered at submit from the cache are recorded at once.

What a result shows, so a recorded notebook and its replay print the same: ``ask``'s rule --
the first time a process uses an answer it is reported as bought (``cached`` False, its
recorded ``attempts`` and ``batch_id``, its tokens in ``usage``), even when, while recording,
it came from the cache (that row's manifest status is ``reused``); later uses are cache hits.
A row repeating an earlier row of the same job (the same image and prompt) is reported as
that row. ``job.id`` is a hash of the call, image cells included: the same in the replay when
the notebook names its images by the same paths (relative ones; a temporary folder's differ).
What a replay cannot show: failures the recorded run met and later recovered from (an expired
batch, then a second submit) -- the recording holds the final answers only.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .._state import register
from ..query.plan import Plan, RowPlan, plan_rows
from ..query.progress import progress_bar
from ..query.replay import REPLAY_ENV, not_recorded_message, unrecorded_error
from .manifest import stored_label
from .result import ResultRow, batch_money, result_frame, tally

__all__ = ["ReplayPass", "ReplayedJob", "replay_job", "replay_rows", "replayed_job"]

# The jobs replayed in this process, by id, so ``BatchJob.load(job.id)`` finds them.
_JOBS: dict[str, ReplayedJob] = {}

BATCH_COLUMNS = ["batch_id", "file_id", "state", "status", "lines", "bytes", "completed", "failed"]


@dataclass
class ReplayPass:
    """What ``replay_rows`` found: each row's result, the rows not recorded, the requests
    the recorded run made for the answers reported as bought."""

    rows: list[ResultRow] = field(default_factory=list)
    unrecorded: list[int] = field(default_factory=list)  # positions
    requests: int = 0


def _no_encoding(plan: Plan, row: RowPlan) -> RowPlan:
    row.images = None  # a replay sends nothing: a row not recorded is never encoded
    return row


def replay_rows(
    plan: Plan,
    positions: Any = None,
    *,
    seen: dict[str, ResultRow] | None = None,
    progress: bool = False,
) -> ReplayPass:
    """Answer rows (all, or ``positions``) from ``plan.recording`` (which must replay), in
    order. ``seen`` (key -> result) carries "reported as that row" across calls of one job
    (a Dask job's partitions in one process)."""
    recording = plan.recording
    assert recording is not None and recording.replaying
    seen = {} if seen is None else seen
    out = ReplayPass()
    total = plan.n if positions is None else len(positions)
    bar = progress_bar(total, desc="batch replay", enabled=progress)
    try:
        for row in plan_rows(plan, positions, finish=_no_encoding, on_row=lambda _: bar.update(1)):
            if row.error is not None:
                result = ResultRow(error=row.error, estimated_tokens=row.estimated_tokens)
            elif row.key is not None and row.key in seen:
                result = dataclasses.replace(seen[row.key])
            elif row.hit is not None and row.key is not None:
                bought = plan.used(row, row.hit)
                result = ResultRow(estimated_tokens=row.hit.estimated_tokens, cached=not bought)
                if bought:
                    result.attempts = recording.attempts(row.key)
                    result.batch_id = recording.batch_id(row.key)
                    out.requests += result.attempts
                result.deliver(row.hit, plan.schema)
                seen[row.key] = result
            else:
                result = ResultRow(error=not_recorded_message(recording, row.key))
                out.unrecorded.append(row.pos)
            out.rows.append(result)
    finally:
        bar.close()
    return out


def replay_job(plan: Plan, job_id: str, *, progress: bool = False) -> ReplayedJob:
    """``submit`` under replay: the job answered from the recording (see the module doc)."""
    recording = plan.recording
    assert recording is not None and recording.replaying
    if plan.model is None:
        raise ValueError("pass model=... to replay a server that named its own model")
    done = replay_rows(plan, progress=progress)
    labels = [stored_label(label) for label in plan.index]
    frame = result_frame(labels, done.rows, plan.schema)
    status = "incomplete" if done.unrecorded else "completed"
    frame.attrs["usage"] = {
        "rows": plan.n,
        **tally(done.rows),
        "requests": done.requests,
        "files": 0,
        "batches": 0,
        "status": status,
        "provider": plan.provider.name,
        "model": plan.model,
        "job_id": job_id,
    }
    usage = frame.attrs["usage"]
    usage.update(batch_money(usage))
    if done.unrecorded and recording.strict:
        error = unrecorded_error(recording, [labels[p] for p in done.unrecorded])
        error.partial = frame
        raise error
    job = ReplayedJob(job_id, plan.client, frame, status, str(recording.path))
    _JOBS[job_id] = job
    return job


def replayed_job(job_id: str, client: Any = None) -> ReplayedJob | None:
    """The job ``job_id`` replayed in this process; ``None`` when not replaying. Raises
    ``KeyError`` when replaying and the job was not submitted in this process."""
    if job_id in _JOBS:
        return _JOBS[job_id]
    recording = getattr(client, "recording", None)
    replaying = recording.replaying if recording is not None else bool(os.environ.get(REPLAY_ENV))
    if not replaying:
        return None
    raise KeyError(
        f"batch job {job_id!r} was not submitted in this process. Under replay a job exists "
        "only where it was submitted: run the df.vision.submit(...) call again (it answers "
        "from the recording and sends nothing)"
    )


@dataclass(repr=False, eq=False)
class ReplayedJob:
    """A batch job answered from a recording: complete from the start (module doc)."""

    id: str
    client: Any
    _frame: pd.DataFrame
    status: str
    source: str  # the recording's folder

    @property
    def done(self) -> bool:
        return True

    @property
    def batches(self) -> pd.DataFrame:
        """No batch was made: an empty table with ``BatchJob.batches``' columns."""
        return pd.DataFrame(columns=BATCH_COLUMNS)

    def refresh(self) -> ReplayedJob:
        return self

    def cancel(self) -> ReplayedJob:
        return self

    def wait(
        self,
        timeout: float | None = None,
        *,
        poll: float = 0.5,
        max_poll: float = 60.0,
        progress: bool = True,
        resubmit: bool = True,
    ) -> ReplayedJob:
        """Returns at once (``BatchJob.wait``'s arguments are accepted)."""
        return self

    async def wait_async(
        self,
        timeout: float | None = None,
        *,
        poll: float = 0.5,
        max_poll: float = 60.0,
        progress: bool = True,
        resubmit: bool = True,
    ) -> ReplayedJob:
        """Returns at once (``BatchJob.wait_async``'s arguments are accepted)."""
        return self

    def result(self, *, strict: bool = False) -> pd.DataFrame:
        """The recorded job's table (a copy): see ``BatchJob.result`` (a replayed job is
        done from the start, so ``strict`` never raises)."""
        frame = self._frame.copy()
        frame.attrs = {"usage": dict(self._frame.attrs["usage"])}
        return frame

    def __repr__(self) -> str:
        return f"ReplayedJob({self.id!r}, status={self.status!r}, replayed from {self.source!r})"


def _held_jobs() -> tuple[int, str]:
    return len(_JOBS), ", ".join(sorted(_JOBS))


register("replayed batch jobs", __name__, _held_jobs, _JOBS.clear)
