"""``ddf.vision.submit``: a batch job from a Dask frame. The workers plan, encode and write the
JSONL files in parallel; this process records them in the batch manifest and uploads them
through the one paced uploader of ``df.vision.submit``, starting while the workers prepare.

Per partition, on a worker, ``prepare_partition`` runs the pandas path's own pass
(``visionkit.batch.shared.prepare``: ``ask``'s planner, the answer cache's hits, the manifest's
keys already in a live file, the row errors, the file cutting) into a staging folder of this
call under ``<cache dir>/batch-files/``, and returns the partition's rows, its files and the
hashes that name the job. Workers only *read* the answer cache and the manifest (SQLite in WAL
mode: several processes may read one file); nothing on a worker writes to either, and no
worker holds the key: ``ClientSpec.planner()`` plans as the caller's client does (provider, URL
and model make the cache key) but cannot send.

Here, the frame's partitions are computed first and kept on the workers, and their
``cell_hashes`` gathered: the job id is the pandas one (the recipe and every row's cell hash, in
row order: the same frame gives the same job, computed or not), known before any pass starts.
Then every partition's pass starts, and each is taken as it finishes
(``visionkit.dask.stream.JobStream``): its rows recorded on the frame's positions; a line for
an image that this call already sends (from a partition finished earlier) or that another
process put in a live file meanwhile dropped from the partition's file (sent once); its full
files renamed into ``batch-files/<job id>/`` with the job's next sequence numbers and recorded
with their rows, then uploaded by a thread at the provider's pace while the workers go on
(uploading overlaps preparing); its last, part-filled file kept back and joined with other
partitions' until the next would not fit (at inference.net's one upload a minute every file
counts). When every pass is in, ``visionkit.batch.shared.launch`` uploads the rest, exactly as
for a pandas frame. With ``budget_tokens`` nothing is uploaded before the total is known: the
files are recorded ``staged`` and ``launch`` checks the budget first. So the same call again
continues the same job, ``job.wait()``, ``job.result()`` and ``vk.BatchJob.load(id)`` work as
they do for a pandas job, and the result is on the frame's index.

A file is recorded, with its rows, before it can be uploaded: an interrupt or a crash after an
upload leaves its rows in a live file, so the same call again does not send them twice. Files
are joined in the order partitions finish, so a job may have a few more files than from pandas
(pandas fills each file to the limit across what would be partition boundaries), and which of
two rows with the same image is the ``repeat`` depends on which partition finished first; a
dry run (``merge``) joins in partition order and shows pandas' plan. The partitions wait in the
workers' memory (spilled to disk by Dask if need be) from the hashes until their pass.

Record and replay (``connect(record=...)``, ``connect(replay=...)``) are one process's files:
such a client submits the computed frame with ``df.vision.submit``, so whatever that does under
record and replay this does too (replay: a ``ReplayedJob`` answered from the recording, nothing
sent); a replayed notebook's frame is small.

The workers and this process must see the same cache folder (one machine, or a folder all of
them mount): the workers write the files that this process uploads. Files not recorded (the
call failed or was interrupted) are removed with the staging folder; a task Dask cannot stop
may still finish writing into it after an interrupt (``batch-files/staging-*``: never uploaded,
safe to delete).
"""

from __future__ import annotations

import dataclasses
import inspect
import shutil
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..batch.claims import job_claim
from ..batch.limits import BatchSettings
from ..batch.manifest import Manifest, manifest_path
from ..batch.shards import Shard
from ..batch.shared import (
    BatchAskOptions,
    PlannedRow,
    Preparation,
    batch_arguments,
    cell_hashes,
    check_ready,
    dry_run_frame,
    job_directory,
    job_identity,
    launch,
    open_job,
    prepare,
)
from ..batch.upload import upload_pending
from ..providers import BatchLimits
from ..query.plan import Plan, make_plan
from .files import fits, join, without
from .relay import in_task, start_call
from .secrets import ClientSpec, client_spec
from .stream import BackgroundUploads, JobStream

__all__ = ["PartPrep", "SubmitTask", "prepare_partition", "submit_frame"]


@dataclass(frozen=True)
class SubmitTask:
    """Everything a partition's task needs, and nothing secret (it is in the task graph)."""

    prompt: str
    options: BatchAskOptions  # client=None, cache=False, progress=False
    client: ClientSpec | None  # plans like the caller's client; None: a dry run without one
    cache: str | None  # the answer cache file (hits are not sent); None: no cache
    manifest: str | None  # the batch manifest, read for keys already in a live file
    limits: BatchLimits
    staging: str | None  # this call's folder for the files; None: count only (a dry run)
    call: str = ""  # whose warnings the workers relay (visionkit.dask.relay)


@dataclass
class PartPrep:
    """What one partition's pass found: its rows and files (``prep``) and its index labels."""

    number: int
    index: pd.Index
    prep: Preparation


def prepare_partition(part: pd.DataFrame, task: SubmitTask, number: int) -> PartPrep:
    """One partition's planning pass (a task on a worker): see the module docstring."""
    with in_task(task.call):
        return _prepare_partition(part, task, number)


def _prepare_partition(part: pd.DataFrame, task: SubmitTask, number: int) -> PartPrep:
    client = task.client.planner() if task.client is not None else None
    cache = Path(task.cache) if task.cache is not None else False
    options = task.options.replace(client=client, cache=cache)
    manifest = Manifest(task.manifest) if task.manifest is not None else None
    directory = Path(task.staging) / f"part-{number:06d}" if task.staging is not None else None
    try:
        with make_plan(part, task.prompt, options, connect_now=False) as plan:
            prep = prepare(
                plan,
                task.limits,
                manifest,
                directory,
                job_id=None,  # nothing is recorded here: the caller records what comes back
                first_seq=1,
                progress=False,
                keep_rows=True,
            )
    finally:
        if manifest is not None:
            manifest.close()
    return PartPrep(number, part.index, prep)


def submit_frame(ddf: Any, prompt: str, **kwargs: Any) -> Any:
    """``ddf.vision.submit``: ``df.vision.submit``'s parameters and result (see the module
    docstring). Runs now (a batch job is not lazy): returns a ``BatchJob``, or with
    ``dry_run=True`` the dry run's DataFrame, computed."""
    from ..batch.submit import submit
    from ..query.client import connect, default_client

    bound = inspect.signature(submit).bind(ddf._meta, prompt, **kwargs)
    bound.apply_defaults()
    options, settings = batch_arguments(bound.arguments)
    client = options.client
    if isinstance(client, str):
        client = connect(client)
    if client is None and not options.dry_run:
        client = default_client()
    if client is not None and client.recording is not None:
        return submit(ddf.compute(), prompt, **{**kwargs, "client": client})
    dask_client = _dask_client()
    options = dataclasses.replace(options, client=client)
    with make_plan(ddf._meta, prompt, options, connect_now=not options.dry_run) as plan:
        limits = settings.limits(plan.provider.batch)
        task = SubmitTask(
            prompt=prompt,
            options=dataclasses.replace(options, client=None, cache=False, progress=False),
            client=None,
            cache=str(plan.cache.path) if plan.cache is not None else None,
            manifest=None,
            limits=limits,
            staging=None,
            call=start_call(),
        )
        if options.dry_run:
            found = manifest_path(plan.cache.path) if plan.cache is not None else None
            spec = client_spec(plan.client) if plan.client is not None else None
            task = _replace(
                task,
                client=spec,
                manifest=str(found) if found is not None and found.exists() else None,
            )
            parts = _run(dask_client, ddf, task, options.progress)
            prep = merge(parts, limits, plan, directory=None, first_seq=1)
            return dry_run_frame(plan, prep, limits, limits.upload_interval)
        check_ready(plan)
        assert plan.cache is not None and plan.client is not None
        manifest = Manifest(manifest_path(plan.cache.path))
        staging = plan.cache.path.parent / "batch-files" / f"staging-{uuid.uuid4().hex[:12]}"
        task = _replace(
            task,
            client=client_spec(plan.client.with_model(plan.model)),
            manifest=str(manifest.path),
            staging=str(staging),
        )
        partitions = Partitions(dask_client, ddf)
        try:
            hashes = partitions.hashes(plan.columns)
            job_id = job_identity(plan, prompt, hashes)
            with job_claim(manifest, job_id):  # one process submits a job at a time
                open_job(plan, manifest, job_id, prompt, settings.metadata, limits)
                stream = JobStream(
                    manifest,
                    job_id,
                    limits,
                    job_directory(plan, job_id),
                    offsets=np.cumsum([0, *map(len, hashes)]).tolist(),
                    next_seq=manifest.next_seq(job_id),
                    # over a budget nothing may go up: files wait until the total is known
                    write=options.budget_tokens is None,
                )
                try:
                    prep = _prepare_and_upload(
                        partitions, task, stream, plan, settings, options.progress
                    )
                finally:
                    shutil.rmtree(staging, ignore_errors=True)  # what was not recorded
                return launch(plan, prep, manifest, job_id, settings)
        finally:
            partitions.cancel()


class Partitions:
    """The frame's partitions computed on the workers and kept there: first the hashes that
    name the job (``hashes``), then each partition's pass (``prepare``), which frees it."""

    def __init__(self, dask_client: Any, ddf: Any) -> None:
        self.dask_client = dask_client
        self._parts: list[Any] = dask_client.compute(ddf.to_delayed())
        self._passes: list[Any] = []
        self.count = len(self._parts)

    def hashes(self, columns: Sequence[str]) -> list[np.ndarray]:
        """Each partition's ``cell_hashes``, in order (its length is the partition's)."""
        futures = self.dask_client.map(cell_hashes, self._parts, columns=columns, pure=False)
        found: list[np.ndarray] = self.dask_client.gather(futures)
        return found

    def prepare(self, task: SubmitTask) -> list[Any]:
        """Start every partition's pass; the futures (finished in any order)."""
        self._passes = [
            self.dask_client.submit(prepare_partition, part, task, i, pure=False)
            for i, part in enumerate(self._parts)
        ]
        self._parts = []  # each partition is freed once its pass is done
        return self._passes

    def cancel(self) -> None:
        """Drop whatever is still computed or kept (after an error, or when done)."""
        futures, self._parts, self._passes = [*self._parts, *self._passes], [], []
        unfinished = [f for f in futures if not f.done()]
        if unfinished:
            self.dask_client.cancel(unfinished)


def _prepare_and_upload(
    partitions: Partitions,
    task: SubmitTask,
    stream: JobStream,
    plan: Plan,
    settings: BatchSettings,
    progress: bool,
) -> Preparation:
    """Every partition's pass, each recorded in ``stream`` as it finishes while the files
    recorded so far are uploaded (when ``stream.write``); the job's totals and files."""
    from distributed import as_completed
    from tqdm.auto import tqdm

    assert plan.client is not None and task.staging is not None
    uploads = None
    if stream.write:
        sdk = plan.client.batch_sdk()
        url = plan.client.batch_base_url or plan.client.base_url
        limits, metadata = stream.limits, dict(settings.metadata or {})
        uploads = BackgroundUploads(
            lambda stop: upload_pending(
                stream.job_id,
                stream.manifest,
                sdk,
                url,
                limits,
                interval=limits.upload_interval,
                metadata=metadata,
                stop=stop,
            )
        )
        stream.on_file = uploads.wake
    bar = tqdm(total=partitions.count, desc="batch prepare", unit="partition", disable=not progress)
    try:
        for future in as_completed(partitions.prepare(task)):
            part: PartPrep = future.result()
            future.release()  # (its rows are on this side now)
            _check_shared([part], Path(task.staging))
            stream.take(part.number, part.prep)
            bar.update(1)
            if uploads is not None:
                uploads.check()
        prep = stream.finish()
    finally:
        bar.close()
        if uploads is not None:
            uploads.stop()  # launch uploads the rest, with its progress bar
    if uploads is not None:
        uploads.check()
    return prep


def _replace(task: SubmitTask, **changes: Any) -> SubmitTask:
    return dataclasses.replace(task, **changes)


def _dask_client() -> Any:
    from distributed import get_client

    try:
        return get_client()
    except ValueError:
        raise RuntimeError(
            "ddf.vision.submit runs on a distributed cluster (the workers write the files): "
            "start one first, e.g. `from distributed import Client; Client()` (a LocalCluster "
            "on this machine) or your cluster's Client"
        ) from None


def _run(dask_client: Any, ddf: Any, task: SubmitTask, progress: bool) -> list[PartPrep]:
    """Every partition's pass on the workers, back in partition order."""
    import dask
    from distributed import as_completed
    from tqdm.auto import tqdm

    prepare_task = dask.delayed(prepare_partition, pure=False)
    tasks = [prepare_task(part, task, i) for i, part in enumerate(ddf.to_delayed())]
    futures = dask_client.compute(tasks)
    bar = tqdm(total=len(futures), desc="batch prepare", unit="partition", disable=not progress)
    try:
        for _ in as_completed(futures):
            bar.update(1)
        results: list[PartPrep] = dask_client.gather(futures)
    except BaseException:
        dask_client.cancel(futures)
        raise
    finally:
        bar.close()
    return sorted(results, key=lambda p: p.number)


def _check_shared(parts: Sequence[PartPrep], staging: Path) -> None:
    """Raise when the workers' files are not where this process looks (workers on other
    machines, the cache folder not shared): better now than a missing file at upload."""
    missing = [s.path for p in parts for s in p.prep.shards if s.path and not s.path.exists()]
    if missing:
        raise RuntimeError(
            f"the workers wrote {len(missing)} batch file(s) under {staging}, which this "
            "process cannot see: ddf.vision.submit needs the cache folder (cache=...) on "
            "storage the workers and this process share (one machine, or a mounted folder)"
        )


def merge(
    parts: Sequence[PartPrep],
    limits: BatchLimits,
    plan: Plan,
    directory: Path | None,
    *,
    first_seq: int,
    covered: set[str] | frozenset[str] = frozenset(),
) -> Preparation:
    """The partitions' passes as one (what ``prepare`` on the computed frame would record):
    rows on the frame's positions; an image that an earlier partition also sends dropped from
    the later file (a repeat, sent once); neighbouring files that fit in one together (each
    partition's last file is part-filled) joined, so the job uploads about as many files as
    from pandas; the files numbered from ``first_seq`` in partition order, in ``directory``.
    Sets ``plan.index`` to the frame's index."""
    plan.index = parts[0].index.append([p.index for p in parts[1:]]) if parts else plan.index
    first: dict[str, int] = {}
    drop: dict[tuple[int, int], dict[str, int]] = defaultdict(dict)  # file -> key -> bytes
    rows: list[tuple[PlannedRow, tuple[int, int | None]]] = []  # (row, its partition's file)
    offset = 0
    for part in parts:
        for row in part.prep.rows:
            where, status, seq = offset + row.pos, row.status, row.seq
            if status == "send" and row.key is not None:
                if row.key in covered:
                    status = "covered"
                elif first.setdefault(row.key, where) != where:
                    status = "repeat"
                if status != "send":
                    assert seq is not None  # a line was written for it: drop it
                    drop[(part.number, seq)][row.key] = row.request_bytes or 0
                    seq = None
            moved = row._replace(pos=where, status=status, seq=None)
            rows.append((moved, (part.number, seq)))
        offset += len(part.index)
    kept: list[tuple[tuple[int, int], Shard]] = []
    for part in parts:
        for shard in part.prep.shards:
            old = (part.number, shard.seq)
            left = without(shard, drop.get(old, {}), limits.endpoint)
            if left is not None:
                kept.append((old, left))
    seqs: dict[tuple[int, int], int] = {}
    prep = Preparation(shards=[])
    for group in _packs(kept, limits):
        seq = first_seq + len(prep.shards)
        prep.shards.append(join([s for _, s in group], seq, directory))
        seqs.update((old, seq) for old, _ in group)
    for row, (number, seq) in rows:
        planned = row if seq is None else row._replace(seq=seqs.get((number, seq)))
        prep.count(planned.status, planned.estimated_tokens, planned.request_bytes)
        prep.rows.append(planned)
    return prep


def _packs(
    shards: list[tuple[tuple[int, int], Shard]], limits: BatchLimits
) -> list[list[tuple[tuple[int, int], Shard]]]:
    """Consecutive files grouped, each group within the limits of one file."""
    groups: list[list[tuple[tuple[int, int], Shard]]] = []
    lines = nbytes = 0
    for item in shards:
        shard = item[1]
        if groups and fits(limits, lines + shard.lines, nbytes + shard.nbytes):
            groups[-1].append(item)
            lines, nbytes = lines + shard.lines, nbytes + shard.nbytes
        else:
            groups.append([item])
            lines, nbytes = shard.lines, shard.nbytes
    return groups
