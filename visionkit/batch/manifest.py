"""The batch manifest: a SQLite file beside the answer cache recording every job, input file
and batch the moment it exists, so nothing paid for is lost to a crash or an interrupt.

Tables:

- ``jobs``: one row per job (its id and a small number ``num`` the other tables use, provider,
  base URLs, model, prompt, system prompt, schema, the identity its cache keys were made under,
  the file limits it was cut by, when made).
- ``rows``: the job's rows in order: label (JSON; NULL when it is the row's position), cache
  key (32 bytes), the planning error or status (``send``, ``hit``, ``covered``, ``repeat``,
  ``error``, or ``reused``: a hit reported as bought because a recording was on, with the
  ``attempts`` and ``batch_id`` to report; see ``visionkit.batch.replayed``), estimated tokens,
  what the row asks (its prompt only when it is not the job's -- a template filled per row --
  and its images' sha256, 32 bytes each): what a recording of its answer holds; and ``seq``,
  the job's input file that holds it last.
- ``held``: the earlier files of a row sent more than once (each made a batch), so a result
  counts every batch that held it.
- ``shards``: each JSONL input file: its local path, lines, bytes, then its ``file_id`` as
  soon as the upload returns, its ``batch_id`` as soon as the batch is created, the batch's
  last known status and counts, whether its results were collected into the cache, the result
  lines not taken, and for sending rows again (``visionkit.batch.resend``): its ``round``
  (0: sent by ``submit``), whether rows of it wait to be sent again (``resend``), and whether
  the user cancelled it (``user_cancel``: those rows are not sent again).
- ``line_errors``: the provider's message for a line that failed (by key), until answered.
- ``uploads``: when the last file was uploaded to each batch URL (the pacing survives a
  restart).
- ``job_claims``: which process is submitting a job now, until when (a lease its owner renews):
  two processes submitting one job never both upload it (``visionkit.batch.claims``).

What is written per row is what a row needs, once: the prompt and templates are the job's
(once per job), a key and a digest are bytes, not hex, and a row is in one table with two lean
indexes (by the key's first 8 bytes; by file): about 130 bytes a row. A manifest made by an
earlier visionkit (``job_rows`` and ``shard_keys``) is converted when it is opened
(``visionkit.batch.manifest_v1``).

A shard moves ``written`` -> ``uploaded`` -> ``created`` -> ``collected``; a key is *covered*
(not submitted again) while it sits in a shard that is not collected yet. Each change is its
own transaction (WAL mode, a busy timeout: several processes may share the file). A file that
is not SQLite, or whose pages are damaged, raises one ``CacheError`` naming it and saying what
to do (at open, or at the first read that meets the damage), never a raw ``sqlite3`` error.
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
from .packing import pack_images, pack_key, unpack_images, unpack_key

__all__ = ["JobRow", "Manifest", "label_json", "manifest_path", "stored_label"]

VERSION = 2  # PRAGMA user_version of the layout below

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS jobs (
        job_id TEXT PRIMARY KEY, created REAL NOT NULL,
        provider TEXT, base_url TEXT, batch_base_url TEXT, model TEXT,
        prompt TEXT, schema TEXT, cache_path TEXT, metadata TEXT,
        system TEXT, identity TEXT, num INTEGER, limits TEXT
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS jobs_num ON jobs (num)",
    """CREATE TABLE IF NOT EXISTS rows (
        job INTEGER NOT NULL, pos INTEGER NOT NULL, label TEXT, key BLOB, status TEXT,
        error TEXT, tokens INTEGER, attempts INTEGER, batch_id TEXT, prompt TEXT, images BLOB,
        seq INTEGER,
        PRIMARY KEY (job, pos)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS rows_key ON rows (substr(key, 1, 8))",
    "CREATE INDEX IF NOT EXISTS rows_seq ON rows (job, seq) WHERE seq IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS held (
        job INTEGER NOT NULL, pos INTEGER NOT NULL, seq INTEGER NOT NULL,
        PRIMARY KEY (job, pos, seq)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS shards (
        shard_id TEXT PRIMARY KEY, job_id TEXT NOT NULL, seq INTEGER, path TEXT,
        lines INTEGER, bytes INTEGER, state TEXT NOT NULL, created REAL,
        file_id TEXT, batch_id TEXT, status TEXT,
        completed INTEGER DEFAULT 0, failed INTEGER DEFAULT 0, total INTEGER DEFAULT 0,
        output_file_id TEXT, error_file_id TEXT,
        foreign_lines INTEGER, duplicate_lines INTEGER, unreadable_lines INTEGER, job INTEGER,
        round INTEGER DEFAULT 0, resend INTEGER DEFAULT 0, user_cancel INTEGER DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS shards_job ON shards (job_id)",
    "CREATE INDEX IF NOT EXISTS shards_seq ON shards (job, seq)",
    "CREATE TABLE IF NOT EXISTS line_errors (key TEXT PRIMARY KEY, batch_id TEXT, error TEXT)",
    "CREATE TABLE IF NOT EXISTS uploads (batch_base_url TEXT PRIMARY KEY, last REAL)",
    """CREATE TABLE IF NOT EXISTS job_claims (
        job_id TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL
    )""",
)

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
    seq: int | None = None  # the job's input file the row went to last


def _is_position(label: Any, pos: int) -> bool:
    """Whether a row's label is its position (a default RangeIndex): stored as NULL."""
    return (type(label) is int and label == pos) or (
        hasattr(label, "dtype") and label.dtype.kind in "iu" and int(label) == pos
    )


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
        self._nums: dict[str, int] = {}  # job id -> num
        self._prompts: dict[int, str | None] = {}  # num -> the job's prompt
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
            if self._db.execute("PRAGMA user_version").fetchone()[0] >= VERSION:
                return
            self._db.execute("BEGIN IMMEDIATE")  # one process converts, the others wait
            try:
                if self._db.execute("PRAGMA user_version").fetchone()[0] < VERSION:
                    tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master")}
                    if "job_rows" in tables:
                        from .manifest_v1 import upgrade

                        upgrade(self._db, _SCHEMA)
                    for statement in _SCHEMA:
                        self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version = {VERSION}")
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

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

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """The connection inside one write transaction (taken at once), committed when the
        block ends, rolled back if it raises."""
        with self._lock, self._guard():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _many(self, statements: Iterable[tuple[str, Sequence[Any]]]) -> None:
        """Several statements in one transaction."""
        with self.transaction() as db:
            for sql, params in statements:
                db.execute(sql, params)

    # -- jobs --------------------------------------------------------------------------------

    def save_job(self, job_id: str, **fields: Any) -> None:
        """Record the job (with the next ``num``), or update its fields; one transaction:
        two processes may save it at once."""
        statements: list[tuple[str, Sequence[Any]]] = [
            (
                "INSERT OR IGNORE INTO jobs (job_id, created, num) "
                "VALUES (?, ?, (SELECT COALESCE(MAX(num), 0) + 1 FROM jobs))",
                (job_id, time.time()),
            )
        ]
        if fields:
            sets = ",".join(f"{k} = ?" for k in fields)
            statements.append(
                (f"UPDATE jobs SET {sets} WHERE job_id = ?", [*fields.values(), job_id])
            )
        self._many(statements)
        self._prompts.clear()

    def job(self, job_id: str) -> dict[str, Any] | None:
        found = self._dicts("SELECT * FROM jobs WHERE job_id = ?", (job_id,))
        return found[0] if found else None

    def jobs(self) -> list[dict[str, Any]]:
        return self._dicts("SELECT * FROM jobs ORDER BY created")

    def num(self, job_id: str) -> int:
        """The job's number in the other tables (``KeyError`` for a job never saved)."""
        if job_id not in self._nums:
            found = self._run("SELECT num FROM jobs WHERE job_id = ?", (job_id,))
            if not found:
                raise KeyError(f"no batch job {job_id!r} in {self.path}")
            self._nums[job_id] = int(found[0][0])
        return self._nums[job_id]

    def _prompt(self, num: int) -> str | None:
        if num not in self._prompts:
            found = self._run("SELECT prompt FROM jobs WHERE num = ?", (num,))
            self._prompts[num] = found[0][0] if found else None
        return self._prompts[num]

    def add_rows(self, job_id: str, rows: Sequence[Sequence[Any]]) -> None:
        """The job's rows as planned (``JobRow``s, or tuples in its order), in one transaction.

        A row planned again keeps the file it was last sent in unless it is sent now; a row
        sent again remembers the earlier file in ``held`` if that file made a batch."""
        num = self.num(job_id)
        prompt = self._prompt(num)
        planned = [JobRow(*r) for r in rows]
        records = [
            (
                num,
                r.pos,
                None if _is_position(r.label, r.pos) else label_json(r.label),
                pack_key(r.key),
                r.status,
                r.error,
                r.estimated_tokens,
                r.attempts,
                r.batch_id,
                None if r.prompt == prompt else r.prompt,
                pack_images(r.images),
                r.seq,
            )
            for r in planned
        ]
        resent = [(num, r.pos, r.seq) for r in planned if r.seq is not None]
        with self.transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO held (job, pos, seq) SELECT r.job, r.pos, r.seq "
                "FROM rows r JOIN shards s ON s.job = r.job AND s.seq = r.seq "
                "WHERE r.job = ? AND r.pos = ? AND r.seq != ? AND s.batch_id IS NOT NULL",
                resent,
            )
            db.executemany(
                "INSERT INTO rows (job, pos, label, key, status, error, tokens, attempts, "
                "batch_id, prompt, images, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (job, pos) DO UPDATE SET label = excluded.label, "
                "key = excluded.key, status = excluded.status, error = excluded.error, "
                "tokens = excluded.tokens, attempts = excluded.attempts, "
                "batch_id = excluded.batch_id, prompt = excluded.prompt, "
                "images = excluded.images, seq = COALESCE(excluded.seq, rows.seq)",
                records,
            )

    def rows(self, job_id: str) -> list[JobRow]:
        """The job's rows in order (without ``prompt`` and ``images``: see ``requests``)."""
        return [
            JobRow(
                pos,
                pos if label is None else json.loads(label),
                unpack_key(key),
                status,
                error,
                tokens,
                attempts,
                batch_id,
                seq=seq,
            )
            for pos, label, key, status, error, tokens, attempts, batch_id, seq in self._run(
                "SELECT pos, label, key, status, error, tokens, attempts, batch_id, seq "
                "FROM rows WHERE job = ? ORDER BY pos",
                (self.num(job_id),),
            )
        ]

    def requests(self, keys: Iterable[str]) -> dict[str, tuple[str, str | None, list[str]]]:
        """key -> (prompt, system prompt, image digests): what the key's row asks."""
        out: dict[str, tuple[str, str | None, list[str]]] = {}
        for chunk in _chunks(keys):
            wanted = {pack_key(k): k for k in chunk}
            heads = list({k[:8] for k in wanted if k is not None})
            marks = ",".join("?" * len(heads))
            for key, prompt, system, images in self._run(
                "SELECT r.key, COALESCE(r.prompt, j.prompt), j.system, r.images "
                "FROM rows r JOIN jobs j ON j.num = r.job "
                f"WHERE substr(r.key, 1, 8) IN ({marks})",
                heads,
            ):
                if key in wanted:
                    out[wanted[key]] = (prompt, system, unpack_images(images))
        return out

    # -- shards ------------------------------------------------------------------------------

    def add_shard(
        self,
        shard_id: str,
        job_id: str,
        seq: int,
        path: Path,
        lines: int,
        nbytes: int,
        state: str = "written",
    ) -> None:
        """A closed shard file of ``lines`` lines (its rows name it by ``seq``: ``add_rows``)."""
        self._run(
            "INSERT INTO shards (shard_id, job_id, job, seq, path, lines, bytes, state, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                shard_id,
                job_id,
                self.num(job_id),
                seq,
                str(path),
                lines,
                nbytes,
                state,
                time.time(),
            ),
        )

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
        packed = pack_key(key)
        assert packed is not None
        marks = ",".join("?" * len(LIVE))
        row = self._run(
            "SELECT 1 FROM rows r JOIN shards s ON s.job = r.job AND s.seq = r.seq "
            f"WHERE substr(r.key, 1, 8) = ? AND r.key = ? AND s.state IN ({marks}) LIMIT 1",
            (packed[:8], packed, *LIVE),
        )
        return bool(row)

    def live_keys(self) -> set[bytes | str]:
        """Every key in a shard not yet collected, as stored (``pack_key``): ``covered`` for
        all keys at once."""
        marks = ",".join("?" * len(LIVE))
        return {
            key
            for (key,) in self._run(
                "SELECT r.key FROM shards s JOIN rows r ON r.job = s.job AND r.seq = s.seq "
                f"WHERE s.state IN ({marks})",
                LIVE,
            )
        }

    def covered_keys(self) -> set[str]:
        """Every key in a shard not yet collected, as hex."""
        return {k for k in map(unpack_key, self.live_keys()) if k is not None}

    def live_among(self, keys: Iterable[str]) -> set[str]:
        """Those of ``keys`` in a shard not yet collected: ``covered`` for many keys, a query
        per chunk through the key index (``live_keys`` reads every live key instead)."""
        found: set[str] = set()
        states = ",".join("?" * len(LIVE))
        for chunk in _chunks(keys):
            wanted = {pack_key(k): k for k in chunk}
            heads = list({k[:8] for k in wanted if k is not None})
            marks = ",".join("?" * len(heads))
            for (key,) in self._run(
                "SELECT r.key FROM rows r JOIN shards s ON s.job = r.job AND s.seq = r.seq "
                f"WHERE substr(r.key, 1, 8) IN ({marks}) AND s.state IN ({states})",
                [*heads, *LIVE],
            ):
                if key in wanted:
                    found.add(wanted[key])
        return found

    def submissions(self, job_id: str) -> dict[str, tuple[int, str | None]]:
        """key -> (how many of this job's batches held it, the latest one's batch id). A
        file never made a batch (refused by the budget, lost) does not count."""
        num = self.num(job_id)
        found = self._run(
            "SELECT r.key, s.seq, s.batch_id FROM rows r "
            "JOIN shards s ON s.job = r.job AND s.seq = r.seq "
            "WHERE r.job = ? AND s.batch_id IS NOT NULL "
            "UNION ALL "
            "SELECT r.key, s.seq, s.batch_id FROM held h "
            "JOIN rows r ON r.job = h.job AND r.pos = h.pos "
            "JOIN shards s ON s.job = h.job AND s.seq = h.seq "
            "WHERE h.job = ? AND s.batch_id IS NOT NULL ORDER BY 2",
            (num, num),
        )
        seen: dict[str, set[int]] = {}
        latest: dict[str, str] = {}
        for key, seq, batch_id in found:
            name = unpack_key(key)
            if name is None:
                continue
            seen.setdefault(name, set()).add(seq)
            latest[name] = batch_id
        return {k: (len(seqs), latest[k]) for k, seqs in seen.items()}

    def shard_tokens(self, shard_id: str) -> dict[str, int | None]:
        """The keys a shard holds (its lines' ``custom_id``) and their estimated tokens."""
        return {
            unpack_key(key) or "": tokens
            for key, tokens in self._run(
                "SELECT r.key, r.tokens FROM shards s "
                "JOIN rows r ON r.job = s.job AND r.seq = s.seq WHERE s.shard_id = ?",
                (shard_id,),
            )
        }

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
