"""The partitions' input files, as ``ddf.vision.submit`` turns them into the job's: a file
without the lines of rows another partition sends (``without``), files that fit in one joined
(``fits``, ``join``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..batch.shards import Shard, jsonl_line
from ..providers import BatchLimits

__all__ = ["fits", "join", "without"]


def fits(limits: BatchLimits, lines: int, nbytes: int) -> bool:
    """Whether a file of ``lines`` lines and ``nbytes`` bytes is within one file's limits."""
    return (limits.max_requests_per_file is None or lines <= limits.max_requests_per_file) and (
        limits.max_file_bytes is None or nbytes <= limits.max_file_bytes
    )


def join(shards: list[Shard], seq: int, directory: Path | None) -> Shard:
    """One file of ``shards`` (in order), numbered ``seq``, in ``directory`` (moved there,
    or concatenated into the first one's name when there are several)."""
    head = shards[0]
    keys = [k for s in shards for k in s.keys]
    joined = Shard(
        head.shard_id, seq, None, keys, sum(s.nbytes for s in shards), sum(s.lines for s in shards)
    )
    if head.path is None or directory is None:
        return joined
    directory.mkdir(parents=True, exist_ok=True)
    joined.path = directory / f"{seq:05d}-{head.shard_id}.jsonl"
    if len(shards) == 1:
        os.replace(head.path, joined.path)
        return joined
    with open(joined.path, "wb") as out:
        for shard in shards:
            assert shard.path is not None
            with open(shard.path, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
            shard.path.unlink()
    return joined


def without(shard: Shard, drop: dict[str, int], endpoint: str) -> Shard | None:
    """``shard`` without the lines of ``drop``'s keys (key -> its request's bytes; rewritten
    on disk when it is a file); ``None`` when nothing is left."""
    if not drop:
        return shard
    keys = [(k, t) for k, t in shard.keys if k not in drop]
    if not keys:
        if shard.path is not None:
            shard.path.unlink(missing_ok=True)
        return None
    if shard.path is None:  # counted only: a line is its head and its body
        gone = sum(len(jsonl_line(k, b"", endpoint)) + n for k, n in drop.items())
        return Shard(shard.shard_id, shard.seq, None, keys, shard.nbytes - gone, len(keys))
    heads = {jsonl_line(k, b"", endpoint).split(b', "method"')[0] for k in drop}
    kept_path = shard.path.with_suffix(".kept")
    nbytes = 0
    with open(shard.path, "rb") as src, open(kept_path, "wb") as out:
        for line in src:
            if line.split(b', "method"', 1)[0] in heads:
                continue
            out.write(line)
            nbytes += len(line)
    os.replace(kept_path, shard.path)
    return Shard(shard.shard_id, shard.seq, shard.path, keys, nbytes, len(keys))
