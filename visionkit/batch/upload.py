"""Uploading a job's input files at the provider's pace and creating a batch for each.

Each step is recorded in the manifest the moment it returns (``file_id`` after the upload,
``batch_id`` after the batch is created), so a crash or an interrupt between them costs at most
a repeated upload, never a second batch for the same lines: a shard uploaded but without a
recorded batch first looks for a batch already made from its file (``batches.list``) and
adopts it. Uploads wait ``upload_interval`` seconds after the previous one to the same batch URL
(the time is kept in the manifest, so a new process waits too), and a 429 is answered by
waiting for its ``Retry-After``; the file is streamed from disk (an open file, not a path: the
openai SDK reads a path into memory whole).
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from ..providers import BatchLimits
from .manifest import Manifest

__all__ = ["upload_pending"]

logger = logging.getLogger("visionkit")

_MAX_ATTEMPTS = 8


def _retry_after(exc: Any, default: float) -> float:
    from ..query.retry import headers_of, parse_retry_after

    value = parse_retry_after(headers_of(exc))
    return default if value is None else value


def _upload(sdk: Any, path: Path, interval: float) -> Any:
    import openai

    for attempt in range(1, _MAX_ATTEMPTS + 1):
        try:
            with open(path, "rb") as f:
                return sdk.files.create(file=f, purpose="batch")
        except openai.RateLimitError as exc:
            if attempt == _MAX_ATTEMPTS:
                raise
            wait = _retry_after(exc, max(interval, 1.0))
            logger.info("upload refused with 429; waiting %.1f s as asked", wait)
            time.sleep(wait)
        except (openai.APIConnectionError, openai.InternalServerError):
            if attempt == _MAX_ATTEMPTS:
                raise
            time.sleep(min(60.0, 2.0**attempt))
    raise AssertionError("unreachable")


def _adopt(sdk: Any, file_id: str) -> Any | None:
    """A batch already created from ``file_id`` (a create whose answer was lost), or None.

    Only a server without batch listing (404/405) counts as "none found": any other failure
    (a 429, a 5xx, a dropped connection) raises, so the file is not given a second, paid batch;
    the shard stays ``uploaded`` and the next ``submit`` looks again.
    """
    import openai

    try:
        for n, batch in enumerate(sdk.batches.list(limit=100)):
            if batch.input_file_id == file_id:
                return batch
            if n >= 500:
                break
    except openai.APIStatusError as exc:
        if exc.status_code not in (404, 405):
            raise
    return None


def upload_pending(
    job_id: str,
    manifest: Manifest,
    sdk: Any,
    batch_base_url: str,
    limits: BatchLimits,
    *,
    interval: float,
    metadata: dict[str, str] | None = None,
    bar: Any = None,
) -> int:
    """Upload every shard of the job not uploaded yet and create its batch; returns how many
    batches were created now."""
    created = 0
    for shard in manifest.shards(job_id):
        state = shard["state"]
        if state == "written":
            path = Path(shard["path"])
            if not path.exists():  # removed by hand: its rows are planned again next time
                manifest.update_shard(shard["shard_id"], state="lost")
                continue
            wait = manifest.last_upload(batch_base_url) + interval - time.time()
            while wait > 0:
                if bar is not None:
                    bar.set_postfix_str(f"next upload in {wait:.0f} s", refresh=True)
                time.sleep(min(wait, 1.0))
                wait = manifest.last_upload(batch_base_url) + interval - time.time()
            uploaded = _upload(sdk, path, interval)
            manifest.uploaded_now(batch_base_url)
            manifest.update_shard(shard["shard_id"], state="uploaded", file_id=uploaded.id)
            state = "uploaded"
            shard["file_id"] = uploaded.id
        if state == "uploaded":
            batch = _adopt(sdk, shard["file_id"])
            if batch is None:
                tags = {
                    **(metadata or {}),
                    "visionkit_job": job_id,
                    "visionkit_shard": shard["shard_id"],
                }
                batch = sdk.batches.create(
                    input_file_id=shard["file_id"],
                    endpoint=limits.endpoint,
                    completion_window=limits.completion_window,
                    metadata=tags,
                )
            counts = batch.request_counts
            manifest.update_shard(
                shard["shard_id"],
                state="created",
                batch_id=batch.id,
                status=batch.status,
                total=counts.total if counts else shard["lines"],
            )
            created += 1
            with contextlib.suppress(OSError):  # the provider has it now
                Path(shard["path"]).unlink()
            if bar is not None:
                bar.set_postfix_str(f"batch {batch.id}", refresh=False)
                bar.update(1)
    return created
