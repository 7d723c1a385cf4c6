"""Rows of one run that ask the same thing: the first sends, the others take its answer.

The same image and prompt twice in one run would be paid twice: both rows miss the cache
before either answer arrives. ``Twins`` keeps one future per key in flight; a later row with
that key awaits it instead of sending. Without a cache an answered key is kept (so a later
repeat is answered as the dry run counts it); with one, the cache answers repeats and nothing
per row is kept, so memory stays bounded by the requests in flight.

``stamp``/``stored_since``: an answer can be stored and its future retired between a row's
cache look-up (in the thread pool) and its turn to send; a row that sees answers were stored
meanwhile looks its key up again rather than pay for it twice.
"""

from __future__ import annotations

import asyncio

from .cache import CachedAnswer

__all__ = ["Twins"]


class Twins:
    """The keys in flight in one run (see the module docstring)."""

    def __init__(self, *, keep_answers: bool) -> None:
        self.keep_answers = keep_answers
        self._pending: dict[str, asyncio.Future[CachedAnswer | None]] = {}
        self._stores = 0  # answers stored in the cache so far

    def stamp(self) -> int:
        """A mark to compare with later (``stored_since``)."""
        return self._stores

    def stored(self) -> None:
        """An answer was stored in the cache."""
        self._stores += 1

    def stored_since(self, stamp: int) -> bool:
        return self._stores != stamp

    def in_flight(self, key: str) -> asyncio.Future[CachedAnswer | None] | None:
        """The future of an earlier row asking ``key``, if any."""
        return self._pending.get(key)

    def start(self, key: str) -> asyncio.Future[CachedAnswer | None]:
        """This row asks ``key``: later twins will wait for the returned future."""
        future: asyncio.Future[CachedAnswer | None] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        return future

    def end(
        self, key: str, future: asyncio.Future[CachedAnswer | None], entry: CachedAnswer | None
    ) -> None:
        """The row asking ``key`` is done (``entry``: its answer, ``None`` if it failed: a
        twin then asks again)."""
        keep = entry is not None and self.keep_answers
        if not keep and self._pending.get(key) is future:
            del self._pending[key]
        future.set_result(entry)
