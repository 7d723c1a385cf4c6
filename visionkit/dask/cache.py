"""The answer cache on a cluster: each worker's SQLite file, plus claims held by the coordinator.

What is supported (README "Scaling out with Dask"):

- **One machine** (a ``LocalCluster``, or every worker on one host): ``cache=True`` or a path is
  one SQLite file all workers open (WAL mode, one transaction per answer), exactly as several
  notebooks share it. Every guarantee of ``ask`` holds across the cluster: answers committed as
  they arrive, a re-run or a retried task sends only what is missing, a dead worker loses only
  its requests in flight.
- **Several machines**: the same path is opened on each machine, so each has its own file
  (SQLite's WAL needs shared memory, so one file on NFS is *not* supported). Claims are still
  cluster-wide, so no two workers send one key at once, and a worker that waited for a key
  another machine was asking gets that answer from the coordinator's memory of recent answers
  (``limiter.MEMO_SIZE``). ``out=`` is then what makes a run durable across machines: a
  finished partition's Parquet file is never redone, and a partition retried on another
  machine re-sends the answers its first machine had received but not yet written.

``ClusterCache`` is a ``visionkit.query.cache.Cache`` to the run (``get``, ``put``, ``claim``,
``peek``, ``renew``, ``release``): answers come from and go to the worker's local file, and a
claim is taken at the coordinator first, then in the local file (which keeps out a plain
``ask`` in another process on the same machine). Storing an answer tells the coordinator
(without waiting), which drops the claim and remembers the answer for waiters.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from typing import Any

from ..query.cache import FILENAME, Cache, CachedAnswer, default_cache_path
from .limiter import Link

__all__ = ["ClusterCache", "cache_path"]


def cache_path(cache: Any) -> str | None:
    """What a task carries for ``cache=``: a path (resolved on the worker when ``True``), or
    ``None`` for no cache. A ``Cache`` object (an open SQLite handle) becomes its path."""
    if cache is None or cache is False:
        return None
    if cache is True:
        return ""  # the worker's default file
    if isinstance(cache, Cache):
        return str(cache.path)
    return os.fspath(cache)


class ClusterCache(Cache):
    """The worker's cache file (or none) with cluster-wide claims (see the module docstring)."""

    def __init__(self, local: Cache | None, line: Link, *, scope: str = "") -> None:
        # No file of its own: ``local`` holds the answers (this deliberately skips
        # Cache.__init__, which would open one).
        self.local = local
        self.link = line
        self.scope = scope  # which remembered answers this cache may use (see for_worker)
        self.path = local.path if local is not None else default_cache_path().parent / FILENAME
        self.lease = local.lease if local is not None else 30.0
        self.corrupt = 0

    @classmethod
    def for_worker(cls, path: str | None, line: Link, job: str) -> ClusterCache:
        """The cache a task of call ``job`` uses: ``path`` ("" for the default file) or none.

        Answers the coordinator remembers serve only runs with the same cache setting (one
        call, without a cache), so a fresh cache file is never answered from another's."""
        if path is None:
            return cls(None, line, scope=f"job:{job}|")
        local = Cache.open(True if path == "" else path)
        return cls(local, line, scope=f"cache:{path}|")

    def get(self, key: str) -> CachedAnswer | None:
        return self.local.get(key) if self.local is not None else None

    def get_many(self, keys: Iterable[str]) -> dict[str, CachedAnswer]:
        return self.local.get_many(keys) if self.local is not None else {}

    def recall(self, paths: Sequence[str]) -> dict[str, tuple[tuple[int, ...], str]]:
        return self.local.recall(paths) if self.local is not None else {}

    def remember(self, entries: Sequence[tuple[str, Sequence[int], str]]) -> None:
        if self.local is not None:
            self.local.remember(entries)

    def put(self, key: str, entry: CachedAnswer) -> None:
        if self.local is not None:
            self.local.put(key, entry)
        self.link.send("done", key=key, entry=dataclasses.asdict(entry), scope=self.scope)

    def claim(self, key: str, owner: str) -> CachedAnswer | bool:
        got = self.link.call("claim", key=key, owner=owner, scope=self.scope)
        if isinstance(got, dict):
            return CachedAnswer(**got)
        if got == "busy":
            return False
        if self.local is None:
            return True
        here = self.local.claim(key, owner)
        if here is not True:  # stored meanwhile, or a process outside the cluster asks it
            self.link.call("unclaim", key=key, owner=owner)
        return here

    def peek(self, key: str, owner: str) -> CachedAnswer | bool:
        if self.local is not None:
            found = self.local.get(key)
            if found is not None:
                return found
        return self.claim(key, owner)

    def renew(self, owner: str) -> int:
        return self.local.renew(owner) if self.local is not None else 0

    def release(self, key: str | None, owner: str) -> None:
        if self.local is not None:
            self.local.release(key, owner)
        if key is None:
            self.link.call("forget", owner=owner)
        else:
            self.link.call("unclaim", key=key, owner=owner)

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def __len__(self) -> int:
        return len(self.local) if self.local is not None else 0

    def clear(self) -> None:
        if self.local is not None:
            self.local.clear()

    def close(self) -> None:
        if self.local is not None:
            self.local.close()

    def __repr__(self) -> str:
        return f"ClusterCache({self.local!r})"
