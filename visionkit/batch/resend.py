"""Sending again, from ``wait()``, the rows a round of batches left unanswered (issue 19).

At this scale some batches expire (the 24-hour window), are cancelled by the provider, return
lines failed for a passing reason (a 5xx, a 429), or fail validation for their size on a server
whose limits were not known. When such a batch is collected (``visionkit.batch.collect``) it is
marked ``resend``; ``wait()`` then writes the lines of its rows still without an answer -- read
back from the job's own input file, kept until then, so nothing is planned or encoded again --
into new files, uploads them and creates their batches: round after round, until every row is
answered, a round answers none of its rows, or ``MAX_ROUNDS`` rounds were sent. Only rows
still missing are sent (not answered meanwhile, not in a live file), so nothing is paid twice;
a batch refused for its size is split in halves (and the job's files are cut smaller from then
on). Rows of a batch the user cancelled (``job.cancel()``), and lines that came back and do
not fit the format (they may have been paid for), are not sent again. The new files are
recorded, and their rows moved to them, in one transaction under the job's claim
(``visionkit.batch.claims``), so two processes never send one row twice.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import BatchWarning, warn
from .claims import try_job_claim
from .manifest import Manifest
from .packing import pack_key
from .shards import Shard, ShardWriter

if TYPE_CHECKING:
    from ..providers import BatchLimits
    from ..query.cache import Cache

__all__ = ["MAX_ROUNDS", "resend_pending", "retryable"]

logger = logging.getLogger("visionkit")

MAX_ROUNDS = 5  # rounds of sending again after the first
_STATUS = re.compile(r"\((\d{3})\)")
_CUSTOM_ID = re.compile(rb'^\{"custom_id": "([^"\\]+)"')
SPLIT = 2  # ``shards.resend`` for a batch refused for its size (1: send its rows as they were)


class Resending(Protocol):
    """What sending rows again needs of its job (``BatchJob`` has it): its id, manifest and
    answer cache, its files' limits (to read, and to lower), and its upload step."""

    id: str
    manifest: Manifest
    cache: Cache

    def limits(self) -> BatchLimits: ...

    def save_limits(self, limits: BatchLimits) -> None: ...

    def upload(self, deadline: float | None = None) -> int: ...


def retryable(error: str | None) -> bool:
    """Whether a row's error (as collected) is a passing one worth a new round: a line left
    unrun (expired, cancelled by the provider), an answer 408, 409, 429 or 5xx, or no line at
    all for the row."""
    if error is None:
        return True
    if error.startswith(("batch_expired", "batch_cancelled")):
        return True
    found = _STATUS.search(error[:40])
    if found is None or not error.split(" ", 1)[0].endswith("Error"):
        return False
    status = int(found.group(1))
    return status >= 500 or status in (408, 409, 429)


def resend_pending(job: Resending, deadline: float | None) -> int:
    """Send again the rows of every collected batch marked ``resend``, and upload any file of
    the job not uploaded yet; returns how many new files were made. Does nothing while another
    process holds the job (it is sending it)."""
    manifest = job.manifest
    waiting = [
        s
        for s in manifest.shards(job.id)
        if (s["state"] == "collected" and s["resend"]) or s["state"] in ("written", "uploaded")
    ]
    if not waiting:
        return 0
    with try_job_claim(manifest, job.id) as held:
        if not held:
            return 0
        made = _rewrite(job)
        job.upload(deadline)
        return made


def _rewrite(job: Resending) -> int:
    """The marked batches' rows still missing, into new files recorded as ``written``."""
    manifest = job.manifest
    pending = [s for s in manifest.shards(job.id) if s["state"] == "collected" and s["resend"]]
    if not pending:
        return 0
    limits = job.limits()
    live = manifest.live_keys()
    todo: dict[str, dict[str, int | None]] = {}
    for shard in pending:
        keys = manifest.shard_tokens(shard["shard_id"])  # rows still in that file
        answered = job.cache.get_many(keys)
        errors = manifest.errors(k for k in keys if k not in answered)
        split = shard["resend"] == SPLIT
        unread = bool(shard["unreadable_lines"])  # then a row without a line may be paid
        todo[shard["shard_id"]] = {
            k: t
            for k, t in keys.items()
            if k not in answered
            and pack_key(k) not in live
            and (split or (retryable(errors.get(k)) and not (unread and k not in errors)))
        }
    first_seq = manifest.next_seq(job.id)
    made: list[Shard] = []
    moves: list[tuple[str, int, int]] = []  # (key, old seq, new seq)
    missing: list[str] = []
    plain = [s for s in pending if s["resend"] != SPLIT]
    groups = [(plain, limits)] + [
        ([s], _halved(s, limits)) for s in pending if s["resend"] == SPLIT
    ]
    for shards, cut in groups:
        if not shards:
            continue
        directory = Path(shards[0]["path"]).parent
        writer = ShardWriter(
            directory,
            max_bytes=cut.max_file_bytes,
            max_requests=cut.max_requests_per_file,
            endpoint=cut.endpoint,
            first_seq=first_seq + len(made),
        )
        try:
            for shard in shards:
                path = Path(shard["path"])
                wanted = todo[shard["shard_id"]]
                if not wanted:
                    continue
                if not path.exists():
                    missing.append(shard["batch_id"] or shard["shard_id"])
                    continue
                with open(path, "rb") as lines:
                    for line in lines:
                        found = _CUSTOM_ID.match(line)
                        key = found.group(1).decode() if found else None
                        if key is None or key not in wanted:
                            continue
                        tokens = wanted.pop(key)
                        new = writer.add_line(
                            key, line if line.endswith(b"\n") else line + b"\n", tokens
                        )
                        moves.append((key, shard["seq"], new.seq))
            writer.close()
        except BaseException:
            writer.discard()
            for written in writer.closed:
                if written.path is not None:
                    written.path.unlink(missing_ok=True)
            raise
        made.extend(writer.closed)
    round_ = 1 + max(s["round"] or 0 for s in pending)
    _record(manifest, job.id, made, round_, moves, [s["shard_id"] for s in pending])
    split_limits = [cut for shards, cut in groups[1:]]
    if split_limits:
        smallest = min(split_limits, key=lambda c: c.max_requests_per_file or math.inf)
        job.save_limits(smallest)
    for shard in pending:
        Path(shard["path"]).unlink(missing_ok=True)
    if missing:
        warn(
            f"batch job {job.id}: rows of {', '.join(missing[:3])} are still without an "
            "answer, but the job's input files are not here (another machine submitted it?); "
            "submit the job again to send them.",
            BatchWarning,
        )
    logger.info(
        "batch job %s: %d rows sent again in %d file(s), round %d",
        job.id,
        len(moves),
        len(made),
        round_,
    )
    return len(made)


def _record(
    manifest: Manifest,
    job_id: str,
    shards: list[Shard],
    round_: int,
    moves: list[tuple[str, int, int]],
    done: list[str],
) -> None:
    """Rows sent again, in one transaction: the new files (``written``, round ``round_``), each
    moved row's new file (the old one kept in ``held`` if it made a batch), and the ``resend``
    mark cleared on the ``done`` shards."""
    num = manifest.num(job_id)
    now = time.time()
    located = [(num, k[:8], k, old, new) for key, old, new in moves if (k := pack_key(key))]
    with manifest.transaction() as db:
        db.executemany(
            "INSERT INTO shards (shard_id, job_id, job, seq, path, lines, bytes, state, "
            "created, round) VALUES (?, ?, ?, ?, ?, ?, ?, 'written', ?, ?)",
            [
                (s.shard_id, job_id, num, s.seq, str(s.path), s.lines, s.nbytes, now, round_)
                for s in shards
            ],
        )
        db.executemany(
            "INSERT OR IGNORE INTO held (job, pos, seq) SELECT r.job, r.pos, r.seq "
            "FROM rows r JOIN shards s ON s.job = r.job AND s.seq = r.seq "
            "WHERE r.job = ? AND substr(r.key, 1, 8) = ? AND r.key = ? AND r.seq = ? "
            "AND s.batch_id IS NOT NULL",
            [(num, head, k, old) for num, head, k, old, _ in located],
        )
        db.executemany(
            "UPDATE rows SET seq = ? WHERE job = ? AND substr(key, 1, 8) = ? AND key = ? "
            "AND seq = ?",
            [(new, num, head, k, old) for num, head, k, old, new in located],
        )
        db.executemany("UPDATE shards SET resend = 0 WHERE shard_id = ?", [(d,) for d in done])


def _halved(shard: dict[str, Any], limits: Any) -> Any:
    """The limits that cut a batch refused for its size in two (lines and bytes)."""
    lines = max(1, math.ceil((shard["lines"] or 1) / 2))
    nbytes = max(1, math.ceil((shard["bytes"] or 1) / 2))
    return dataclasses.replace(
        limits,
        max_requests_per_file=min(lines, limits.max_requests_per_file or lines),
        max_file_bytes=min(max(nbytes, _longest(shard)), limits.max_file_bytes or nbytes),
    )


def _longest(shard: dict[str, Any]) -> int:
    """The longest line of a shard's file (a line cannot be split)."""
    path = Path(shard["path"])
    if not path.exists():
        return 0
    with open(path, "rb") as lines:
        return max((len(line) for line in lines), default=0)


def limits_of(text: str | None) -> dict[str, Any] | None:
    """``jobs.limits`` as a dict (``None`` for a job recorded before limits were kept)."""
    return json.loads(text) if text else None
