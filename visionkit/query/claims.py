"""A run's claims on cache keys: one process pays for an answer, the others wait for it.

Before a run sends a key's request it claims the key in the answer cache
(``visionkit.query.cache``: ``claim``/``peek``/``renew``/``release``). ``Claims`` is that
conversation for one run: take a claim, keep the run's claims alive while it runs, wait while
another process holds a key, and give claims up when a request fails or the run ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass

from ..errors import CacheError
from .cache import Cache, CachedAnswer

__all__ = ["CLAIM_POLL", "Claims", "new_owner"]

logger = logging.getLogger("visionkit")

CLAIM_POLL = 0.25  # seconds between looks at a key another process is asking (jittered)


def new_owner() -> str:
    """A name for one run when it claims keys: host, process and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


@dataclass
class Claims:
    """The claims ``owner`` holds in ``cache`` (see the module docstring)."""

    cache: Cache
    owner: str

    def take(self, key: str) -> CachedAnswer | bool:
        """The stored answer, ``True`` (ours now: send) or ``False`` (another process's)."""
        return self.cache.claim(key, self.owner)

    def give_up(self, key: str) -> None:
        """Not answered: let another process try ``key`` (best effort)."""
        with contextlib.suppress(Exception):
            self.cache.release(key, self.owner)

    def release_all(self) -> None:
        """The run ended: claims of rows never sent go back."""
        with contextlib.suppress(CacheError):
            self.cache.release(None, self.owner)

    async def keep_alive(self, on_broken: Callable[[CacheError], None]) -> None:
        """Renew the claims a third of a lease at a time until cancelled; a broken cache file
        is handed to ``on_broken`` and ends the loop."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.cache.lease / 3)
            try:
                # the default executor, not the run's pool: that one queues image reads and
                # encodes that can take longer than the lease's slack, and a late renewal lets
                # another process take the key over and pay for it again
                await loop.run_in_executor(None, self.cache.renew, self.owner)
            except CacheError as exc:
                on_broken(exc)
                return
            except Exception as exc:  # a busy file: the next round tries again
                logger.debug("could not renew claims: %s", exc)

    async def wait_turn(
        self,
        key: str,
        *,
        stopping: Callable[[], bool],
        sleep: Callable[[float], Awaitable[None]],
        pool: Executor,
    ) -> CachedAnswer | bool:
        """Wait while another process asks ``key``: its answer, or ``True`` once the key is
        ours to ask (the other gave up or died and its lease ran out), or ``False`` if the run
        is stopping."""
        loop = asyncio.get_running_loop()
        while not stopping():
            await sleep(CLAIM_POLL * (0.5 + random.random()))
            if stopping():
                break
            got: CachedAnswer | bool = await loop.run_in_executor(
                pool, self.cache.peek, key, self.owner
            )
            if got is not False:
                return got
        return False
