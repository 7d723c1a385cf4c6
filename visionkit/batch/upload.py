"""Uploading a job's input files at the provider's pace and creating a batch for each.

Each step is recorded in the manifest the moment it returns (``file_id`` after the upload,
``batch_id`` after the batch is created), so a crash or an interrupt between them costs at most
a repeated upload, never a second batch for the same lines: a shard uploaded but without a
recorded batch first looks for a batch already made from its file (``batches.list``) and
adopts it. Uploads wait ``upload_interval`` seconds after the previous one to the same batch URL
(the time is kept in the manifest, so a new process waits too), and a 429 is answered by
waiting for its ``Retry-After``; the file is streamed from disk (an open file, not a path: the
openai SDK reads a path into memory whole) and kept until its batch is collected: rows the
batch leaves unanswered are sent again from it, and a batch refused for its size is split from
it (``visionkit.batch.resend``).

The calls that make something -- a file upload, a batch (which is billed), a cancel -- are sent
with the SDK's own retries off: its retry after a 5xx, a timeout or a dropped connection cannot
know whether the first call took effect, and a second batch on one file bills every line twice.
After such an unclear answer visionkit looks first -- for a batch on that input file, for an
uploaded file of the same name, size and purpose -- and sends again only when none is found.
What the server answers (ids, statuses, counts) is checked (``visionkit.batch.lines``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from ..providers import BatchLimits
from .lines import BatchState, batch_state, check_id
from .manifest import Manifest

__all__ = ["adopt", "create_batch", "unclear", "upload_pending"]

logger = logging.getLogger("visionkit")

_MAX_ATTEMPTS = 8
_LISTED = 1000  # files or batches looked through for one made by a lost answer


def _retry_after(exc: Any, default: float) -> float:
    from ..query.retry import headers_of, parse_retry_after

    value = parse_retry_after(headers_of(exc))
    return default if value is None else value


def unclear(exc: BaseException) -> bool:
    """Whether a failed call may still have taken effect: no answer (a timeout, a dropped
    connection) or a 5xx; a 4xx (a 429 included) is a refusal."""
    import openai

    if isinstance(exc, openai.APIConnectionError):
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


def _no_listing(exc: BaseException) -> bool:
    import openai

    return isinstance(exc, openai.APIStatusError) and exc.status_code in (404, 405)


def _find_upload(sdk: Any, path: Path, size: int) -> str | None:
    """An uploaded batch file with ``path``'s name and size (an upload whose answer was lost),
    or None (also when the server cannot list files: the file is then sent again, which costs
    storage, never a batch)."""
    try:
        for n, found in enumerate(sdk.files.list(purpose="batch")):
            if found.filename == path.name and found.bytes == size and found.purpose == "batch":
                return check_id(found.id, "a file id")
            if n >= _LISTED:
                break
    except Exception as exc:
        logger.info("could not list uploaded files (%s); uploading %s again", exc, path.name)
    return None


def _upload(sdk: Any, path: Path, interval: float) -> str:
    """Upload one input file; its file id."""
    import openai

    once = sdk.with_options(max_retries=0)
    size = path.stat().st_size
    for attempt in range(1, _MAX_ATTEMPTS + 1):
        try:
            with open(path, "rb") as f:
                return check_id(once.files.create(file=f, purpose="batch").id, "a file id")
        except openai.RateLimitError as exc:  # refused: nothing was stored
            if attempt == _MAX_ATTEMPTS:
                raise
            wait = _retry_after(exc, max(interval, 1.0))
            logger.info("upload refused with 429; waiting %.1f s as asked", wait)
            time.sleep(wait)
        except (openai.APIConnectionError, openai.APIStatusError) as exc:
            if not unclear(exc):
                raise
            found = _find_upload(sdk, path, size)
            if found is not None:
                logger.info("the upload of %s arrived (its answer was lost): %s", path, found)
                return found
            if attempt == _MAX_ATTEMPTS:
                raise
            time.sleep(min(60.0, 2.0**attempt))
    raise AssertionError("unreachable")


def adopt(sdk: Any, file_id: str) -> BatchState | None:
    """A batch already created from ``file_id`` (a create whose answer was lost), or None.

    Only a server without batch listing (404/405) counts as "none found": any other failure
    (a 429, a 5xx, a dropped connection) raises, so the file is not given a second, paid batch;
    the shard stays ``uploaded`` and the next ``submit`` looks again.
    """
    try:
        for n, batch in enumerate(sdk.batches.list(limit=100)):
            if batch.input_file_id == file_id:
                state = batch_state(batch.model_dump(warnings=False))
                if isinstance(state, str):
                    raise ValueError(f"the server's batch on file {file_id}: {state}")
                return state
            if n >= _LISTED:
                break
    except Exception as exc:
        if not _no_listing(exc):
            raise
    return None


def create_batch(
    sdk: Any, file_id: str, limits: BatchLimits, metadata: dict[str, str], *, look_first: bool
) -> BatchState:
    """Create the batch for an uploaded file, once: after an unclear answer the server is
    asked for a batch on that file before another create is sent. ``look_first``: ask before
    the first create too (a file uploaded by an earlier call, whose create may have happened)."""
    import openai

    found = adopt(sdk, file_id) if look_first else None
    if found is not None:
        return found
    once = sdk.with_options(max_retries=0)
    for attempt in range(1, _MAX_ATTEMPTS + 1):
        try:
            raw = once.batches.with_raw_response.create(
                input_file_id=file_id,
                endpoint=limits.endpoint,
                completion_window=limits.completion_window,
                metadata=metadata,
            )
            state = batch_state(json.loads(raw.text))
            if not isinstance(state, str):
                return state
            logger.warning("the answer to creating a batch does not fit (%s)", state)
        except openai.RateLimitError as exc:  # refused: nothing was made
            if attempt == _MAX_ATTEMPTS:
                raise
            time.sleep(_retry_after(exc, 2.0**attempt))
            continue
        except (openai.APIConnectionError, openai.APIStatusError) as exc:
            if not unclear(exc):
                raise
            logger.info("creating the batch for %s got no clear answer (%s)", file_id, exc)
            if attempt == _MAX_ATTEMPTS:
                raise
        except ValueError as exc:  # not JSON
            logger.warning("the answer to creating a batch does not fit (%s)", exc)
        # The batch may exist: look before creating another.
        found = adopt(sdk, file_id)
        if found is not None:
            return found
        if attempt == _MAX_ATTEMPTS:
            raise RuntimeError(f"could not create a batch for file {file_id}")
        time.sleep(min(60.0, 2.0**attempt))
    raise AssertionError("unreachable")


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
    deadline: float | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Upload every shard of the job not uploaded yet and create its batch; returns how many
    batches were created now. ``deadline`` (a ``time.monotonic()``, inside a wait): stop
    before a file whose pacing would pass it (the next wait or submit goes on), and give each
    call the time left. ``stop`` (set by another thread): stop before the next file, or while
    waiting for its turn; a file being uploaded gets its batch first."""
    created = 0
    for shard in manifest.shards(job_id):
        state = shard["state"]
        if state not in ("written", "uploaded"):
            continue
        if stop is not None and stop.is_set():
            break
        if deadline is not None:
            left = deadline - time.monotonic()
            pause = manifest.last_upload(batch_base_url) + interval - time.time()
            if left <= 0 or (state == "written" and pause >= left):
                break
            sdk = sdk.with_options(timeout=left)
        resumed = state == "uploaded"  # by an earlier call: its batch may exist already
        if state == "written":
            path = Path(shard["path"])
            if not path.exists():  # removed by hand: its rows are planned again next time
                manifest.update_shard(shard["shard_id"], state="lost")
                continue
            wait = manifest.last_upload(batch_base_url) + interval - time.time()
            while wait > 0:
                if bar is not None:
                    bar.set_postfix_str(f"next upload in {wait:.0f} s", refresh=True)
                if stop is None:
                    time.sleep(min(wait, 1.0))
                elif stop.wait(min(wait, 1.0)):
                    return created
                wait = manifest.last_upload(batch_base_url) + interval - time.time()
            file_id = _upload(sdk, path, interval)
            manifest.uploaded_now(batch_base_url)
            manifest.update_shard(shard["shard_id"], state="uploaded", file_id=file_id)
            state = "uploaded"
            shard["file_id"] = file_id
        if state == "uploaded":
            tags = {
                **(metadata or {}),
                "visionkit_job": job_id,
                "visionkit_shard": shard["shard_id"],
            }
            batch = create_batch(sdk, shard["file_id"], limits, tags, look_first=resumed)
            manifest.update_shard(
                shard["shard_id"],
                state="created",
                batch_id=batch.id,
                status=batch.status,
                total=batch.counts.total or shard["lines"],
            )
            created += 1  # the file stays until its batch is collected (visionkit.batch.resend)
            if bar is not None:
                bar.set_postfix_str(f"batch {batch.id}", refresh=False)
                bar.update(1)
    return created
