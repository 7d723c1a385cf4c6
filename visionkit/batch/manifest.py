"""The batch manifest: a SQLite file beside the answer cache recording every job, input file
and batch the moment it exists, so nothing paid for is lost to a crash or an interrupt.

Tables:

- ``jobs``: one row per job (its id, provider, base URLs, model, prompt, system prompt,
  schema, the identity its cache keys were made under, when made).
- ``job_rows``: the job's rows in order: label (JSON), cache key, the planning error or
  status (``send``, ``hit``, ``covered``, ``repeat``, ``error``, or ``reused``: a hit reported
  as bought because a recording was on, with the ``attempts`` and ``batch_id`` to report; see
  ``visionkit.batch.replayed``), estimated tokens, and what the row asks (its prompt when it
  is not the job's, its images' sha256): what a recording of its answer holds.
- ``shards``: each JSONL input file: its local path, lines, bytes, then its ``file_id`` as
  soon as the upload returns, its ``batch_id`` as soon as the batch is created, the batch's
  last known status and counts, and whether its results were collected into the cache.
- ``shard_keys``: which cache keys (= ``custom_id``) each shard holds.
- ``line_errors``: the provider's message for a line that failed (by key), until answered.
- ``uploads``: when the last file was uploaded to each batch URL (the pacing survives a
  restart).
- ``job_claims``: which process is submitting a job now, until when (a lease its owner renews):
  two processes submitting one job never both upload it (``visionkit.batch.claims``).

A shard moves ``written`` -> ``uploaded`` -> ``created`` -> ``collected``; a key is *covered*
(not submitted again) while it sits in a shard that is not collected yet. Each change is its
own transaction (WAL mode, a busy timeout: several processes may share the file). Columns
added since a manifest was made are added to it when it is opened (``_ADDED``). A file that is
not SQLite, or whose pages are damaged, raises one ``CacheError`` naming it and saying what to
do (at open, or at the first read that meets the damage), never a raw ``sqlite3`` error.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import CacheError

__all__ = ["JobRow", "Manifest", "label_json", "manifest_path", "stored_label"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    provider TEXT, base_url TEXT, batch_base_url TEXT, model TEXT,
    prompt TEXT, schema TEXT, cache_path TEXT, metadata TEXT
);
CREATE TABLE IF NOT EXISTS job_rows (
    job_id TEXT NOT NULL, pos INTEGER NOT NULL, label TEXT, key TEXT,
    status TEXT, error TEXT, estimated_tokens INTEGER,
    PRIMARY KEY (job_id, pos)
);
CREATE INDEX IF NOT EXISTS job_rows_key ON job_rows (key);
CREATE TABLE IF NOT EXISTS shards (
    shard_id TEXT PRIMARY KEY, job_id TEXT NOT NULL, seq INTEGER, path TEXT,
    lines INTEGER, bytes INTEGER, state TEXT NOT NULL, created REAL,
    file_id TEXT, batch_id TEXT, status TEXT,
    completed INTEGER DEFAULT 0, failed INTEGER DEFAULT 0, total INTEGER DEFAULT 0,
    output_file_id TEXT, error_file_id TEXT
);
CREATE INDEX IF NOT EXISTS shards_job ON shards (job_id);
CREATE TABLE IF NOT EXISTS shard_keys (
    shard_id TEXT NOT NULL, key TEXT NOT NULL, estimated_tokens INTEGER
);
CREATE INDEX IF NOT EXISTS shard_keys_key ON shard_keys (key);
CREATE INDEX IF NOT EXISTS shard_keys_shard ON shard_keys (shard_id);
CREATE TABLE IF NOT EXISTS line_errors (
    key TEXT PRIMARY KEY, batch_id TEXT, error TEXT
);
CREATE TABLE IF NOT EXISTS uploads (
    batch_base_url TEXT PRIMARY KEY, last REAL
);
CREATE TABLE IF NOT EXISTS job_claims (
    job_id TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL
);
"""

# Columns newer than the tables above: added to an older manifest when it is opened.
_ADDED = {
    "jobs": (("system", "TEXT"), ("identity", "TEXT")),
    "job_rows": (
        ("attempts", "INTEGER"),
        ("batch_id", "TEXT"),
        ("prompt", "TEXT"),
        ("images", "TEXT"),
    ),
    # result lines not taken: for ids the batch never held, repeated ids, unreadable lines
    "shards": (
        ("foreign_lines", "INTEGER"),
        ("duplicate_lines", "INTEGER"),
        ("unreadable_lines", "INTEGER"),
    ),
}

LIVE = ("written", "uploaded", "created")  # a key in such a shard is not submitted again


def label_json(label: Any) -> str:
    """A row label as stored: JSON, numpy scalars as Python numbers, others by ``str``."""
    return json.dumps(label, default=lambda o: o.item() if hasattr(o, "dtype") else str(o))


def stored_label(label: Any) -> Any:
    """``label`` as a job's result shows it: through JSON and back (a list is a tuple again)."""
    value = json.loads(label_json(label))
    return tuple(value) if isinstance(value, list) else value


def manifest_path(cache_path: Path) -> Path:
    """The manifest beside an answer cache: ``answers.sqlite`` -> ``answers.batches.sqlite``."""
    return cache_path.with_name(cache_path.stem + ".batches.sqlite")


class JobRow(NamedTuple):
    """One row of a job as planned (``job_rows``)."""

    pos: int
    label: Any
    key: str | None
    status: str
    error: str | None
    estimated_tokens: int | None
    attempts: int | None = None  # ``reused`` rows: the attempts to report
    batch_id: str | None = None  # ``reused`` rows: the recorded batch, if a batch delivered it
    prompt: str | None = None  # None: the job's prompt (``add_rows`` only)
    images: Sequence[str] | None = None  # sha256 of each image (``add_rows`` only)


def _chunks(keys: Iterable[str], size: int = 500) -> Iterator[list[str]]:
    """Distinct keys in chunks small enough for one ``IN (...)`` query."""
    unique = list(dict.fromkeys(keys))
    for start in range(0, len(unique), size):
        yield unique[start : start + size]


def _damaged(exc: BaseException) -> bool:
    """A ``sqlite3`` error that means the file is not (or no longer) a sound database."""
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        return "malformed" in text or "not a database" in text or "disk i/o" in text
    return isinstance(exc, sqlite3.DatabaseError)


class Manifest:
    """A thread-safe handle on one manifest file."""

    def __init__(self, path: str | Path, *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._guard():
            self._db = sqlite3.connect(
                self.path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
            try:
                self._setup(timeout)
            except BaseException:
                self._db.close()
                raise

    def _setup(self, timeout: float) -> None:
        self._db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        with self._lock:
            self._db.executescript(_SCHEMA)
            for table, columns in _ADDED.items():
                have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
                for name, kind in columns:
                    if name not in have:
                        try:
                            self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
                        except sqlite3.OperationalError as exc:  # another process added it
                            if "duplicate column" not in str(exc):
                                raise
            self._db.execute("SELECT COUNT(*) FROM shards").fetchone()

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """A damaged file becomes one ``CacheError`` naming it and what to do."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if not _damaged(exc):
                raise
            raise CacheError(
                f"the batch manifest {str(self.path)!r} cannot be used: {exc} (it is not a "
                "SQLite database, or it is damaged). Move it away and visionkit forgets the "
                "batch jobs recorded in it: their batches go on at the provider, answers "
                "already collected stay in the answer cache, and submitting a job again sends "
                "the rows without an answer (paying again for any still in a running batch). "
                "`sqlite3 FILE .recover` may save it first.",
                path=self.path,
            ) from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _run(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock, self._guard():
            return self._db.execute(sql, params).fetchall()

    def _dicts(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Rows as dicts by column name."""
        with self._lock, self._guard():
            cur = self._db.execute(sql, params)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def _many(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> None:
        """Several statements in one transaction."""
        with self._lock, self._guard():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    self._db.execute(sql, params)
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    # -- jobs --------------------------------------------------------------------------------

    def save_job(self, job_id: str, **fields: Any) -> None:
        """Record the job, or update its fields (one transaction: two processes may save it)."""
        self._many(
            [
                (
                    "INSERT OR IGNORE INTO jobs (job_id, created) VALUES (?, ?)",
                    (job_id, time.time()),
                ),
                *(
                    [
                        (
                            f"UPDATE jobs SET {','.join(f'{k} = ?' for k in fields)} "
                            "WHERE job_id = ?",
                            [*fields.values(), job_id],
                        )
                    ]
                    if fields
                    else []
                ),
            ]
        )

    def job(self, job_id: str) -> dict[str, Any] | None:
        found = self._dicts("SELECT * FROM jobs WHERE job_id = ?", (job_id,))
        return found[0] if found else None

    def jobs(self) -> list[dict[str, Any]]:
        return self._dicts("SELECT * FROM jobs ORDER BY created")

    def reset_rows(self, job_id: str) -> None:
        self._run("DELETE FROM job_rows WHERE job_id = ?", (job_id,))

    def add_rows(self, job_id: str, rows: Sequence[Sequence[Any]]) -> None:
        """The job's rows (as planned), in one transaction: ``JobRow``s, or plain tuples
        (pos, label, key, status, error, estimated_tokens[, ...]) in ``JobRow``'s order."""
        planned = [JobRow(*r) for r in rows]
        self._many(
            (
                "INSERT OR REPLACE INTO job_rows (job_id, pos, label, key, status, error, "
                "estimated_tokens, attempts, batch_id, prompt, images) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    r.pos,
                    label_json(r.label),
                    r.key,
                    r.status,
                    r.error,
                    r.estimated_tokens,
                    r.attempts,
                    r.batch_id,
                    r.prompt,
                    None if r.images is None else json.dumps(list(r.images)),
                ),
            )
            for r in planned
        )

    def rows(self, job_id: str) -> list[JobRow]:
        """The job's rows in order (without ``prompt`` and ``images``: see ``requests``)."""
        return [
            JobRow(pos, json.loads(label), *rest)
            for pos, label, *rest in self._run(
                "SELECT pos, label, key, status, error, estimated_tokens, attempts, batch_id "
                "FROM job_rows WHERE job_id = ? ORDER BY pos",
                (job_id,),
            )
        ]

    def requests(self, keys: Iterable[str]) -> dict[str, tuple[str, str | None, list[str]]]:
        """key -> (prompt, system prompt, image digests): what the key's row asks."""
        out: dict[str, tuple[str, str | None, list[str]]] = {}
        for chunk in _chunks(keys):
            marks = ",".join("?" * len(chunk))
            for key, prompt, system, images in self._run(
                "SELECT r.key, COALESCE(r.prompt, j.prompt), j.system, r.images "
                "FROM job_rows r JOIN jobs j ON j.job_id = r.job_id "
                f"WHERE r.key IN ({marks})",
                chunk,
            ):
                out[key] = (prompt, system, json.loads(images) if images else [])
        return out

    # -- shards ------------------------------------------------------------------------------

    def add_shard(
        self,
        shard_id: str,
        job_id: str,
        seq: int,
        path: Path,
        keys: Sequence[tuple[str, int | None]],
        nbytes: int,
        state: str = "written",
    ) -> None:
        """A closed shard file and the keys in it, in one transaction."""
        statements: list[tuple[str, Sequence[Any]]] = [
            (
                "INSERT INTO shards (shard_id, job_id, seq, path, lines, bytes, state, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (shard_id, job_id, seq, str(path), len(keys), nbytes, state, time.time()),
            )
        ]
        statements += [
            (
                "INSERT INTO shard_keys (shard_id, key, estimated_tokens) VALUES (?, ?, ?)",
                (shard_id, k, t),
            )
            for k, t in keys
        ]
        self._many(statements)

    def update_shard(self, shard_id: str, **fields: Any) -> None:
        sets = ",".join(f"{k} = ?" for k in fields)
        self._run(f"UPDATE shards SET {sets} WHERE shard_id = ?", [*fields.values(), shard_id])

    def shards(self, job_id: str) -> list[dict[str, Any]]:
        return self._dicts("SELECT * FROM shards WHERE job_id = ? ORDER BY seq, created", (job_id,))

    def next_seq(self, job_id: str) -> int:
        row = self._run("SELECT MAX(seq) FROM shards WHERE job_id = ?", (job_id,))
        return int(row[0][0] or 0) + 1

    def covered(self, key: str) -> bool:
        """Whether ``key`` is in a shard not yet collected (it must not be submitted again)."""
        marks = ",".join("?" * len(LIVE))
        row = self._run(
            "SELECT 1 FROM shard_keys k JOIN shards s ON s.shard_id = k.shard_id "
            f"WHERE k.key = ? AND s.state IN ({marks}) LIMIT 1",
            (key, *LIVE),
        )
        return bool(row)

    def covered_keys(self) -> set[str]:
        """Every key in a shard not yet collected (``covered``, for all of them at once)."""
        marks = ",".join("?" * len(LIVE))
        return {
            key
            for (key,) in self._run(
                "SELECT k.key FROM shard_keys k JOIN shards s ON s.shard_id = k.shard_id "
                f"WHERE s.state IN ({marks})",
                LIVE,
            )
        }

    def submissions(self, job_id: str) -> dict[str, tuple[int, str | None]]:
        """key -> (how many of this job's batches held it, the latest one's batch id). A
        file never made a batch (refused by the budget, lost) does not count."""
        out: dict[str, tuple[int, str | None]] = {}
        for key, batch_id in self._run(
            "SELECT k.key, s.batch_id FROM shard_keys k JOIN shards s ON s.shard_id = k.shard_id "
            "WHERE s.job_id = ? AND s.batch_id IS NOT NULL ORDER BY s.seq",
            (job_id,),
        ):
            n = out.get(key, (0, None))[0]
            out[key] = (n + 1, batch_id)
        return out

    def shard_tokens(self, shard_id: str) -> dict[str, int | None]:
        return dict(
            self._run(
                "SELECT key, estimated_tokens FROM shard_keys WHERE shard_id = ?", (shard_id,)
            )
        )

    # -- line errors, pacing -----------------------------------------------------------------

    def set_errors(self, batch_id: str, errors: Sequence[tuple[str, str]]) -> None:
        self._many(
            (
                "INSERT OR REPLACE INTO line_errors (key, batch_id, error) VALUES (?, ?, ?)",
                (k, batch_id, e),
            )
            for k, e in errors
        )

    def errors(self, keys: Iterable[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for chunk in _chunks(keys):
            marks = ",".join("?" * len(chunk))
            out.update(
                dict(self._run(f"SELECT key, error FROM line_errors WHERE key IN ({marks})", chunk))
            )
        return out

    def last_upload(self, batch_base_url: str) -> float:
        row = self._run("SELECT last FROM uploads WHERE batch_base_url = ?", (batch_base_url,))
        return float(row[0][0]) if row else 0.0

    def uploaded_now(self, batch_base_url: str) -> None:
        self._run(
            "INSERT OR REPLACE INTO uploads (batch_base_url, last) VALUES (?, ?)",
            (batch_base_url, time.time()),
        )

    # -- job claims (visionkit.batch.claims) ---------------------------------------------------

    def claim_job(self, job_id: str, owner: str, lease: float) -> tuple[str, float] | None:
        """Take the job for ``owner`` for ``lease`` seconds unless another owner's claim is
        live; returns ``None`` when taken, else (the other owner, seconds its claim has left)."""
        with self._lock, self._guard():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                now = time.time()
                held = self._db.execute(
                    "SELECT owner, expires FROM job_claims WHERE job_id = ?", (job_id,)
                ).fetchone()
                if held is not None and held[0] != owner and held[1] > now:
                    self._db.execute("COMMIT")
                    return str(held[0]), float(held[1]) - now
                self._db.execute(
                    "INSERT OR REPLACE INTO job_claims (job_id, owner, expires) VALUES (?, ?, ?)",
                    (job_id, owner, now + lease),
                )
                self._db.execute("COMMIT")
                return None
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def renew_job(self, job_id: str, owner: str, lease: float) -> bool:
        """Extend ``owner``'s claim; False when it no longer holds it."""
        with self._lock, self._guard():
            cur = self._db.execute(
                "UPDATE job_claims SET expires = ? WHERE job_id = ? AND owner = ?",
                (time.time() + lease, job_id, owner),
            )
            return cur.rowcount > 0

    def release_job(self, job_id: str, owner: str) -> None:
        self._run("DELETE FROM job_claims WHERE job_id = ? AND owner = ?", (job_id, owner))
