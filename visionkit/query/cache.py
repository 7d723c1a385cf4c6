"""A persistent answer cache in SQLite: each answer is committed the moment it arrives.

The key (``request_key``) hashes what decides the answer: the provider's name and base URL, the
model, the prompt text as sent, the system prompt, the schema, the request parameters and the
*content* digest of every image -- never the API key and never a file path, so renaming or
moving images keeps their answers and two keys for one provider share them.

The file lives under ``$VISIONKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/visionkit``, else
``~/.cache/visionkit`` (``answers.sqlite``). It runs in WAL mode with a busy timeout, so
several processes (two notebooks, a CLI run) can read and write one file at once, and every
``put`` is its own transaction: a crash or a kernel interrupt loses nothing already received.

Integrity: each answer is stored with a sha256 checksum of its key and fields. An entry whose
checksum does not match (a flipped byte on disk, a hand edit) is treated as a miss -- the run
asks again and the fresh answer replaces it -- with one ``CacheWarning`` per ``Cache``. Entries
written before checksums existed (no checksum) are trusted as they are. A file that is not a
SQLite database, or whose pages are damaged, raises one ``CacheError`` naming the file (at open,
or at the first read that meets the damage), never a raw ``sqlite3`` error per row.

Claims, so two processes never pay for one answer: before a run sends a request it claims the
key (``claim``): in one transaction it checks for an answer, then for another owner's live
claim, and only then writes its own, with a lease (``lease`` seconds, renewed by the owner while
it runs). A second process that finds a live claim does not send: it waits for the answer to
appear (``peek``), and takes the claim over if the owner gives it up (a failed request) or
dies (the lease runs out). Storing the answer removes the claim in the same transaction.

Usage:

    cache = Cache.open(True)          # the default file; Cache.open("run.sqlite") for your own
    key = request_key(provider="offline", base_url=None, model="m", prompt="Describe",
                      system=None, schema=None, params={}, images=["<sha256>"])
    cache.put(key, CachedAnswer(answer="a red square", prompt_tokens=1610))
    cache.get(key).answer
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Any

from ..errors import CacheError, CacheWarning, warn

__all__ = [
    "Cache",
    "CacheError",
    "CacheWarning",
    "CachedAnswer",
    "KeyMaker",
    "default_cache_path",
    "image_digest",
    "request_key",
]

logger = logging.getLogger("visionkit")

FILENAME = "answers.sqlite"
KEY_VERSION = 1  # bump when the key's recipe changes, so old entries are never misread
LEASE = 30.0  # seconds a claim lives unless its owner renews it

_TABLES = (
    """
    CREATE TABLE IF NOT EXISTS answers (
        key TEXT PRIMARY KEY,
        answer TEXT,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        estimated_tokens INTEGER,
        model TEXT,
        provider TEXT,
        created REAL NOT NULL,
        checksum TEXT,
        latency_s REAL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS claims (
        key TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        expires REAL NOT NULL
    )
    """,
    # Content digests of local files by their stat (visionkit.query.digests): an unchanged
    # file is not read again to learn that its answer is here.
    """
    CREATE TABLE IF NOT EXISTS digests (
        path TEXT PRIMARY KEY,
        stamp TEXT NOT NULL,
        digest TEXT NOT NULL
    )
    """,
)
_FIELDS = "answer, prompt_tokens, completion_tokens, estimated_tokens, model, provider, latency_s"
# An answer's row: its key, the fields above, when it was stored and its checksum.
_INSERT = (
    f"INSERT OR REPLACE INTO answers (key, {_FIELDS}, created, checksum) "
    f"VALUES ({', '.join('?' * (len(_FIELDS.split(',')) + 3))})"
)


@dataclass(frozen=True)
class CachedAnswer:
    """One stored answer and the usage the provider reported for it."""

    answer: str | None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    estimated_tokens: int | None = None
    model: str | None = None
    provider: str | None = None
    # seconds the provider took to give this answer (the successful attempt), when measured
    latency_s: float | None = None

    def values(self) -> tuple[Any, ...]:
        """The fields in order, as stored (``dataclasses.astuple`` deep-copies: 10x slower)."""
        return (
            self.answer,
            self.prompt_tokens,
            self.completion_tokens,
            self.estimated_tokens,
            self.model,
            self.provider,
            self.latency_s,
        )

    def checksum(self, key: str) -> str:
        """sha256 over the key and every field: what ``Cache.get`` verifies. An entry without
        a latency sums the fields it had before latencies were kept, so older entries verify."""
        values = self.values()
        fields = [key, *(values[:-1] if self.latency_s is None else values)]
        text = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


_ANSWER_FIELDS = tuple(f.name for f in dataclasses.fields(CachedAnswer))


def default_cache_path() -> Path:
    """``$VISIONKIT_CACHE_DIR`` or ``$XDG_CACHE_HOME/visionkit`` or ``~/.cache/visionkit``."""
    base = os.environ.get("VISIONKIT_CACHE_DIR")
    if base:
        return Path(base).expanduser() / FILENAME
    xdg = os.environ.get("XDG_CACHE_HOME")
    root = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return root / "visionkit" / FILENAME


def image_digest(data: bytes) -> str:
    """The sha256 hex digest of an image's bytes: its identity in a cache key."""
    return hashlib.sha256(data).hexdigest()


def request_key(
    *,
    provider: str,
    base_url: str | None,
    model: str,
    prompt: str,
    system: str | None,
    schema: Any,
    params: Mapping[str, Any],
    images: Sequence[str],
) -> str:
    """sha256 over everything that decides an answer (not the API key, not file paths)."""
    recipe = {
        "v": KEY_VERSION,
        "provider": provider,
        "base_url": (base_url or "").rstrip("/"),
        "model": model,
        "prompt": prompt,
        "system": system,
        "schema": schema,
        "params": dict(params),
        "images": list(images),
    }
    text = json.dumps(recipe, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class KeyMaker:
    """``request_key`` with all but the prompt and the images fixed: the same keys, with the
    JSON of the fixed parts written once instead of once a row."""

    def __init__(
        self,
        *,
        provider: str,
        base_url: str | None,
        model: str,
        system: str | None,
        schema: Any,
        params: Mapping[str, Any],
    ) -> None:
        marks = [f"\x00{os.urandom(8).hex()}\x00" for _ in range(2)]
        recipe = {
            "v": KEY_VERSION,
            "provider": provider,
            "base_url": (base_url or "").rstrip("/"),
            "model": model,
            "prompt": marks[0],
            "system": system,
            "schema": schema,
            "params": dict(params),
            "images": marks[1],
        }
        text = json.dumps(recipe, sort_keys=True, separators=(",", ":"), default=repr)
        # sorted keys: "images" comes before "prompt"
        head, _, rest = text.partition(json.dumps(marks[1]))
        middle, _, tail = rest.partition(json.dumps(marks[0]))
        self._parts = (head, middle, tail)

    def __call__(self, prompt: str, images: Sequence[str]) -> str:
        head, middle, tail = self._parts
        # json.dumps's own string encoder: a list dumped with separators= builds an encoder
        listed = "[" + ",".join(map(encode_basestring_ascii, images)) + "]"
        text = head + listed + middle + encode_basestring_ascii(prompt) + tail
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _damaged(exc: BaseException) -> bool:
    """A ``sqlite3`` error that means the file is not (or no longer) a sound database."""
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        return "malformed" in text or "not a database" in text or "disk i/o" in text
    return isinstance(exc, sqlite3.DatabaseError)


class Cache:
    """A thread-safe handle on one SQLite answer file (``Cache.open(True | False | path)``).

    ``lease``: seconds a claim made through this handle lives without renewal (see the module
    docstring); the owner renews it every ``lease / 3`` seconds while its run lasts.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, timeout: float = 30.0, lease: float = LEASE
    ) -> None:
        self.path = Path(path).expanduser()
        self.lease = float(lease)
        self.corrupt = 0  # entries that failed their checksum through this handle
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit, so every put is durable when it returns.
        self._db = sqlite3.connect(
            self.path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            self._retry_locked(lambda: self._db.execute("PRAGMA journal_mode = WAL"))
            self._db.execute("PRAGMA synchronous = NORMAL")
            for table in _TABLES:
                self._retry_locked(functools.partial(self._db.execute, table))
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(answers)")}
            for name, kind in (("checksum", "TEXT"), ("latency_s", "REAL")):
                if name not in columns:  # a cache from before this column: keep its answers
                    alter = f"ALTER TABLE answers ADD COLUMN {name} {kind}"
                    self._retry_locked(functools.partial(self._db.execute, alter))
            self._db.execute("SELECT COUNT(*) FROM answers").fetchone()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            if not _damaged(exc):
                raise
            raise self._error(exc) from None

    def _error(self, exc: BaseException) -> CacheError:
        return CacheError(
            f"the answer cache {str(self.path)!r} cannot be used: {exc} (it is not a SQLite "
            "database, or it is damaged). Move it away -- only cached answers are lost, and "
            "`sqlite3 FILE .recover` may save them -- or pass cache= another path.",
            path=self.path,
        )

    def _run(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` under the lock; a damaged file becomes one ``CacheError``."""
        with self._lock:
            try:
                return self._retry_locked(fn)
            except sqlite3.DatabaseError as exc:
                if _damaged(exc):
                    raise self._error(exc) from None
                raise

    @classmethod
    def open(cls, cache: bool | str | os.PathLike[str] | Cache | None) -> Cache | None:
        """``True`` -> the default file, ``False``/``None`` -> no cache, a path -> that file.

        A path that is an existing directory gets ``answers.sqlite`` inside it.
        """
        if isinstance(cache, Cache):
            return cache
        if cache is None or cache is False:
            return None
        if cache is True:
            return cls(default_cache_path())
        path = Path(cache).expanduser()
        if path.is_dir():
            path = path / FILENAME
        return cls(path)

    def _retry_locked(self, fn: Callable[[], Any], attempts: int = 50) -> Any:
        # busy_timeout covers normal contention; switching to WAL and creating the table can
        # still report "locked" while another process does the same, so retry briefly.
        for i in range(attempts):
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or i == attempts - 1:
                    raise
                time.sleep(0.02 * (i + 1))
        return None

    def _verified(self, key: str, row: Sequence[Any]) -> CachedAnswer | None:
        """The entry from a row (its fields then its checksum), or None if it is corrupt."""
        entry = CachedAnswer(*row[:7])
        stored = row[7]
        if stored is None or stored == entry.checksum(key):
            return entry
        self.corrupt += 1
        logger.warning(
            "cache entry %s in %s failed its checksum; asking again", key[:12], self.path
        )
        if self.corrupt == 1:
            warn(
                f"a cached answer in {self.path} failed its checksum (the file was changed or "
                "damaged); it is treated as missing and asked again. Further ones are logged.",
                CacheWarning,
            )
        return None

    def _fetch_all(self, query: str, args: Sequence[Any]) -> list[Any]:
        return self._db.execute(query, args).fetchall()

    def get(self, key: str) -> CachedAnswer | None:
        """The stored answer for ``key``, or ``None`` (also when it fails its checksum)."""
        row = self._run(
            lambda: self._db.execute(
                f"SELECT {_FIELDS}, checksum FROM answers WHERE key = ?", (key,)
            ).fetchone()
        )
        return None if row is None else self._verified(key, row)

    def get_many(self, keys: Iterable[str]) -> dict[str, CachedAnswer]:
        """Stored answers for any of ``keys`` (missing or corrupt keys are absent)."""
        keys = list(dict.fromkeys(keys))
        out: dict[str, CachedAnswer] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT key, {_FIELDS}, checksum FROM answers WHERE key IN ({marks})"
            rows = self._run(functools.partial(self._fetch_all, query, chunk))
            for r in rows:
                entry = self._verified(r[0], r[1:])
                if entry is not None:
                    out[r[0]] = entry
        return out

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction, taken at once (no deadlock between two upgrading readers)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            # also when COMMIT itself fails (busy, disk full): a connection left inside the
            # transaction would refuse every later BEGIN, and no answer would reach the file
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def put(self, key: str, entry: CachedAnswer) -> None:
        """Store ``entry`` under ``key`` and commit at once (one transaction per answer); any
        claim on ``key`` is removed in the same transaction."""

        def write() -> None:
            with self._transaction():
                self._db.execute(
                    _INSERT,
                    (key, *entry.values(), time.time(), entry.checksum(key)),
                )
                self._db.execute("DELETE FROM claims WHERE key = ?", (key,))

        self._run(write)

    def put_many(self, entries: Mapping[str, CachedAnswer]) -> None:
        """Store every entry in one transaction, committed before this returns (a batch job's
        chunk of results: one commit per chunk, not per answer); their claims are removed."""
        if not entries:
            return
        now = time.time()
        rows = [(key, *entry.values(), now, entry.checksum(key)) for key, entry in entries.items()]

        def write() -> None:
            with self._transaction():
                self._db.executemany(_INSERT, rows)
                self._db.executemany("DELETE FROM claims WHERE key = ?", [(r[0],) for r in rows])

        self._run(write)

    # -- the digest index (visionkit.query.digests) ---------------------------------------
    def recall(self, paths: Sequence[str]) -> dict[str, tuple[tuple[int, ...], str]]:
        """The remembered (stat stamp, digest) of any of ``paths`` (best effort: a busy or
        failing read recalls nothing, and the files are read instead)."""
        out: dict[str, tuple[tuple[int, ...], str]] = {}
        for start in range(0, len(paths), 500):
            chunk = list(paths[start : start + 500])
            query = (
                "SELECT path, stamp, digest FROM digests WHERE path IN "
                f"({','.join('?' * len(chunk))})"
            )
            try:
                rows = self._run(functools.partial(self._fetch_all, query, chunk))
            except CacheError:
                raise
            except Exception as exc:
                logger.debug("could not recall digests: %s", exc)
                return out
            for path, stamp, digest in rows:
                try:
                    out[path] = (tuple(int(x) for x in stamp.split(":")), digest)
                except (AttributeError, ValueError):
                    continue
        return out

    def remember(self, entries: Sequence[tuple[str, Sequence[int], str]]) -> None:
        """Remember (path, stat stamp, digest) entries in one transaction (best effort)."""
        rows = [(path, ":".join(map(str, stamp)), digest) for path, stamp, digest in entries]

        def write() -> None:
            with self._transaction():
                self._db.executemany(
                    "INSERT OR REPLACE INTO digests (path, stamp, digest) VALUES (?, ?, ?)", rows
                )

        try:
            self._run(write)
        except CacheError:
            raise
        except Exception as exc:
            logger.debug("could not remember digests: %s", exc)

    # -- claims: one process pays, the others wait ----------------------------------------
    def claim(self, key: str, owner: str) -> CachedAnswer | bool:
        """Claim ``key`` for ``owner`` before sending its request.

        Returns the answer if one is stored (send nothing), ``True`` if ``owner`` now holds
        the claim (send; ``put`` or ``release`` ends it), ``False`` if another owner's claim
        is live (wait: ``peek`` until the answer appears or the claim is gone).
        """

        def attempt() -> CachedAnswer | bool:
            with self._transaction():
                row = self._db.execute(
                    f"SELECT {_FIELDS}, checksum FROM answers WHERE key = ?", (key,)
                ).fetchone()
                entry = None if row is None else self._verified(key, row)
                if entry is not None:
                    return entry
                now = time.time()
                held = self._db.execute(
                    "SELECT owner, expires FROM claims WHERE key = ?", (key,)
                ).fetchone()
                if held is not None and held[0] != owner and held[1] > now:
                    return False
                self._db.execute(
                    "INSERT OR REPLACE INTO claims (key, owner, expires) VALUES (?, ?, ?)",
                    (key, owner, now + self.lease),
                )
                return True

        result: CachedAnswer | bool = self._run(attempt)
        return result

    def peek(self, key: str, owner: str) -> CachedAnswer | bool:
        """For a waiter: the answer if stored, ``True`` if no other owner holds a live claim
        any more (it is now ``owner``'s: send), ``False`` to keep waiting. Reads only, unless
        something changed."""
        held = self._run(
            lambda: self._db.execute(
                "SELECT owner, expires FROM claims WHERE key = ?", (key,)
            ).fetchone()
        )
        if held is not None and held[0] != owner and held[1] > time.time():
            return False
        return self.claim(key, owner)

    def renew(self, owner: str) -> int:
        """Extend every claim ``owner`` holds by one lease; returns how many it holds."""
        cur = self._run(
            lambda: self._db.execute(
                "UPDATE claims SET expires = ? WHERE owner = ?", (time.time() + self.lease, owner)
            )
        )
        return int(cur.rowcount)

    def release(self, key: str | None, owner: str) -> None:
        """Give up ``owner``'s claim on ``key`` (every claim of ``owner`` when ``key`` is None)."""
        if key is None:
            self._run(lambda: self._db.execute("DELETE FROM claims WHERE owner = ?", (owner,)))
        else:
            self._run(
                lambda: self._db.execute(
                    "DELETE FROM claims WHERE key = ? AND owner = ?", (key, owner)
                )
            )

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def __len__(self) -> int:
        return int(
            self._run(lambda: self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])
        )

    def clear(self) -> None:
        """Delete every stored answer (and claim)."""
        self._run(lambda: self._db.execute("DELETE FROM answers"))
        self._run(lambda: self._db.execute("DELETE FROM claims"))

    def close(self) -> None:
        """Close the database file (``with Cache(...) as cache:`` closes it on leaving)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Cache({str(self.path)!r})"
