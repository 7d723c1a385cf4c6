"""Collecting a finished batch: its result files read line by line, each line checked, the
answers committed to the answer cache, the failures kept as row errors.

Only what the batch was sent is taken: a line is accepted when its ``custom_id`` is a key of
this batch's input file (the job submitted it and awaits it). A line for any other id -- another
prompt's cache key, an id never sent -- is counted and warned about, and never cached; a line
that cannot be read (not JSON, no ``custom_id``) likewise. One rule for an id that comes twice:
**the first line that answers it wins**; any later line for it (answer or error) is counted as
a duplicate and ignored, and an error line followed by an answer for the same id gives the
answer. The counts go to the manifest (``BatchJob.result().attrs["usage"]``: ``foreign_lines``,
``duplicate_lines``, ``unreadable_lines``).

Each line is checked against the output line's shape (``visionkit.batch.lines``): a line that
does not fit (``"status_code": "abc"``, ``"usage": "lots"``) is that row's error, and the rest
of the file is collected. Answers are committed in chunks, each chunk in one transaction before
the next lines are read, and the batch is marked collected only after its last chunk is
committed: an interrupt or a crash loses nothing paid for, and a later refresh reads the files
again. A download honours the wait's deadline: past it the batch stays uncollected this time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import BatchWarning, warn
from ..query.cache import CachedAnswer
from .lines import BatchState, parse_line
from .manifest import Manifest
from .resend import MAX_ROUNDS, SPLIT, retryable

if TYPE_CHECKING:
    from openai import OpenAI as SyncOpenAI

__all__ = ["TimeUp", "collect", "download_lines"]

logger = logging.getLogger("visionkit")

CHUNK = 2000  # answers committed (and recorded) together


class TimeUp(Exception):
    """The wait's deadline passed in the middle of a download."""


def left(deadline: float | None) -> float | None:
    """Seconds until ``deadline`` (``None``: no deadline), at least a tenth of a second."""
    return None if deadline is None else max(0.1, deadline - time.monotonic())


def download_lines(sdk: Any, file_id: str, deadline: float | None) -> Iterator[bytes]:
    """A result file's non-empty lines, streamed (never whole in memory); each network read
    gets the time left before ``deadline``, and ``TimeUp`` is raised once it has passed."""
    import openai

    options = {} if deadline is None else {"timeout": left(deadline)}
    with sdk.files.with_streaming_response.content(file_id, **options) as response:
        rest = b""
        pieces = response.iter_bytes()  # as they arrive: a cut stream keeps what came
        while True:
            try:
                piece = next(pieces, None)
            except Exception as exc:  # the SDK's HTTP library's own error: the stream broke
                raise openai.APIConnectionError(
                    message=f"the download of {file_id} broke off: {exc}",
                    request=response.http_request,
                ) from exc
            if piece is None:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeUp
            lines = (rest + piece).split(b"\n")
            rest = lines.pop()
            yield from (line for line in lines if line.strip())
        if rest.strip():
            yield rest


@dataclasses.dataclass
class _Tally:
    """What one batch's result lines held."""

    answered: set[str] = dataclasses.field(default_factory=set)
    errors: dict[str, str] = dataclasses.field(default_factory=dict)
    skipped: Counter[str] = dataclasses.field(default_factory=Counter)


class Collecting(Protocol):
    """What collecting a batch needs of its job (``BatchJob`` has it): the job's id and
    manifest, the SDK for calls before ``deadline``, and where answers are stored."""

    id: str
    manifest: Manifest

    def sdk_within(self, deadline: float | None) -> SyncOpenAI: ...

    def store(
        self, answers: dict[str, CachedAnswer], *, batch_id: str, last: bool = False
    ) -> None: ...


def collect(
    job: Collecting, shard: dict[str, Any], state: BatchState, deadline: float | None
) -> None:
    """Commit a finished batch's answers to the cache and its failures to the manifest (see
    the module docstring); raises ``TimeUp`` (nothing marked collected) past ``deadline``."""
    manifest, sdk = job.manifest, job.sdk_within(deadline)
    expected = manifest.shard_tokens(shard["shard_id"])  # the keys this batch was sent
    info = manifest.job(job.id) or {}
    model, provider = info.get("model"), info.get("provider")
    tally = _Tally()
    chunk: dict[str, CachedAnswer] = {}
    for file_id in (state.output_file_id, state.error_file_id):
        if not file_id:
            continue
        for raw in download_lines(sdk, file_id, deadline):
            line = parse_line(raw, model, provider, expected)
            key = line.custom_id
            if key is None:
                tally.skipped["unreadable_lines"] += 1
                logger.info("batch %s: unreadable result line %r", state.id, raw[:80])
                continue
            if key not in expected:
                tally.skipped["foreign_lines"] += 1
                continue
            if key in tally.answered:
                tally.skipped["duplicate_lines"] += 1
                continue
            if line.answer is None:
                if key in tally.errors:
                    tally.skipped["duplicate_lines"] += 1
                else:
                    tally.errors[key] = line.error or "error"
                continue
            if tally.errors.pop(key, None) is not None:
                tally.skipped["duplicate_lines"] += 1
            tally.answered.add(key)
            chunk[key] = line.answer
            if len(chunk) >= CHUNK:
                job.store(chunk, batch_id=state.id)
                chunk = {}
    job.store(chunk, batch_id=state.id, last=True)
    if state.status == "failed":
        reason = f"batch failed validation: {state.failure()}"
        tally.errors.update((k, reason) for k in expected if k not in tally.answered)
    manifest.set_errors(state.id, list(tally.errors.items()))
    resend = _resend_mark(shard, state, expected, tally)
    manifest.update_shard(
        shard["shard_id"],
        state="collected",
        resend=resend,
        completed=len(tally.answered),  # what arrived, whatever the server's counts said
        failed=len(expected) - len(tally.answered),
        foreign_lines=tally.skipped["foreign_lines"],
        duplicate_lines=tally.skipped["duplicate_lines"],
        unreadable_lines=tally.skipped["unreadable_lines"],
    )
    if not resend and shard["path"]:
        _remove(Path(shard["path"]))
    if tally.skipped:
        _warn_skipped(state.id, tally.skipped)


def _resend_mark(
    shard: dict[str, Any], state: BatchState, expected: dict[str, Any], tally: _Tally
) -> int:
    """Whether ``wait()`` sends rows of this batch again (``visionkit.batch.resend``): ``SPLIT``
    for a batch refused for its size (while it can be halved), 1 when a row failed for a
    passing reason, else 0 -- also when the user cancelled it, when it was a round that
    answered none of its rows, or after ``MAX_ROUNDS`` rounds."""
    if shard["user_cancel"]:
        return 0
    if state.status == "failed":
        return SPLIT if state.too_large() and (shard["lines"] or 0) > 1 else 0
    missing = [k for k in expected if k not in tally.answered]
    # A row with no line at all is sent again -- unless a line could not be read: it may be
    # that row's answer, paid for.
    unread = tally.skipped["unreadable_lines"] > 0
    if not any(
        retryable(tally.errors.get(k)) and not (unread and k not in tally.errors) for k in missing
    ):
        return 0
    round_ = shard["round"] or 0
    if round_ >= MAX_ROUNDS or (round_ > 0 and not tally.answered):
        logger.info("batch %s: no further round (round %d)", state.id, round_)
        return 0
    return 1


def _remove(path: Path) -> None:
    """A collected batch's input file, and its folder once empty."""
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()


def _warn_skipped(batch_id: str, skipped: Counter[str]) -> None:
    parts = {
        "foreign_lines": "for ids this batch was never sent",
        "duplicate_lines": "repeating an id already read (the first answer kept)",
        "unreadable_lines": "that could not be read (no custom_id)",
    }
    said = "; ".join(f"{skipped[k]} {why}" for k, why in parts.items() if skipped[k])
    warn(
        f"batch {batch_id}: result lines not taken ({said}); none of them was cached. "
        "attrs['usage'] of job.result() counts them.",
        BatchWarning,
    )
