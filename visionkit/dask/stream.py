"""A Dask submit's partitions taken as they finish (``ddf.vision.submit``), so that uploading
overlaps the workers' preparation.

``JobStream.take`` records one finished partition's pass in the job: its rows on the frame's
positions; a line for an image that this call already sends (from a partition finished
earlier) or that another process put in a live file meanwhile is dropped from the partition's
file (the row is a ``repeat`` or ``covered``: sent once); each full file is recorded at once,
its rows first (``staged``, then ``written``: only then can it be uploaded, so a crash after
an upload leaves its rows live and nothing is paid twice); the partition's last, part-filled
file is kept back and joined with other partitions' until the next one would not fit or the
file is full (at inference.net's one upload a minute every file counts). ``finish`` records
what is kept back. Files are numbered in the order they are recorded.

``BackgroundUploads`` runs ``upload_pending`` in a thread, woken for every file recorded, until
told to stop (after the current file's batch is created); the caller then uploads the rest.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..batch.manifest import JobRow, Manifest
from ..batch.shards import Shard
from ..batch.shared import Preparation
from ..providers import BatchLimits
from ..query.rows import key_id
from .files import fits, join, without

__all__ = ["BackgroundUploads", "JobStream"]

_Held = tuple[Shard, list[JobRow]]  # a file and the rows whose lines are in it


@dataclass
class JobStream:
    """Records finished partitions in job ``job_id`` (see the module docstring)."""

    manifest: Manifest
    job_id: str
    limits: BatchLimits
    directory: Path  # the job's folder: its files are moved or joined there
    offsets: Sequence[int]  # each partition's first row in the frame
    next_seq: int
    write: bool  # True: files uploadable once recorded; False: staged (``launch`` decides)
    on_file: Callable[[], None] = lambda: None  # told of each file made uploadable
    prep: Preparation = field(default_factory=lambda: Preparation(shards=[]))
    _sent: set[bytes | str] = field(default_factory=set, repr=False)
    _kept: list[_Held] = field(default_factory=list, repr=False)

    def take(self, number: int, part: Preparation) -> None:
        """Partition ``number``'s pass (its rows on the partition's positions, its files)."""
        offset = self.offsets[number]
        fresh = [
            r.key
            for r in part.rows
            if r.status == "send" and r.key is not None and key_id(r.key) not in self._sent
        ]
        elsewhere = self.manifest.live_among(fresh) if fresh else set()
        drop: dict[int, dict[str, int]] = defaultdict(dict)  # file -> key -> request bytes
        held: dict[int, list[JobRow]] = defaultdict(list)
        settled: list[JobRow] = []  # rows without a line
        for row in part.rows:
            status, seq = row.status, row.seq
            if status == "send" and row.key is not None:
                sent = key_id(row.key)
                if sent in self._sent:
                    status = "repeat"
                elif row.key in elsewhere:
                    status = "covered"
                else:
                    self._sent.add(sent)
                if status != "send":
                    assert seq is not None  # its line was written: drop it
                    drop[seq][row.key] = row.request_bytes or 0
                    seq = None
            self.prep.count(status, row.estimated_tokens, row.request_bytes)
            recorded = JobRow(
                offset + row.pos, row.label, row.key, status, row.error, row.estimated_tokens
            )
            (settled if seq is None else held[seq]).append(recorded)
        if settled:
            self.manifest.add_rows(self.job_id, settled)
        files = [without(s, drop.get(s.seq, {}), self.limits.endpoint) for s in part.shards]
        left = [s for s in files if s is not None]
        for n, shard in enumerate(left):
            item = (shard, held.pop(shard.seq, []))
            if n + 1 < len(left):
                self._record([item])  # full: it was closed because the next line did not fit
            else:
                self._keep(item)

    def finish(self) -> Preparation:
        """Record the files kept back; the whole pass's totals and files."""
        if self._kept:
            self._record(self._kept)
            self._kept = []
        return self.prep

    def _keep(self, item: _Held) -> None:
        lines = sum(s.lines for s, _ in self._kept) + item[0].lines
        nbytes = sum(s.nbytes for s, _ in self._kept) + item[0].nbytes
        if self._kept and not fits(self.limits, lines, nbytes):
            self._record(self._kept)
            self._kept = []
            lines = item[0].lines
        self._kept.append(item)
        if lines == self.limits.max_requests_per_file:  # full: nothing more could join it
            self._record(self._kept)
            self._kept = []

    def _record(self, group: list[_Held]) -> None:
        """One file of ``group``'s files: moved or joined into the job's folder, recorded with
        its rows (``staged``), then made uploadable (``written``) when ``write``."""
        seq = self.next_seq
        self.next_seq += 1
        shard = join([s for s, _ in group], seq, self.directory)
        assert shard.path is not None
        self.manifest.add_shard(
            shard.shard_id, self.job_id, seq, shard.path, shard.lines, shard.nbytes, state="staged"
        )
        self.manifest.add_rows(
            self.job_id, [r._replace(seq=seq) for _, rows in group for r in rows]
        )
        if self.write:
            self.manifest.update_shard(shard.shard_id, state="written")
            self.on_file()
        shard.keys = []  # recorded: not kept in memory
        self.prep.shards.append(shard)


class BackgroundUploads:
    """``upload(stop)`` (``upload_pending`` of a job) in a thread, run again each time
    ``wake()`` is called, until ``stop()``; an error it meets is raised by ``check()``."""

    def __init__(self, upload: Callable[[threading.Event], object]) -> None:
        self._upload = upload
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="visionkit-uploads", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if self._stop.is_set():
                return
            self._wake.clear()
            try:
                self._upload(self._stop)
            except BaseException as exc:  # the caller's thread raises it (check)
                self.error = exc
                return

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        """Stop after the file being uploaded has its batch; wait for that."""
        self._stop.set()
        self._wake.set()
        self._thread.join()
