"""What ``df.vision.submit`` (``visionkit.batch.submit``) and ``ddf.vision.submit``
(``visionkit.dask.submit``) share: the options and settings of a call, the job's id, the planning
pass (``prepare``: ``ask``'s planner, the manifest's live keys, the files cut as the rows are
planned), its rows (``PlannedRow``) and dry-run table, and the steps around it -- ``check_ready``,
``open_job`` (record the job), ``launch`` (check the budget, upload).

The pass: planning is ``ask``'s own (``visionkit.query.plan``): the same template, schema,
per-row checks, encoding and cache key, so a row already answered in the cache is not
submitted, an image repeated in the job is sent once, and a row that would break the provider's
rules is that row's error, never a line in a file. The one thing added per row (in the
planner's ``finish`` hook) is the manifest's question, asked once per pass: is this key already
in a file or batch not yet collected? Then it is not encoded or submitted again. Files are
written to ``<cache dir>/batch-files/<job id>/`` as the rows are planned (memory stays bounded),
cut by the job's bytes and requests per file (``visionkit.batch.limits``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import shutil
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from ..errors import BudgetExceeded
from ..providers import BatchLimits, money, money_fields
from ..query.cache import Cache
from ..query.options import AskOptions
from ..query.plan import Plan, RowPlan, plan_rows, prepare_request_for
from ..query.progress import progress_bar
from .job import BatchJob, interrupted_in_notebook
from .limits import BatchSettings, limits_json
from .manifest import JobRow, Manifest
from .packing import pack_key
from .shards import Shard, ShardWriter
from .upload import upload_pending

__all__ = [
    "BatchAskOptions",
    "PlannedRow",
    "Preparation",
    "batch_arguments",
    "cell_hashes",
    "check_ready",
    "dry_run_frame",
    "job_directory",
    "job_identity",
    "launch",
    "open_job",
    "prepare",
]

_ROW_CHUNK = 1000  # job rows recorded per transaction


@dataclass(frozen=True)
class BatchAskOptions(AskOptions):
    """``AskOptions`` plus ``compact`` encoding, which reaches ``encode_image`` (and the cache
    key) through ``encode_options``, the planner's own channel for encoding settings."""

    compact: bool = False

    @property
    def encode_options(self) -> dict[str, Any]:
        options = super().encode_options
        return {**options, "compact": True} if self.compact else options


def batch_arguments(arguments: Mapping[str, Any]) -> tuple[BatchAskOptions, BatchSettings]:
    """``submit``'s arguments (its ``locals()``, or the Dask path's bound arguments) as the
    options ``ask`` shares and the batch-only settings, each picked up by its own name."""
    shared = {f.name for f in dataclasses.fields(BatchAskOptions)}
    options = BatchAskOptions(**{k: v for k, v in arguments.items() if k in shared})
    settings = BatchSettings(
        **{f.name: arguments[f.name] for f in dataclasses.fields(BatchSettings)}
    )
    return options, settings


def _cell_identity(cell: Any) -> str:
    """What names an image cell in the job id: a path or URL as it is, bytes by their digest.
    Other cells (PIL images) by ``repr``: a new session makes a new job id for them, but their
    rows are still never submitted twice (coverage is decided by each row's cache key)."""
    if isinstance(cell, (bytes, bytearray, memoryview)):
        return "sha256:" + hashlib.sha256(cell).hexdigest()
    if isinstance(cell, str):
        return cell
    return "" if cell is None else repr(cell)


_HASH_BLOCK = 16_384  # rows hashed at once: their cells as Python objects, then dropped


def cell_hashes(df: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """One 64-bit hash per row of the image cells and the index label. Rows hash alone, so
    the hashes of a frame's pieces (a Dask frame's partitions), joined, are the frame's --
    which is how a large frame is hashed here, a block of rows at a time (its cells as
    Python objects cost ~500 bytes a row while they are hashed)."""
    blocks = [np.empty(0, dtype=np.uint64)]
    for start in range(0, len(df), _HASH_BLOCK):
        part = df.iloc[start : start + _HASH_BLOCK]
        cells = pd.DataFrame(
            {c: [_cell_identity(x) for x in part[c]] for c in columns}, index=part.index
        )
        blocks.append(pd.util.hash_pandas_object(cells, index=True).to_numpy())
    return np.concatenate(blocks)


def job_identity(plan: Plan, prompt: str, row_hashes: Iterable[np.ndarray]) -> str:
    """The job id: a hash of the arguments that decide what the job sends -- the recipe and
    every row's ``cell_hashes``, in row order."""
    h = hashlib.sha256()
    name, url = plan.client.cache_identity if plan.client else (plan.provider.name, None)
    recipe = {
        "provider": name,
        "base_url": url,
        "model": plan.model,
        "prompt": prompt,
        "system": plan.system,
        "schema": plan.schema.json_schema if plan.schema else None,
        "params": plan.params,
        "encode": plan.encode_options,
        "columns": plan.columns,
    }
    h.update(json.dumps(recipe, sort_keys=True, default=repr).encode())
    for hashes in row_hashes:
        h.update(hashes.tobytes())
    return "job-" + h.hexdigest()[:20]


class PlannedRow(NamedTuple):
    """One row of a planning pass as a dry run shows it and the Dask path merges it."""

    pos: int
    label: Any
    key: str | None
    status: str  # send, hit, repeat, covered, error (or reused: a hit reported as bought)
    error: str | None
    estimated_tokens: int | None
    request_bytes: int | None
    seq: int | None  # the file the row's line went to (send), else None


@dataclass
class Preparation:
    """What one planning pass found: totals, the files written, and (for a dry run) the rows."""

    shards: list[Shard]
    counts: dict[str, int] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(
            ("send", "hit", "repeat", "covered", "error", "estimated_tokens", "request_bytes"), 0
        )
    )
    rows: list[PlannedRow] = dataclasses.field(default_factory=list)  # ``keep_rows`` only

    def count(self, status: str, tokens: int | None, nbytes: int | None) -> None:
        self.counts["hit" if status == "reused" else status] += 1  # reused: a hit, reported
        if status == "send":
            self.counts["estimated_tokens"] += tokens or 0
            self.counts["request_bytes"] += nbytes or 0

    def totals(self) -> dict[str, int]:
        c = self.counts
        return {
            "requests": c["send"],
            "cache_hits": c["hit"],
            "repeats": c["repeat"],
            "covered": c["covered"],
            "failed": c["error"],
            "estimated_tokens": c["estimated_tokens"],
            "request_bytes": c["request_bytes"],
        }


def prepare(
    plan: Plan,
    limits: BatchLimits,
    manifest: Manifest | None,
    directory: Path | None,
    *,
    job_id: str | None,
    first_seq: int,
    progress: bool,
    keep_rows: bool,
) -> Preparation:
    """One pass over the rows: plan each (as ``ask`` does), write the lines to send.

    ``directory=None`` writes nothing (a dry run's plan); ``manifest`` (optional) answers which
    keys are already submitted and records the job's rows and files. ``submit`` is the entry
    point; this is the pass itself, for benchmarks and the Dask path.
    """
    covered: set[int] = set()
    lock = threading.Lock()
    live = manifest.live_keys() if manifest is not None else set()  # one query, not one a row

    def finish(plan: Plan, row: RowPlan) -> RowPlan:
        if row.key is not None and pack_key(row.key) in live:
            row.images = None  # already in a file or batch of this cache's jobs: not again
            with lock:
                covered.add(row.pos)
            return row
        return prepare_request_for(plan, row)

    writer = ShardWriter(
        directory,
        max_bytes=limits.max_file_bytes,
        max_requests=limits.max_requests_per_file,
        endpoint=limits.endpoint,
        on_close=((lambda shard: _stage(manifest, job_id, shard)) if manifest and job_id else None),
        first_seq=first_seq,
        keep_keys=job_id is None,  # recorded as it goes: a file's keys are its rows' (~200 MB
        # for a million rows if kept); a pass for the Dask path or a dry run keeps them
    )
    prep = Preparation(shards=writer.closed)
    pending: list[JobRow] = []
    hits: dict[str, tuple[str, int | None, str | None]] = {}
    bar = progress_bar(plan.n, desc="batch prepare", enabled=progress)
    try:
        for row in plan_rows(plan, finish=finish, on_row=lambda _: bar.update(1)):
            shard_seq = None
            attempts = batch_id = None
            if row.error is not None:
                status = "error"
            elif row.hit is not None:
                status = "hit"
                if job_id is not None:  # a submission, not a dry run: the row is used now
                    status, attempts, batch_id = _hit_status(plan, row, hits)
            elif row.repeat_of is not None:
                status = "repeat"
            elif row.pos in covered or row.request is None:
                status = "covered"
            else:
                status = "send"
                assert row.key is not None
                try:
                    shard = writer.add(row.key, row.request.payload, row.estimated_tokens)
                    shard_seq = shard.seq
                except ValueError as exc:
                    status, row.error = "error", f"RequestError: {exc}"
            record = PlannedRow(
                row.pos,
                row.label,
                row.key,
                status,
                row.error,
                row.estimated_tokens,
                row.request_bytes,
                shard_seq,
            )
            row.request = None
            prep.count(status, row.estimated_tokens, row.request_bytes)
            if keep_rows:
                prep.rows.append(record)
            if manifest is not None and job_id is not None:
                pending.append(
                    JobRow(
                        record.pos,
                        record.label,
                        record.key,
                        record.status,
                        record.error,
                        record.estimated_tokens,
                        attempts=attempts,
                        batch_id=batch_id,
                        prompt=str(plan.prompts[row.pos]),
                        images=row.digests or None,
                        seq=shard_seq,
                    )
                )
                if len(pending) >= _ROW_CHUNK:
                    manifest.add_rows(job_id, pending)
                    pending.clear()
        writer.close()
        if manifest is not None and job_id is not None and pending:
            manifest.add_rows(job_id, pending)
    except BaseException:
        writer.discard()
        raise
    finally:
        bar.close()
    return prep


def _hit_status(
    plan: Plan, row: RowPlan, hits: dict[str, tuple[str, int | None, str | None]]
) -> tuple[str, int | None, str | None]:
    """How a row answered at submit (cache or recording) is reported: (status, attempts,
    batch id). ``hit`` -- or, with a recording on, ``reused`` (bought: its recorded attempts
    and batch) the first time this process uses the answer, as ``ask`` reports it, so the
    recorded job and its replay show the same; a row repeating one of the job's earlier rows
    is reported as that row (``hits``)."""
    assert row.key is not None and row.hit is not None
    if row.key not in hits:
        recording = plan.recording
        if recording is not None and plan.used(row, row.hit):
            hits[row.key] = ("reused", recording.attempts(row.key), recording.batch_id(row.key))
        else:
            hits[row.key] = ("hit", None, None)
    return hits[row.key]


def _stage(manifest: Manifest | None, job_id: str | None, shard: Shard) -> None:
    """Record a closed file as ``staged``: known, but not uploaded until the pass is over."""
    assert manifest is not None and job_id is not None and shard.path is not None
    manifest.add_shard(
        shard.shard_id, job_id, shard.seq, shard.path, shard.lines, shard.nbytes, state="staged"
    )


def dry_run_frame(
    plan: Plan, prep: Preparation, limits: BatchLimits, interval: float
) -> pd.DataFrame:
    """A dry run's table: ``ask``'s dry-run columns plus each row's ``file``, with the plan
    (files, bytes, upload time) in ``attrs``."""
    index = plan.index
    rows = prep.rows
    out = pd.DataFrame(
        {
            "estimated_tokens": pd.array([r.estimated_tokens for r in rows], dtype="Int64"),
            "request_bytes": pd.array([r.request_bytes for r in rows], dtype="Int64"),
            "cached": pd.array([r.status == "hit" for r in rows], dtype=bool),
            "error": pd.Series([r.error for r in rows], index=index, dtype=object),
            "file": pd.array([r.seq for r in rows], dtype="Int64"),
        },
        index=index,
    )
    files = pd.DataFrame(
        {
            "file": [s.seq for s in prep.shards],
            "requests": [s.lines for s in prep.shards],
            "bytes": [s.nbytes for s in prep.shards],
        }
    )
    n = len(prep.shards)
    out.attrs["usage"] = {
        "rows": plan.n,
        **prep.totals(),
        "files": n,
        "file_bytes": int(files["bytes"].sum()) if n else 0,
        "upload_seconds": max(0, n - 1) * interval,
        "max_file_bytes": limits.max_file_bytes,
        "max_requests_per_file": limits.max_requests_per_file,
        "provider": plan.provider.name,
        "model": plan.model,
        "dry_run": True,
    }
    usage = out.attrs["usage"]  # prompts at the Batch API's price, where it is known
    usage.update(
        money_fields(
            plan.provider,
            plan.model,
            usage["estimated_tokens"],
            batch=True,
            name="estimated_cost_usd",
        )
    )
    out.attrs["files"] = files
    return out


def check_ready(plan: Plan) -> None:
    """Before any line is written: raise without an answer cache or a Batch API, and for
    ``connect(base_url=...)`` without ``model=`` ask the server for its one model (every line
    names the model)."""
    if plan.cache is None:
        raise ValueError(
            "batch jobs need the answer cache (results arrive later, maybe in another "
            "session): pass cache=True or a path"
        )
    assert plan.client is not None
    sdk = plan.client.batch_sdk()
    if plan.model is None:
        models = [m.id for m in sdk.models.list()]
        if len(models) != 1:
            raise ValueError(f"the server serves {len(models)} models; pass model=...")
        plan.model = models[0]


def job_directory(plan: Plan, job_id: str) -> Path:
    """Where a job's input files are written: ``<cache dir>/batch-files/<job id>/``."""
    assert plan.cache is not None
    return plan.cache.path.parent / "batch-files" / job_id


def open_job(
    plan: Plan,
    manifest: Manifest,
    job_id: str,
    prompt: str,
    metadata: Mapping[str, str] | None,
    limits: BatchLimits,
) -> None:
    """Record the job (or find it again) before a planning pass records its rows and files;
    ``limits``: what its files are cut by (rows sent again later are cut the same way)."""
    assert plan.client is not None and plan.cache is not None
    manifest.save_job(
        job_id,
        provider=plan.provider.name,
        base_url=plan.client.base_url,
        batch_base_url=plan.client.batch_base_url,
        model=plan.model,
        prompt=prompt,
        system=plan.system,
        identity=json.dumps(plan.client.cache_identity),
        schema=json.dumps(plan.schema.json_schema) if plan.schema else None,
        cache_path=str(plan.cache.path),
        metadata=json.dumps(dict(metadata or {})),
        limits=json.dumps(limits_json(limits)),
    )
    # A previous pass cut short (or refused by the budget) left staged files: drop them. And
    # this pass plans every row still missing: rows a collected batch marked to be sent again
    # by a wait (visionkit.batch.resend) are this pass's now; its kept input file goes.
    for old in manifest.shards(job_id):
        if old["state"] == "staged":
            Path(old["path"]).unlink(missing_ok=True)
            manifest.update_shard(old["shard_id"], state="lost")
        elif old["state"] == "collected" and old["resend"]:
            Path(old["path"]).unlink(missing_ok=True)
            manifest.update_shard(old["shard_id"], resend=0)


def launch(
    plan: Plan, prep: Preparation, manifest: Manifest, job_id: str, settings: BatchSettings
) -> BatchJob:
    """After a planning pass recorded its rows and staged its files: check the budget (over
    it, the files are dropped and nothing is uploaded), then upload at the profile's pace."""
    assert plan.client is not None and plan.cache is not None
    limits = settings.limits(plan.provider.batch)
    budget_tokens, progress = plan.options.budget_tokens, plan.options.progress
    totals = prep.totals()
    if budget_tokens is not None and totals["estimated_tokens"] > budget_tokens:
        for shard in prep.shards:
            if shard.path is not None:
                shard.path.unlink(missing_ok=True)
            manifest.update_shard(shard.shard_id, state="lost")
        usd = money(plan.provider, plan.model, totals["estimated_tokens"], batch=True)
        dollars = "" if usd is None else f" (about ${usd:,.2f} at {plan.model}'s batch price)"
        raise BudgetExceeded(
            f"the estimate is {totals['estimated_tokens']:,} tokens{dollars} for "
            f"{totals['requests']:,} requests (prompt and images as encoded, "
            f"{plan.provider.name} formula; cache hits, repeated images and rows already "
            f"submitted are free), over budget_tokens={budget_tokens:,}; nothing was "
            "uploaded. dry_run=True shows the same estimate per row."
        )
    staged = {s["shard_id"] for s in manifest.shards(job_id) if s["state"] == "staged"}
    for shard in prep.shards:  # (a file uploaded meanwhile, by the Dask path, is left as it is)
        if shard.shard_id in staged:
            manifest.update_shard(shard.shard_id, state="written")
    cache_store = Cache(plan.cache.path)  # the job's own handle: the plan closes its
    job = BatchJob(job_id, manifest, cache_store, plan.client)
    pending = [s for s in manifest.shards(job_id) if s["state"] in ("written", "uploaded")]
    bar = progress_bar(len(pending), desc="batch upload", enabled=progress)
    bar.unit = "file"
    try:
        upload_pending(
            job_id,
            manifest,
            plan.client.batch_sdk(),
            plan.client.batch_base_url or plan.client.base_url,
            limits,
            interval=limits.upload_interval,
            metadata=dict(settings.metadata or {}),
            bar=bar,
        )
    except KeyboardInterrupt:
        if not interrupted_in_notebook(
            f"stopped uploading batch job {job_id}: the files uploaded and batches created "
            "so far are recorded; submit the same call again to continue."
        ):
            raise
        return job
    finally:
        bar.close()
    directory = job_directory(plan, job_id)
    with contextlib.suppress(OSError):
        if directory.exists() and not any(directory.iterdir()):
            shutil.rmtree(directory)
    return job
