"""One owner per batch job at a time, across processes: two kernels submitting the same job (the
same job id, one cache folder) never both upload it and pay twice.

``job_claim(manifest, job_id)`` takes the job's claim in the manifest (``job_claims``: owner and
a lease, taken in one transaction) before ``submit`` records, writes or uploads anything, and
holds it -- a thread renews the lease every third of it -- until the submission is over. A
second process asking for the same job meanwhile waits for the claim to end (the owner finished:
its files are recorded, so this process finds every row already in a live file or answered, and
attaches to the owner's batches) or to lapse (the owner died: this process carries on where it
stopped, as ``submit`` always does). This mirrors the answer cache's claims on keys that keep
two ``ask`` runs from paying twice (``visionkit.query.cache``). ``wait()``'s resubmission of
missing rows takes the same claim, without waiting: another process holding it is resubmitting.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator

from ..errors import BatchWarning, warn
from .manifest import Manifest

__all__ = ["LEASE", "job_claim", "try_job_claim"]

logger = logging.getLogger("visionkit")

LEASE = 30.0  # seconds a job claim lives unless its owner renews it
_POLL = 0.2


def claim_job(
    manifest: Manifest, job_id: str, owner: str, lease: float
) -> tuple[str, float] | None:
    """Take the job for ``owner`` for ``lease`` seconds unless another owner's claim is live
    (one transaction); returns ``None`` when taken, else (the other owner, seconds its claim
    has left)."""
    with manifest.transaction() as db:
        now = time.time()
        held = db.execute(
            "SELECT owner, expires FROM job_claims WHERE job_id = ?", (job_id,)
        ).fetchone()
        if held is not None and held[0] != owner and held[1] > now:
            return str(held[0]), float(held[1]) - now
        db.execute(
            "INSERT OR REPLACE INTO job_claims (job_id, owner, expires) VALUES (?, ?, ?)",
            (job_id, owner, now + lease),
        )
        return None


def renew_job(manifest: Manifest, job_id: str, owner: str, lease: float) -> bool:
    """Extend ``owner``'s claim; False when it no longer holds it."""
    with manifest.transaction() as db:
        cur = db.execute(
            "UPDATE job_claims SET expires = ? WHERE job_id = ? AND owner = ?",
            (time.time() + lease, job_id, owner),
        )
        return cur.rowcount > 0


def release_job(manifest: Manifest, job_id: str, owner: str) -> None:
    with manifest.transaction() as db:
        db.execute("DELETE FROM job_claims WHERE job_id = ? AND owner = ?", (job_id, owner))


def _owner() -> str:
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def _held(manifest: Manifest, job_id: str, owner: str, lease: float) -> Iterator[None]:
    """Renew ``owner``'s claim every ``lease / 3`` seconds until the block ends; then release."""
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(lease / 3):
            try:
                if not renew_job(manifest, job_id, owner, lease):
                    logger.warning("lost the claim on batch job %s", job_id)
            except Exception:  # a renewal that failed once is tried again next time
                logger.exception("renewing the claim on batch job %s", job_id)

    thread = threading.Thread(target=renew, name=f"visionkit-claim:{job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
        with contextlib.suppress(Exception):
            release_job(manifest, job_id, owner)


@contextlib.contextmanager
def job_claim(
    manifest: Manifest, job_id: str, *, lease: float = LEASE, bar: object = None
) -> Iterator[None]:
    """Hold job ``job_id`` for this process while the block runs, waiting first for another
    process's live claim to end (see the module docstring)."""
    owner = _owner()
    told = False
    while (held := claim_job(manifest, job_id, owner, lease)) is not None:
        if not told:  # a wait that could be long (uploads are paced): never a silent one
            warn(
                f"batch job {job_id} is being submitted by another process ({held[0]}); "
                "waiting until its files are uploaded, then this call attaches to its batches",
                BatchWarning,
            )
            set_postfix = getattr(bar, "set_postfix_str", None)
            if set_postfix is not None:
                set_postfix("waiting for another process submitting this job", refresh=True)
            told = True
        time.sleep(min(_POLL, max(0.01, held[1])))
    with _held(manifest, job_id, owner, lease):
        yield


@contextlib.contextmanager
def try_job_claim(manifest: Manifest, job_id: str, *, lease: float = LEASE) -> Iterator[bool]:
    """Hold job ``job_id`` if no other process does; yields whether it is held."""
    owner = _owner()
    if claim_job(manifest, job_id, owner, lease) is not None:
        yield False
        return
    with _held(manifest, job_id, owner, lease):
        yield True
