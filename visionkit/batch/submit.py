"""``submit``: plan a job exactly as ``ask`` plans a run, write it as JSONL files, upload them.

The steps are the ones ``ddf.vision.submit`` shares (``visionkit.batch.shared``): planning is
``ask``'s own, so a row already answered in the cache is not submitted, an image repeated in
the job is sent once, a row that would break the provider's rules is that row's error, and a
key already in a file or batch not yet collected is not encoded or submitted again. So calling
``submit`` again with the same arguments continues the same job -- files not uploaded yet are
uploaded, nothing running is sent twice -- and once a batch has expired, been cancelled or
failed lines, only the rows still without an answer are sent (``job.wait()`` does that itself:
``visionkit.batch.resend``). Two processes submitting the same job at once take turns
(``visionkit.batch.claims``): the second finds the first one's files and attaches to its batches.

The job's id is a hash of the arguments (the provider and model, prompt, system prompt, schema,
options, the image columns and the frame's index and image cells): the same call gives the same
job. Files are written to ``<cache dir>/batch-files/<job id>/`` as the rows are planned (memory
stays bounded), cut by the profile's bytes and requests per file, recorded in the manifest
when the pass is over (after ``budget_tokens`` is checked: a job over budget uploads nothing)
and uploaded one by one at the profile's pace (``visionkit.batch.upload``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

import pandas as pd

from ..query.plan import make_plan
from .claims import job_claim
from .manifest import Manifest, manifest_path
from .replayed import replay_job
from .shared import (
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

if TYPE_CHECKING:
    from ..query.cache import Cache
    from ..query.client import Client
    from .protocol import Job

__all__ = ["submit"]


@overload
def submit(
    data: pd.DataFrame,
    prompt: str,
    *,
    client: Client | str | None = ...,
    model: str | None = ...,
    image_column: str | Sequence[str] | None = ...,
    system: str | None = ...,
    schema: Any = ...,
    cache: bool | str | os.PathLike[str] | Cache | None = ...,
    max_side: int | None = ...,
    max_file_bytes: int | None = ...,
    max_requests_per_file: int | None = ...,
    upload_interval: float | None = ...,
    metadata: Mapping[str, str] | None = ...,
    compact: bool = ...,
    dry_run: Literal[False] = ...,
    budget_tokens: int | None = ...,
    progress: bool = ...,
    **request_options: Any,
) -> Job: ...


@overload
def submit(
    data: pd.DataFrame,
    prompt: str,
    *,
    client: Client | str | None = ...,
    model: str | None = ...,
    image_column: str | Sequence[str] | None = ...,
    system: str | None = ...,
    schema: Any = ...,
    cache: bool | str | os.PathLike[str] | Cache | None = ...,
    max_side: int | None = ...,
    max_file_bytes: int | None = ...,
    max_requests_per_file: int | None = ...,
    upload_interval: float | None = ...,
    metadata: Mapping[str, str] | None = ...,
    compact: bool = ...,
    dry_run: Literal[True],
    budget_tokens: int | None = ...,
    progress: bool = ...,
    **request_options: Any,
) -> pd.DataFrame: ...


@overload
def submit(
    data: pd.DataFrame,
    prompt: str,
    *,
    client: Client | str | None = ...,
    model: str | None = ...,
    image_column: str | Sequence[str] | None = ...,
    system: str | None = ...,
    schema: Any = ...,
    cache: bool | str | os.PathLike[str] | Cache | None = ...,
    max_side: int | None = ...,
    max_file_bytes: int | None = ...,
    max_requests_per_file: int | None = ...,
    upload_interval: float | None = ...,
    metadata: Mapping[str, str] | None = ...,
    compact: bool = ...,
    dry_run: bool = ...,
    budget_tokens: int | None = ...,
    progress: bool = ...,
    **request_options: Any,
) -> Job | pd.DataFrame: ...


def submit(
    data: pd.DataFrame,
    prompt: str,
    *,
    client: Client | str | None = None,
    model: str | None = None,
    image_column: str | Sequence[str] | None = None,
    system: str | None = None,
    schema: Any = None,
    cache: bool | str | os.PathLike[str] | Cache | None = True,
    max_side: int | None = None,
    max_file_bytes: int | None = None,
    max_requests_per_file: int | None = None,
    upload_interval: float | None = None,
    metadata: Mapping[str, str] | None = None,
    compact: bool = False,
    dry_run: bool = False,
    budget_tokens: int | None = None,
    progress: bool = True,
    **request_options: Any,
) -> Job | pd.DataFrame:
    """Submit one batch-API request per row (inference.net's Batch API: cheaper, unattended).

    Planned exactly as ``ask`` (same options, cache key and row errors); returns a
    ``BatchJob`` (``job.wait()``, ``job.result()``), or with ``dry_run=True`` a DataFrame
    like ``ask``'s dry run plus each row's ``file``, with ``attrs["usage"]`` holding the plan
    (files, bytes, ``upload_seconds`` at the profile's pace) and ``attrs["files"]`` the files.
    Calling it again with the same arguments continues the same job (see the module docs).

    Batch-only options: ``max_file_bytes``, ``max_requests_per_file`` and ``upload_interval``
    (seconds between uploads) override the provider profile's ``BatchLimits``; ``metadata``
    (up to 16 string pairs) is attached to each batch; ``compact=True`` encodes each image as
    small as it can be at the same token estimate (``encode_image(compact=True)``: fewer bytes
    to upload, a little JPEG quality lost; the answers are cached under their own key).
    """
    options, settings = batch_arguments(locals())
    with make_plan(data, prompt, options, connect_now=not dry_run) as plan:
        limits = settings.limits(plan.provider.batch)
        interval = limits.upload_interval
        if dry_run:
            path = manifest_path(plan.cache.path) if plan.cache is not None else None
            manifest = Manifest(path) if path is not None and path.exists() else None
            try:
                prep = prepare(
                    plan,
                    limits,
                    manifest,
                    None,
                    job_id=None,
                    first_seq=1,
                    progress=progress,
                    keep_rows=True,
                )
            finally:
                if manifest is not None:
                    manifest.close()
            return dry_run_frame(plan, prep, limits, interval)
        if plan.replaying:  # answered from the recording: nothing written, nothing sent
            job_id = job_identity(plan, prompt, [cell_hashes(data, plan.columns)])
            return replay_job(plan, job_id, progress=progress)
        check_ready(plan)
        assert plan.cache is not None
        manifest = Manifest(manifest_path(plan.cache.path))
        job_id = job_identity(plan, prompt, [cell_hashes(data, plan.columns)])
        with job_claim(manifest, job_id):  # one process submits a job at a time
            open_job(plan, manifest, job_id, prompt, metadata, limits)
            directory = job_directory(plan, job_id)
            prep = prepare(
                plan,
                limits,
                manifest,
                directory,
                job_id=job_id,
                first_seq=manifest.next_seq(job_id),
                progress=progress,
                keep_rows=False,
            )
            return launch(plan, prep, manifest, job_id, settings)
