"""``ddf.vision.ask``: ``ask`` per partition on the workers, one gate and one set of claims.

On the client, ``ask_frame`` checks the call as ``ask`` would (the template against the
columns, the schema, the options: it raises before anything runs), computes the result's
``meta`` by planning an empty frame with the pandas code itself (so the dtypes cannot drift),
installs the coordinator on the scheduler, ships the key and storage options to the workers
(``visionkit.dask.secrets``) and returns a lazy frame on the same index and divisions.

On a worker, ``ask_partition`` runs ``visionkit.query.run.Run`` unchanged on its partition,
with ``ClusterGate`` (the coordinator's window and pacing) instead of a process-local gate and
``ClusterCache`` (the worker's cache file, the coordinator's claims). Each partition's
``attrs["usage"]`` is summed per call by the coordinator: ``vk.dask.usage(result)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..errors import BudgetExceeded
from ..query.estimate import dry_run_frame
from ..query.options import AskOptions
from ..query.plan import make_plan
from ..query.run import Run
from ..query.stopping import run_loop
from .cache import ClusterCache, cache_path
from .limiter import ClusterGate, ensure_coordinator, link, owner_id
from .out import check_out, conform, read_part, rows_fingerprint, write_part
from .relay import in_task, start_call
from .secrets import ClientSpec, share_client, share_storage_options

__all__ = ["AskJob", "ask_frame", "ask_partition", "usage"]


@dataclass(frozen=True)
class AskJob:
    """Everything a partition task needs, and nothing secret (it is in the task graph)."""

    prompt: str
    options: AskOptions  # client=None, cache=None: see ``client`` and ``cache``
    client: ClientSpec | None  # None for a dry run (nothing is sent)
    cache: str | None  # "" = the worker's default file; None = no cache
    gate: str
    job: str
    columns: tuple[str, ...]
    meta: pd.DataFrame
    out: str | None = None
    fingerprint: str = ""


def _meta(ddf: Any, prompt: str, options: AskOptions) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """The result's empty frame, from the pandas path planning an empty partition."""
    empty = ddf._meta.iloc[:0]
    quiet = options.replace(client=None, cache=False, progress=False, budget_tokens=None)
    with make_plan(empty, prompt, quiet, connect_now=False) as plan:
        frame = dry_run_frame(plan) if options.dry_run else Run(plan).frame()
        columns = tuple(plan.columns)
    frame.attrs = {}
    return frame, columns


def _fingerprint(prompt: str, options: AskOptions, spec: ClientSpec | None) -> dict[str, Any]:
    schema = None
    if options.schema is not None:
        from ..query.schema import make_schema

        made = make_schema(options.schema)
        schema = made.json_schema if made is not None else None
    return {
        "prompt": prompt,
        "provider": spec.provider.name if spec else None,
        "base_url": spec.base_url if spec and spec.provider.name != "offline" else None,
        "model": spec.model if spec else None,
        "system": options.system,
        "schema": schema,
        "image_column": options.image_column,
        "max_side": options.max_side,
        "request_options": dict(options.request_options),
    }


def ask_frame(ddf: Any, prompt: str, options: AskOptions, out: str | None = None) -> Any:
    """The lazy ``ddf.vision.ask`` (see the module docstring)."""
    from distributed import get_client

    from ..query.client import connect, default_client

    if options.dry_run and out is not None:
        raise ValueError("out= keeps answers; a dry run has none (drop out= or dry_run=True)")
    meta, columns = _meta(ddf, prompt, options)
    try:
        dask_client = get_client()
    except ValueError:
        raise RuntimeError(
            "ddf.vision.ask runs on a distributed cluster so that all workers share one rate "
            "limit: start one first, e.g. `from distributed import Client; Client()` (a "
            "LocalCluster on this machine) or your cluster's Client"
        ) from None
    ensure_coordinator(dask_client)
    share_storage_options(dask_client)
    spec = None
    if not options.dry_run:
        client = options.client
        if isinstance(client, str):
            client = connect(client)
        client = (client or default_client()).with_model(options.model)
        spec = share_client(dask_client, client)
        limits = options.requests_per_minute, options.tokens_per_minute
        base = client.rate_limits
        rpm = limits[0] if limits[0] is not None else (base.requests_per_minute if base else None)
        tpm = limits[1] if limits[1] is not None else (base.tokens_per_minute if base else None)
        dask_client.sync(
            dask_client.scheduler.visionkit_gate_open,
            name=spec.gate_name,
            concurrency=options.concurrency,
            requests_per_minute=rpm,
            tokens_per_minute=tpm,
        )
    described = _fingerprint(prompt, options, spec)
    fingerprint = hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode())
    job = AskJob(
        prompt=prompt,
        options=options.replace(client=None, cache=None, progress=False, budget_tokens=None),
        client=spec,
        cache=cache_path(options.cache),
        gate=spec.gate_name if spec else "",
        job=start_call(),  # also the call whose warnings the workers relay
        columns=columns,
        meta=meta,
        out=out,
        fingerprint=fingerprint.hexdigest(),
    )
    if out is not None:
        check_out(out, job.fingerprint, described)
    if options.budget_tokens is not None and not options.dry_run:
        _check_budget(ddf, job, int(options.budget_tokens))
    result = ddf.map_partitions(ask_partition, job, meta=meta, enforce_metadata=False)
    result._visionkit_job = job.job
    return result


def _check_budget(ddf: Any, job: AskJob, budget: int) -> None:
    """``budget_tokens=``: the dry run's total over the cluster, before anything is sent."""
    dry = dataclasses.replace(
        job,
        options=job.options.replace(dry_run=True),
        client=None,
        out=None,
        meta=_meta(ddf, job.prompt, job.options.replace(dry_run=True))[0],
    )
    est = ddf.map_partitions(ask_partition, dry, meta=dry.meta, enforce_metadata=False)
    total = int(est["estimated_tokens"].sum().compute())
    if total > budget:
        raise BudgetExceeded(
            f"the estimate for this call is {total:,} tokens, over budget_tokens={budget:,}; "
            "nothing was sent (partitions price repeats of an image in other partitions "
            "separately, so this may overstate)"
        )


def ask_partition(
    part: pd.DataFrame, job: AskJob, partition_info: dict[str, Any] | None = None
) -> pd.DataFrame:
    """One partition's ``ask`` (a task on a worker); with ``out=``, written as it finishes."""
    with in_task(job.job):
        return _partition(part, job, partition_info)


def _partition(
    part: pd.DataFrame, job: AskJob, partition_info: dict[str, Any] | None
) -> pd.DataFrame:
    number = None if partition_info is None else partition_info.get("number")
    if job.out is None or number is None or job.options.dry_run:
        return conform(_run(part, job), job.meta)
    rows = rows_fingerprint(part, job.columns)
    previous = read_part(job.out, number, job.fingerprint, rows)
    if previous is not None:
        previous = conform(previous, job.meta)
        failed = previous["error"].notna().to_numpy()
        if not failed.any():
            return previous
        redo = conform(_run(part[failed], job), job.meta)
        result = previous.copy()
        result.loc[failed, :] = redo.to_numpy()  # positions: the index may repeat labels
        result = conform(result, job.meta)
    else:
        result = conform(_run(part, job), job.meta)
    write_part(job.out, number, result, job.fingerprint, rows)
    return result


def _run(part: pd.DataFrame, job: AskJob) -> pd.DataFrame:
    """``ask`` on one partition, through the cluster's gate and claims."""
    options = job.options
    if options.dry_run:  # nothing is sent: the worker's cache file says what is cached
        local = False if job.cache is None else (job.cache or True)
        with make_plan(part, job.prompt, options.replace(cache=local), connect_now=False) as plan:
            return dry_run_frame(plan)
    assert job.client is not None
    line = link()
    owner = owner_id(uuid.uuid4().hex[:12])
    cache = ClusterCache.for_worker(job.cache, line, job.job)
    client = job.client.connect()
    try:
        with make_plan(part, job.prompt, options.replace(client=client, cache=cache)) as plan:
            gate = ClusterGate(line, job.gate, owner, options.concurrency)
            run = Run(plan, bar=None, gate=gate)
            run.owner = owner  # claims named by worker address: freed if the worker dies
            try:
                run_loop(run.main(reraise_cancel=False))
            finally:
                gate.close()
            frame = run.frame()
            line.send("report", job=job.job, usage=frame.attrs.get("usage", {}))
            return frame
    finally:
        cache.close()


def usage(data: Any) -> dict[str, Any]:
    """The totals of a computed ``ddf.vision.ask`` over its partitions (requests, cache hits,
    retries, 429s, tokens...), as the coordinator summed them: ``vk.dask.usage(answers)``."""
    from distributed import get_client

    job = getattr(data, "_visionkit_job", None)
    if job is None:
        raise ValueError("usage() takes the frame ddf.vision.ask returned")
    dask_client = get_client()
    found: dict[str, Any] = dask_client.sync(dask_client.scheduler.visionkit_job_usage, job=job)
    return found
