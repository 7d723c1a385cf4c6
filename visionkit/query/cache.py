"""A persistent answer cache in SQLite: each answer is committed the moment it arrives.

The key (``request_key``) hashes what decides the answer: the provider's name and base URL, the
model, the prompt text as sent, the system prompt, the schema, the request parameters and the
*content* digest of every image -- never the API key and never a file path, so renaming or
moving images keeps their answers and two keys for one provider share them.

The file lives under ``$VISIONKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/visionkit``, else
``~/.cache/visionkit`` (``answers.sqlite``). It runs in WAL mode with a busy timeout, so
several processes (two notebooks, a CLI run) can read and write one file at once, and every
``put`` is its own transaction: a crash or a kernel interrupt loses nothing already received.

Usage::

    cache = Cache.open(True)          # the default file; Cache.open("run.sqlite") for your own
    key = request_key(provider="offline", base_url=None, model="m", prompt="Describe",
                      system=None, schema=None, params={}, images=["<sha256>"])
    cache.put(key, CachedAnswer(answer="a red square", prompt_tokens=1610))
    cache.get(key).answer
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Cache", "CachedAnswer", "default_cache_path", "image_digest", "request_key"]

FILENAME = "answers.sqlite"
KEY_VERSION = 1  # bump when the key's recipe changes, so old entries are never misread

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    answer TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    estimated_tokens INTEGER,
    model TEXT,
    provider TEXT,
    created REAL NOT NULL
)
"""


@dataclass(frozen=True)
class CachedAnswer:
    """One stored answer and the usage the provider reported for it."""

    answer: str | None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    estimated_tokens: int | None = None
    model: str | None = None
    provider: str | None = None


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


class Cache:
    """A thread-safe handle on one SQLite answer file (``Cache.open(True | False | path)``)."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # isolation_level=None: autocommit, so every put is durable when it returns.
        self._db = sqlite3.connect(
            self.path, timeout=timeout, isolation_level=None, check_same_thread=False
        )
        self._db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        self._retry_locked(lambda: self._db.execute("PRAGMA journal_mode = WAL"))
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._retry_locked(lambda: self._db.execute(_SCHEMA))

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

    def _retry_locked(self, fn: Any, attempts: int = 50) -> Any:
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

    def get(self, key: str) -> CachedAnswer | None:
        """The stored answer for ``key``, or ``None``."""
        with self._lock:
            row = self._db.execute(
                "SELECT answer, prompt_tokens, completion_tokens, estimated_tokens, model, "
                "provider FROM answers WHERE key = ?",
                (key,),
            ).fetchone()
        return None if row is None else CachedAnswer(*row)

    def get_many(self, keys: Iterable[str]) -> dict[str, CachedAnswer]:
        """Stored answers for any of ``keys`` (missing keys are absent from the result)."""
        keys = list(dict.fromkeys(keys))
        out: dict[str, CachedAnswer] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            with self._lock:
                rows = self._db.execute(
                    "SELECT key, answer, prompt_tokens, completion_tokens, estimated_tokens, "
                    f"model, provider FROM answers WHERE key IN ({marks})",
                    chunk,
                ).fetchall()
            out.update({r[0]: CachedAnswer(*r[1:]) for r in rows})
        return out

    def put(self, key: str, entry: CachedAnswer) -> None:
        """Store ``entry`` under ``key`` and commit at once (one transaction per answer)."""
        with self._lock:
            self._retry_locked(
                lambda: self._db.execute(
                    "INSERT OR REPLACE INTO answers (key, answer, prompt_tokens, "
                    "completion_tokens, estimated_tokens, model, provider, created) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        key,
                        entry.answer,
                        entry.prompt_tokens,
                        entry.completion_tokens,
                        entry.estimated_tokens,
                        entry.model,
                        entry.provider,
                        time.time(),
                    ),
                )
            )

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def clear(self) -> None:
        """Delete every stored answer."""
        with self._lock:
            self._db.execute("DELETE FROM answers")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Cache({str(self.path)!r})"
