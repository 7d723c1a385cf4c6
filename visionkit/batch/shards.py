"""Writing a job's requests as JSONL input files, streamed to disk and cut by bytes and lines.

Each line is ``{"custom_id": KEY, "method": "POST", "url": ENDPOINT, "body": BODY}`` where
``BODY`` is the checked request's JSON bytes spliced in as they are (never parsed and
serialised again: what was measured against the 1 MB rule is what is uploaded) and ``KEY`` is
the row's cache key, so an output line maps straight back to the answer cache. A file is closed
before a line would take it past ``max_bytes`` or ``max_requests``; ``on_close`` is told each
closed file (to record it before it is uploaded). With ``directory=None`` nothing is written:
the writer only counts, which is what a dry run's plan needs.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import BinaryIO

__all__ = ["Shard", "ShardWriter", "jsonl_line"]


def jsonl_line(key: str, payload: bytes, endpoint: str) -> bytes:
    """One input line with ``payload`` (a JSON object's bytes) spliced in as the body: the
    bytes of ``json.dumps({"custom_id": key, "method": "POST", "url": endpoint, "body": ...})``
    written piece by piece (a dict dumped a row cost a planning pass more than its keys)."""
    return b"".join(
        (
            b'{"custom_id": ',
            json.dumps(key).encode(),
            b', "method": "POST", "url": ',
            json.dumps(endpoint).encode(),
            b', "body": ',
            payload,
            b"}\n",
        )
    )


@dataclass
class Shard:
    """One input file: where it is, what it holds."""

    shard_id: str
    seq: int
    path: Path | None
    keys: list[tuple[str, int | None]] = field(default_factory=list)  # (key, estimated tokens)
    nbytes: int = 0
    lines: int = 0  # (also when ``keys`` is not kept)


@dataclass(eq=False)
class ShardWriter:
    """Append lines; a new file starts whenever the next line would break a limit."""

    directory: Path | None
    _: KW_ONLY
    max_bytes: int | None
    max_requests: int | None
    endpoint: str
    on_close: Callable[[Shard], None] | None = None
    first_seq: int = 1
    keep_keys: bool = True  # False: count the lines only (what recording a file needs)
    closed: list[Shard] = field(default_factory=list, init=False)  # the files closed so far
    _shard: Shard | None = field(default=None, init=False, repr=False)
    _out: BinaryIO | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._seq = self.first_seq

    def add(self, key: str, payload: bytes, estimated_tokens: int | None) -> Shard:
        """Write one line; returns the shard it went to. Raises ValueError if one line alone
        is over ``max_bytes``."""
        return self.add_line(key, jsonl_line(key, payload, self.endpoint), estimated_tokens)

    def add_line(self, key: str, line: bytes, estimated_tokens: int | None) -> Shard:
        """``add`` for a line already made (one read back from an earlier file)."""
        if self.max_bytes is not None and len(line) > self.max_bytes:
            raise ValueError(
                f"one request line is {len(line):,} bytes, over the {self.max_bytes:,}-byte "
                "limit per file"
            )
        shard = self._shard
        if shard is not None and (
            (self.max_bytes is not None and shard.nbytes + len(line) > self.max_bytes)
            or (self.max_requests is not None and shard.lines >= self.max_requests)
        ):
            self.close()
            shard = None
        if shard is None:
            shard = self._open()
        if self._out is not None:
            self._out.write(line)
        if self.keep_keys:
            shard.keys.append((key, estimated_tokens))
        shard.lines += 1
        shard.nbytes += len(line)
        return shard

    def _open(self) -> Shard:
        shard_id = uuid.uuid4().hex[:16]
        path = None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"{self._seq:05d}-{shard_id}.jsonl"
            self._out = open(path, "wb")  # noqa: SIM115 (closed in close())
        self._shard = Shard(shard_id, self._seq, path)
        self._seq += 1
        return self._shard

    def close(self) -> None:
        """Close the current file (if any) and hand it to ``on_close``."""
        shard, self._shard = self._shard, None
        if shard is None:
            return
        if self._out is not None:
            self._out.close()
            self._out = None
        self.closed.append(shard)
        if self.on_close is not None:
            self.on_close(shard)

    def discard(self) -> None:
        """Drop the file being written (an interrupt or error mid-way): it was never recorded."""
        shard, self._shard = self._shard, None
        if self._out is not None:
            self._out.close()
            self._out = None
        if shard is not None and shard.path is not None:
            shard.path.unlink(missing_ok=True)
