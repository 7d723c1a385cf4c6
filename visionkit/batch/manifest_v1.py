"""Converting a batch manifest of the first layout (``job_rows`` and ``shard_keys``: keys as hex
text, twice per row, every row's prompt) to the current one (``visionkit.batch.manifest``), in
the transaction that opens it: the jobs, files and batches it records stay followable.

Each old row becomes one ``rows`` row: its key and image digests packed, its prompt dropped when
it is the job's, and ``seq`` the job's latest file holding its key (the first row of the key
that is not a repeat holds it); earlier files of that key that made a batch go to ``held``.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from .packing import pack_images, pack_key

__all__ = ["upgrade"]

# Columns the first layout gained over time (a file may lack any of them).
_LATER = {
    "jobs": (("system", "TEXT"), ("identity", "TEXT"), ("num", "INTEGER"), ("limits", "TEXT")),
    "job_rows": (
        ("attempts", "INTEGER"),
        ("batch_id", "TEXT"),
        ("prompt", "TEXT"),
        ("images", "TEXT"),
    ),
    "shards": (
        ("foreign_lines", "INTEGER"),
        ("duplicate_lines", "INTEGER"),
        ("unreadable_lines", "INTEGER"),
        ("job", "INTEGER"),
        ("round", "INTEGER DEFAULT 0"),
        ("resend", "INTEGER DEFAULT 0"),
        ("user_cancel", "INTEGER DEFAULT 0"),
    ),
}


def _add_columns(db: sqlite3.Connection) -> None:
    for table, columns in _LATER.items():
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for name, kind in columns:
            if name not in have:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")


def upgrade(db: sqlite3.Connection, schema: Sequence[str]) -> None:
    """Convert the open file (inside the caller's transaction); ``schema``: the new tables."""
    _add_columns(db)
    db.execute("UPDATE jobs SET num = rowid WHERE num IS NULL")
    db.execute("UPDATE shards SET job = (SELECT num FROM jobs j WHERE j.job_id = shards.job_id)")
    for statement in schema:
        db.execute(statement)
    nums: dict[str, int] = {}
    prompts: dict[str, Any] = {}
    for job_id, num, prompt in db.execute("SELECT job_id, num, prompt FROM jobs"):
        nums[job_id], prompts[job_id] = num, prompt
    # (job id, key) -> [(seq, made a batch)] in file order
    files: dict[tuple[str, str], list[tuple[int, bool]]] = defaultdict(list)
    for job_id, key, seq, batch_id in db.execute(
        "SELECT s.job_id, k.key, s.seq, s.batch_id FROM shard_keys k "
        "JOIN shards s ON s.shard_id = k.shard_id ORDER BY s.seq"
    ):
        files[(job_id, key)].append((seq, batch_id is not None))
    rows, held = [], []
    placed: set[tuple[str, str]] = set()
    for (
        job_id,
        pos,
        label,
        key,
        status,
        error,
        tokens,
        attempts,
        batch_id,
        prompt,
        images,
    ) in db.execute(
        "SELECT job_id, pos, label, key, status, error, estimated_tokens, attempts, "
        "batch_id, prompt, images FROM job_rows ORDER BY job_id, pos"
    ):
        num = nums.get(job_id)
        if num is None:
            continue
        seq = None
        if key is not None and status != "repeat" and (job_id, key) not in placed:
            found = files.get((job_id, key), [])
            if found:
                placed.add((job_id, key))
                seq = found[-1][0]
                held += [(num, pos, s) for s, made in found[:-1] if made]
        try:
            is_pos = label is not None and json.loads(label) == pos and "." not in label
        except ValueError:
            is_pos = False
        rows.append(
            (
                num,
                pos,
                None if is_pos else label,
                pack_key(key),
                status,
                error,
                tokens,
                attempts,
                batch_id,
                None if prompt == prompts.get(job_id) else prompt,
                pack_images(json.loads(images)) if images else None,
                seq,
            )
        )
    db.executemany(
        "INSERT OR REPLACE INTO rows (job, pos, label, key, status, error, tokens, attempts, "
        "batch_id, prompt, images, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    db.executemany("INSERT OR IGNORE INTO held (job, pos, seq) VALUES (?, ?, ?)", held)
    db.execute("DROP TABLE job_rows")
    db.execute("DROP TABLE shard_keys")
