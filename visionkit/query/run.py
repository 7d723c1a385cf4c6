"""One run of requests: the dispatcher, a row's way from look-up to answer, the sends.

How a run works (``Run``): a dispatcher walks the rows in order and keeps at most
``concurrency + prefetch`` of them alive. Each row reads its image bytes, hashes them for the
cache key and looks the key up; on a miss it claims the key (``visionkit.query.claims``),
encodes the images and checks the request against the provider's rules
(``visionkit.query.body``) -- all of that in a thread pool the size of the machine's cores,
overlapping the network waits -- then waits for the gate (``visionkit.query.pacing``: known
limits and the adaptive window) and sends through the ``openai`` SDK, retrying as
``visionkit.query.retry.decide`` says. Memory therefore stays bounded by the requests in
flight, not by the size of the set.

A run is in one of three phases (``Phase``): ``RUNNING``; ``DRAINING`` after an interrupt (no
new request starts, those in flight finish so their paid answers are kept); ``STOPPED`` after a
fatal error (a 401, a broken cache file), which ``main`` raises once the requests in flight
are done -- for at most one request's timeout and a grace (``visionkit.query.stopping``),
after which what is left is abandoned as a second interrupt does: a stopped run never hangs.
Rows with the same key in flight are sent once (``visionkit.query.twins``); what each row
ended with is a ``visionkit.query.outcome.RowResult``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..errors import CacheError
from ..types import default_workers
from .cache import CachedAnswer
from .claims import Claims, new_owner
from .client import Session, discover_model
from .messages import describe_error
from .outcome import INTERRUPTED, RowResult, Tally, result_frame
from .pacing import Gate
from .plan import Plan
from .progress import show_progress
from .replay import not_recorded_message, unrecorded_error
from .rows import (
    Chunks,
    RowPlan,
    load_images,
    lookup_row,
    lookup_rows,
    prepare_request_for,
)
from .send import Sender
from .stopping import cancel_and_wait, drain_deadline, wait_all, watch
from .twins import Twins

__all__ = ["INTERRUPTED", "Phase", "RowResult", "Run"]

logger = logging.getLogger("visionkit")

SHOW_EVERY = 0.1  # seconds between redraws of the progress bar's numbers


class Phase(enum.Enum):
    """Where a run stands (see the module docstring)."""

    RUNNING = "running"
    DRAINING = "draining"  # interrupted: nothing new starts, requests in flight finish
    STOPPED = "stopped"  # a fatal error: nothing new starts, ``main`` raises it at the end


@dataclass
class Run:
    """One run of ``plan``: ``await run.main()``, then ``run.frame()``."""

    plan: Plan
    bar: Any = None
    tally: Tally = field(default_factory=Tally)
    # What every send asks first (``visionkit.query.pacing.Gate``'s three calls); ``None``: this
    # process's own. The Dask path passes one shared by the whole cluster (visionkit.dask.limiter).
    gate: Any = None
    # Who this run is when it claims keys in the cache (the Dask path names it by worker).
    owner: str = field(default_factory=new_owner)

    def __post_init__(self) -> None:
        self.rows = [RowResult() for _ in range(self.plan.n)]
        self.phase = Phase.RUNNING
        self.fatal: BaseException | None = None
        self.interrupted = False  # the user interrupted (or cancelled) the run
        if self.gate is None:
            self.gate = Gate(self.plan.options.concurrency, self.plan.rate_limits)
        self.started = time.perf_counter()
        self.elapsed = 0.0
        self.twins = Twins(keep_answers=self.plan.cache is None)
        self.claims: Claims | None = None
        self.sender: Sender | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[Any] | None = None
        self._wake: asyncio.Event | None = None  # set when the phase leaves RUNNING
        self._tasks: set[asyncio.Task[Any]] = set()
        self._abandoned = False  # the drain after a stop outlasted ``drain_deadline``
        self._store_failures = 0
        self._unrecorded: list[int] = []  # replay: rows the recording lacks
        self._shown = -math.inf  # when the progress bar's numbers were last redrawn

    # -- control from another thread ---------------------------------------------------
    def request_drain(self) -> int:
        """Stop starting requests; those in flight finish. Returns how many are in flight."""
        self.interrupted = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._enter, Phase.DRAINING)
        else:
            self.phase = Phase.DRAINING
        return int(self.gate.in_flight)

    def request_cancel(self) -> None:
        """Abandon everything now (requests in flight are cancelled)."""
        self.interrupted = True
        if self._loop is not None and self._main is not None:
            self._loop.call_soon_threadsafe(self._main.cancel)

    @property
    def stopping(self) -> bool:
        """No new request may start: interrupted, or a fatal error (a 401) was seen."""
        return self.phase is not Phase.RUNNING

    def _enter(self, phase: Phase) -> None:
        """Leave ``RUNNING`` (a stop outranks a drain) and wake every wait that listens."""
        if self.phase is not Phase.STOPPED:
            self.phase = phase
        if self._wake is not None:
            self._wake.set()

    # -- bookkeeping ---------------------------------------------------------------------
    def _finish(self, pos: int) -> None:
        row = self.rows[pos]
        row.finished = True
        tally = self.tally
        if row.error == INTERRUPTED:
            tally.not_run += 1
        elif row.error is not None:
            tally.failed += 1
        if self.bar is not None:
            now = time.monotonic()
            numbers = now - self._shown >= SHOW_EVERY
            if numbers:
                self._shown = now
            show_progress(self.bar, tally, numbers=numbers)

    def _hit(self, row: RowPlan, entry: CachedAnswer, bought: bool | None = None) -> None:
        """A row answered without a request now: the cache, a twin's answer, a recording.

        With a recording on, the first use in this process is reported as bought (its
        recorded attempts and tokens count), so a recorded notebook and its replay match.
        ``bought``: ``plan.used`` already asked (for a chunk of rows at once).
        """
        plan = self.plan
        if bought is None:
            bought = plan.recording is not None and plan.used(row, entry)
        if plan.recording is not None and row.key is not None and bought:
            attempts = plan.recording.attempts(row.key)
            self.rows[row.pos].attempts = attempts
            self.tally.requests += attempts
            self.tally.retries += attempts - 1
            self._record(row.pos, entry, cached=False)
            return
        logger.debug("row %r: cache hit", row.label)
        self._record(row.pos, entry, cached=True)

    def _finish_unstarted(self) -> None:
        """Rows the run stopped before reaching: not run (and on the progress bar as such)."""
        for pos, row in enumerate(self.rows):
            if not row.finished and row.untouched:
                row.error = INTERRUPTED
                self._finish(pos)

    def _record(self, pos: int, entry: CachedAnswer, *, cached: bool) -> None:
        tally = self.tally
        row = self.rows[pos]
        row.answer = entry.answer
        row.prompt_tokens = entry.prompt_tokens
        row.completion_tokens = entry.completion_tokens
        row.estimated_tokens = entry.estimated_tokens
        row.latency_s = entry.latency_s
        row.cached = cached
        if cached:
            tally.cache_hits += 1
        else:
            tally.answered += 1
            tally.prompt_tokens += entry.prompt_tokens or 0
            tally.completion_tokens += entry.completion_tokens or 0
        if self.plan.schema is not None:
            try:
                row.fields = self.plan.schema.parse(entry.answer)
            except ValueError as exc:
                row.error = f"SchemaError: {exc}"

    # -- the coroutine ----------------------------------------------------------------
    async def main(self, *, reraise_cancel: bool = True) -> None:
        plan = self.plan
        options = plan.options
        assert plan.client is not None
        self._loop = asyncio.get_running_loop()
        self._main = asyncio.current_task()
        self._wake = asyncio.Event()
        if self.stopping:  # interrupted before the loop started
            self._wake.set()
        workers = default_workers(minimum=2)
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="visionkit-encode")
        # The SDK client, made on the first send (a run answered from the cache makes no
        # HTTP client at all); a replay sends nothing.
        sdk = None if plan.replaying else Session(plan.client, options.timeout)
        window = asyncio.Semaphore(options.concurrency + 2 * workers)
        if plan.cache is not None:
            self.claims = Claims(plan.cache, self.owner)
        renewer = (
            asyncio.create_task(self.claims.keep_alive(self._stop))
            if self.claims is not None
            else None
        )
        deadline = drain_deadline(options.timeout)
        watchdog = asyncio.create_task(watch(self._wake, deadline, self._abandon))
        try:
            if plan.model is None:
                if sdk is None:
                    raise ValueError("pass model=... to replay a server that named its own model")
                plan.model = await discover_model(sdk.sdk())
            await self._dispatch(sdk, pool, window)
            while self._tasks:
                await wait_all(list(self._tasks))
        except asyncio.CancelledError:
            watchdog.cancel()
            self.interrupted = self.interrupted or not self._abandoned
            await cancel_and_wait(list(self._tasks))
            if self._abandoned:  # our own cancel, not the caller's: the run ends as stopped
                uncancel = getattr(self._main, "uncancel", None)  # (Python 3.11+)
                if uncancel is not None:
                    uncancel()
            elif reraise_cancel:
                raise
        finally:
            watchdog.cancel()
            self.elapsed = time.perf_counter() - self.started
            self._finish_unstarted()
            if self.bar is not None:
                show_progress(self.bar, self.tally, rows=0)  # the final numbers
            if renewer is not None:
                renewer.cancel()
                with contextlib.suppress(BaseException):
                    await renewer
            if self.claims is not None:
                self.claims.release_all()  # claims of rows never sent
            pool.shutdown(wait=False, cancel_futures=True)
            if sdk is not None:
                await sdk.close()
        recording = plan.recording
        if recording is not None and recording.strict and self._unrecorded and self.fatal is None:
            labels = [plan.index[p] for p in sorted(self._unrecorded)]
            self.fatal = unrecorded_error(recording, labels)
        if self.fatal is not None:
            # What was answered before the stop is kept on the exception (with cache=False, or
            # a cache that broke, nowhere else holds it).
            with contextlib.suppress(Exception):
                self.fatal.partial = self.frame()  # type: ignore[attr-defined]
            raise self.fatal

    def _abandon(self) -> None:
        """The drain after a stop outlasted its deadline: cancel ``main`` (as a second
        interrupt does); what was answered is kept."""
        assert self._main is not None
        self._abandoned = True
        logger.error(
            "%d row(s) still unfinished %.0f s after the run stopped were abandoned; every "
            "answer received before is kept",
            len(self._tasks),
            drain_deadline(self.plan.options.timeout),
        )
        self._main.cancel()

    async def _dispatch(
        self, sdk: Session | None, pool: ThreadPoolExecutor, window: asyncio.Semaphore
    ) -> None:
        """Walk the rows in order, looked up a chunk at a time in the pool (``lookup_rows``):
        errors and cache hits are settled at once, each miss gets a task (at most ``window``
        alive)."""
        plan = self.plan
        loop = asyncio.get_running_loop()
        chunks = Chunks()
        todo = iter(range(plan.n))
        ahead: deque[tuple[int, asyncio.Future[list[RowPlan]]]] = deque()

        def look_up(positions: list[int]) -> list[RowPlan]:
            start = time.perf_counter()
            rows = lookup_rows(plan, positions)
            chunks.took(len(rows), time.perf_counter() - start)
            return rows

        def submit() -> None:
            chunk = chunks.take(todo)
            if chunk:
                # Answers stored before the look-up starts: if more are stored by the time a
                # row would send, a twin may have been answered meanwhile (see ``_row``).
                stamp = self.twins.stamp()
                ahead.append((stamp, loop.run_in_executor(pool, look_up, chunk)))

        submit()
        submit()
        try:
            while ahead:
                stamp, looked_up = ahead.popleft()
                rows = await looked_up
                submit()
                if self.stopping:
                    return
                self._settle([row for row in rows if not row.missed])
                for row in rows:
                    if not row.missed:
                        continue
                    await window.acquire()
                    if self.stopping:
                        window.release()
                        return
                    task = asyncio.create_task(self._row(row, stamp, sdk, pool, window))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        finally:
            for _, looked_up in ahead:
                looked_up.cancel()

    def _settle(self, rows: list[RowPlan]) -> None:
        """Rows the look-up decided: their errors, or their answers from the cache or the
        recording (recorded as used with one write for the chunk)."""
        hits = [(row, row.hit) for row in rows if row.error is None and row.hit is not None]
        try:
            bought = self.plan.used_many(hits) if self.plan.recording is not None else None
        except Exception as exc:  # the recording's folder failed: the answers still count
            logger.error("could not record %d answers: %s", len(hits), exc)
            bought = None
        first = dict(zip((r.pos for r, _ in hits), bought, strict=True)) if bought else {}
        for row in rows:
            result = self.rows[row.pos]
            try:
                if row.error is not None:
                    result.error = row.error
                elif row.hit is not None:
                    logger.debug("row %r: cache hit %s", row.label, (row.key or "")[:12])
                    self._hit(row, row.hit, first.get(row.pos, False))
            except Exception as exc:  # a bug or an unexpected library error: this row only
                logger.exception("row %r failed unexpectedly", row.label)
                result.error = describe_error(exc)
            finally:
                self._finish(row.pos)

    async def _row(
        self,
        row: RowPlan,
        stamp: int,
        sdk: Session | None,
        pool: ThreadPoolExecutor,
        window: asyncio.Semaphore,
    ) -> None:
        """A missed row: claim its key, encode it and send it (or wait for whoever asks it)."""
        plan = self.plan
        pos = row.pos
        result = self.rows[pos]
        loop = asyncio.get_running_loop()
        holding = True  # the dispatcher's window slot, given back while waiting on another process
        try:
            row = await loop.run_in_executor(pool, self._claim_and_prepare, row)
            if row.busy:
                self.tally.waited += 1
            while row.busy:
                # Another process is asking this key: wait for its answer without holding a
                # slot, so this run goes on with rows nobody has claimed.
                window.release()
                holding = False
                assert self.claims is not None and row.key is not None
                logger.debug("row %r: another process is asking %s", row.label, row.key[:12])
                got = await self.claims.wait_turn(
                    row.key, stopping=lambda: self.stopping, sleep=self._sleep, pool=pool
                )
                if isinstance(got, CachedAnswer):
                    self._hit(row, got)
                    return
                if not got:  # the run is stopping
                    result.error = INTERRUPTED
                    return
                await window.acquire()  # the claim is ours now: plan it as any miss
                holding = True
                stamp = self.twins.stamp()
                row = await loop.run_in_executor(pool, self._prepare, pos)
            if row.error is not None:
                result.error = row.error
                return
            assert row.key is not None
            if row.hit is not None:
                logger.debug("row %r: cache hit %s", row.label, row.key[:12])
                self._hit(row, row.hit)
                return
            if row.request is None:  # the run stopped before this row was encoded
                result.error = INTERRUPTED
                return
            # Two rows with the same key in one run (the same image and prompt): the second
            # waits for the first's answer instead of paying for it again.
            twin = self.twins.in_flight(row.key)
            if twin is not None:
                entry = await asyncio.shield(twin)
                if entry is not None:
                    self._hit(row, entry)
                    return
            elif self.twins.stored_since(stamp):
                # A twin may have been answered, stored and retired between this row's cache
                # look-up (in the pool) and now: look again rather than pay for it twice.
                hit = plan.lookup(row.key)
                if hit is not None:
                    self._hit(row, hit)
                    return
            future = self.twins.start(row.key)
            entry = None
            try:
                response = await self._sender(sdk).send(row, result)
                if response is not None:
                    entry = self._store(row, response, result.latency_s)
            finally:
                self.twins.end(row.key, future, entry)
                if entry is None and self.claims is not None:
                    # Not answered: give the key up so another process may try it (the run's
                    # end releases every claim it still holds in any case).
                    self.claims.give_up(row.key)
        except asyncio.CancelledError:
            if result.untouched:
                result.error = INTERRUPTED
            raise
        except CacheError as exc:  # the cache file broke mid-run: one error for the run
            if result.untouched:
                result.error = INTERRUPTED
            self._stop(exc)
        except Exception as exc:  # a bug or an unexpected library error: this row only
            logger.exception("row %r failed unexpectedly", plan.index[pos])
            result.error = describe_error(exc)
        finally:
            if holding:
                window.release()
            self._finish(pos)

    def _prepare(self, pos: int) -> RowPlan:
        """Look the row up again, then ``_claim_and_prepare`` (in the pool)."""
        return self._claim_and_prepare(lookup_row(self.plan, pos))

    def _claim_and_prepare(self, row: RowPlan) -> RowPlan:
        """Claim a missed row's key and encode and check it (in the pool).

        The key may turn out answered (``hit``) or another process's (``busy``); once the run
        is stopping, a miss is not encoded (``request`` stays ``None``).
        """
        plan = self.plan
        if not row.missed:  # an error or a hit
            return row
        if plan.recording is not None and plan.replaying:
            row.images = None
            row.error = not_recorded_message(plan.recording, row.key)
            self._unrecorded.append(row.pos)
            return row
        if load_images(plan, row) is None:  # unreadable now, or changed and answered
            return row
        if self.claims is not None:
            assert row.key is not None
            got = self.claims.take(row.key)
            if got is not True:
                row.images = None
                if isinstance(got, CachedAnswer):  # answered since the look-up
                    row.hit = got
                else:
                    row.busy = True
                return row
        if self.stopping:
            row.images = None
            return row
        return prepare_request_for(plan, row)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, waking early if the run stops starting requests."""
        assert self._wake is not None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)

    def _sender(self, session: Session | None) -> Sender:
        """The run's ``Sender`` (made on its first send)."""
        if self.sender is None:
            assert session is not None and self._wake is not None
            self.sender = Sender(
                self.plan,
                self.gate,
                self.tally,
                session,
                self._wake,
                stopping=lambda: self.stopping,
                stop=self._stop,
            )
        return self.sender

    def _stop(self, exc: BaseException) -> None:
        """A 401 or a broken cache: start nothing more and raise ``exc`` from ``main``.

        Requests already in flight are let finish (they were sent with a key the server may
        have accepted, so their answers may be paid for) but are not retried. What was
        answered is kept: in the cache, and on the exception as ``partial`` (a DataFrame).
        """
        if self.fatal is not None:
            return
        self.fatal = exc
        if isinstance(exc, CacheError):
            logger.error("%s; stopping the run", exc)
        else:
            kept = (
                "are in the cache"
                if self.plan.cache is not None
                else "are in the exception's .partial DataFrame (cache=False)"
            )
            logger.error(
                "authentication failed (%s); stopping the run. Answers received so far %s.",
                getattr(exc, "status_code", "?"),
                kept,
            )
        self._enter(Phase.STOPPED)

    def _store(self, row: RowPlan, response: Any, latency: float | None = None) -> CachedAnswer:
        """Commit a paid answer at once (with the seconds it took), then record it in the row."""
        plan = self.plan
        assert row.key is not None and row.request is not None
        choices = getattr(response, "choices", None) or []
        message = choices[0].message if choices else None
        answer = getattr(message, "content", None) if message is not None else None
        usage = getattr(response, "usage", None)
        entry = CachedAnswer(
            answer=answer,
            prompt_tokens=getattr(usage, "prompt_tokens", None),
            completion_tokens=getattr(usage, "completion_tokens", None),
            estimated_tokens=row.request.estimated_tokens,
            model=getattr(response, "model", None) or plan.model,
            provider=plan.provider.name,
            latency_s=None if latency is None else round(latency, 4),
        )
        row.request = None  # the body is no longer needed
        if plan.cache is not None or plan.recording is not None:
            try:
                plan.save(row, entry, attempts=self.rows[row.pos].attempts)
                self.twins.stored()
            except Exception as exc:  # a full disk must not cost the answer in memory
                self._store_failures += 1
                if self._store_failures == 1:
                    logger.error(
                        "could not store row %r in the cache (the answer is kept in the "
                        "result): %s",
                        row.label,
                        exc,
                    )
                if isinstance(exc, CacheError):
                    self._stop(exc)
        self._record(row.pos, entry, cached=False)
        if answer is None:
            refusal = getattr(message, "refusal", None)
            self.rows[row.pos].error = f"empty reply{f': {refusal}' if refusal else ''}"
        return entry

    # -- the result ------------------------------------------------------------------
    def frame(self) -> pd.DataFrame:
        return result_frame(
            self.plan,
            self.rows,
            self.tally,
            elapsed=self.elapsed,
            lowest_concurrency=self.gate.lowest,
            interrupted=self.interrupted,
        )
