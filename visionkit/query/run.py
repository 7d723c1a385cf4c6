"""One run of requests: the concurrency window, cache lookups, retries, interrupts, the result.

How a run works (``Run``): a dispatcher walks the rows in order and keeps at most
``concurrency + prefetch`` of them alive. Each row reads its image bytes, hashes them for the
cache key and looks the key up; on a miss it encodes the images and checks the request against
the provider's rules (``visionkit.query.body``) -- all of that in a thread pool the size of the
machine's cores, overlapping the network waits -- then waits for a slot from the adaptive
limiter (``visionkit.query.retry``) and sends through the ``openai`` SDK. Memory therefore stays
bounded by the requests in flight, not by the size of the set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import threading
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..errors import CacheError, RequestError
from ..providers import money_fields
from ..types import default_workers
from .cache import CachedAnswer
from .messages import describe_error
from .pacing import Gate
from .plan import Plan, RowPlan, lookup_row, prepare_request_for
from .progress import in_ipython
from .replay import not_recorded_message, unrecorded_error
from .retry import (
    MAX_RETRY_AFTER,
    classify,
    headers_of,
    parse_retry_after,
    retry_delay,
)

__all__ = ["INTERRUPTED", "RowResult", "Run", "discover_model", "run_in_thread"]

logger = logging.getLogger("visionkit")


INTERRUPTED = "not run: interrupted (re-run to resume from the cache)"
CLAIM_POLL = 0.25  # seconds between looks at a key another process is asking (jittered)


@dataclass
class _Counters:
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    cache_hits: int = 0
    answered: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated_tokens: int = 0
    not_run: int = 0
    waited: int = 0  # rows another process was asking when this run reached them


@dataclass(slots=True)
class RowResult:
    """One row of a run's result, filled in as the row goes (``Run.frame`` makes the table)."""

    answer: str | None = None
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    estimated_tokens: int | None = None
    cached: bool = False
    attempts: int = 0
    fields: dict[str, Any] | None = None  # the schema's fields, parsed from the answer
    finished: bool = False
    # seconds the provider took to answer (its cached value for a hit), for ``evaluate``;
    # not a column of ask's result
    latency_s: float | None = None


@dataclass
class Run:
    """One run of ``plan``: ``await run.main()``, then ``run.frame()``."""

    plan: Plan
    bar: Any = None
    counters: _Counters = field(default_factory=_Counters)
    # What every send asks first (``visionkit.query.pacing.Gate``'s three calls); ``None``: this
    # process's own. The Dask path passes one shared by the whole cluster (visionkit.dask.limiter).
    gate: Any = None

    def __post_init__(self) -> None:
        self.rows = [RowResult() for _ in range(self.plan.n)]
        self.fatal: BaseException | None = None
        self.interrupted = False
        # Every send asks the gate first: known-limit pacing and adaptive concurrency.
        if self.gate is None:
            self.gate = Gate(self.plan.options.concurrency, self.plan.rate_limits)
        self.started = time.perf_counter()
        self.elapsed = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[Any] | None = None
        self._drain: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pending: dict[str, asyncio.Future[CachedAnswer | None]] = {}
        self._stores = 0  # answers stored in the cache so far (see _row's repeat check)
        # Who this run is when it claims keys in the cache (see visionkit.query.cache).
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._store_failures = 0
        self._unrecorded: list[int] = []  # replay: rows the recording lacks

    # -- control from another thread ---------------------------------------------------
    def request_drain(self) -> int:
        """Stop starting requests; those in flight finish. Returns how many are in flight."""
        self.interrupted = True
        if self._loop is not None and self._drain is not None:
            self._loop.call_soon_threadsafe(self._drain.set)
        return self.gate.in_flight

    def request_cancel(self) -> None:
        """Abandon everything now (requests in flight are cancelled)."""
        self.interrupted = True
        if self._loop is not None and self._main is not None:
            self._loop.call_soon_threadsafe(self._main.cancel)

    @property
    def draining(self) -> bool:
        return self._drain is not None and self._drain.is_set()

    @property
    def stopping(self) -> bool:
        """No new request may start: interrupted, or a fatal error (a 401) was seen."""
        return self.draining or self.fatal is not None

    # -- bookkeeping ---------------------------------------------------------------------
    def _finish(self, pos: int) -> None:
        row = self.rows[pos]
        row.finished = True
        c = self.counters
        if row.error == INTERRUPTED:
            c.not_run += 1
        elif row.error is not None:
            c.failed += 1
        if self.bar is not None:
            postfix = {"cached": c.cache_hits, "failed": c.failed}
            if c.not_run:
                postfix["not run"] = c.not_run
            self.bar.set_postfix(
                postfix, tokens=f"{c.prompt_tokens + c.completion_tokens:,}", refresh=False
            )
            self.bar.update(1)

    def _hit(self, row: RowPlan, entry: CachedAnswer) -> None:
        """A row answered without a request now: the cache, a twin's answer, a recording.

        With a recording on, the first use in this process is reported as bought (its
        recorded attempts and tokens count), so a recorded notebook and its replay match.
        """
        plan = self.plan
        if plan.recording is not None and row.key is not None and plan.used(row, entry):
            attempts = plan.recording.attempts(row.key)
            self.rows[row.pos].attempts = attempts
            self.counters.requests += attempts
            self.counters.retries += attempts - 1
            self._record(row.pos, entry, cached=False)
            return
        logger.debug("row %r: cache hit", row.label)
        self._record(row.pos, entry, cached=True)

    def _finish_unstarted(self) -> None:
        """Rows the run stopped before reaching: not run (and on the progress bar as such)."""
        for pos, row in enumerate(self.rows):
            if not row.finished and row.error is None and row.answer is None:
                row.error = INTERRUPTED
                self._finish(pos)

    def _record(
        self, pos: int, entry: CachedAnswer, *, cached: bool, estimated: int | None = None
    ) -> None:
        c = self.counters
        row = self.rows[pos]
        row.answer = entry.answer
        row.prompt_tokens = entry.prompt_tokens
        row.completion_tokens = entry.completion_tokens
        row.estimated_tokens = entry.estimated_tokens if estimated is None else estimated
        row.latency_s = entry.latency_s
        row.cached = cached
        if cached:
            c.cache_hits += 1
        else:
            c.answered += 1
            c.prompt_tokens += entry.prompt_tokens or 0
            c.completion_tokens += entry.completion_tokens or 0
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
        self._drain = asyncio.Event()
        if self.interrupted:  # interrupted before the loop started
            self._drain.set()
        workers = default_workers(minimum=2)
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="visionkit-encode")
        # A fresh HTTP client per run, made here inside the loop that uses it (an aiohttp
        # session is bound to its loop) and closed below; a caller's own ``http_client`` is
        # used as it is and left open.
        # A replay sends nothing: no HTTP client at all.
        http_client = None if plan.replaying else plan.client.http_client()
        sdk: Any = None
        if plan.replaying:
            pass
        elif http_client is None:
            sdk = plan.client.openai.with_options(max_retries=0, timeout=options.timeout)
        else:
            sdk = plan.client.openai.copy(
                max_retries=0, timeout=options.timeout, http_client=http_client
            )
        window = asyncio.Semaphore(options.concurrency + 2 * workers)
        renewer = asyncio.create_task(self._renew_claims()) if plan.cache is not None else None
        try:
            if plan.model is None:
                if sdk is None:
                    raise ValueError("pass model=... to replay a server that named its own model")
                plan.model = await discover_model(sdk)
            for pos in range(plan.n):
                prompt = plan.prompts[pos]
                if isinstance(prompt, RequestError):
                    self.rows[pos].error = describe_error(prompt)
                    self._finish(pos)
                    continue
                await window.acquire()
                if self.stopping:
                    window.release()
                    break
                task = asyncio.create_task(self._row(pos, sdk, pool, window))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            while self._tasks:
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
        except asyncio.CancelledError:
            self.interrupted = True
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
            if reraise_cancel:
                raise
        finally:
            self.elapsed = time.perf_counter() - self.started
            self._finish_unstarted()
            if renewer is not None:
                renewer.cancel()
                with contextlib.suppress(BaseException):
                    await renewer
            if plan.cache is not None:
                with contextlib.suppress(CacheError):
                    plan.cache.release(None, self.owner)  # claims of rows never sent
            pool.shutdown(wait=False, cancel_futures=True)
            if http_client is not None:
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

    async def _renew_claims(self) -> None:
        """Keep this run's claims alive (a third of a lease at a time) while it runs."""
        cache = self.plan.cache
        assert cache is not None
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(cache.lease / 3)
            try:
                # the default executor, not ``pool``: ``pool`` queues image reads and encodes
                # that can take longer than the lease's slack, and a late renewal lets
                # another process take the key over and pay for it again
                await loop.run_in_executor(None, cache.renew, self.owner)
            except CacheError as exc:
                self._stop(exc)
                return
            except Exception as exc:  # a busy file: the next round tries again
                logger.debug("could not renew claims: %s", exc)

    async def _row(
        self, pos: int, sdk: Any, pool: ThreadPoolExecutor, window: asyncio.Semaphore
    ) -> None:
        plan = self.plan
        result = self.rows[pos]
        loop = asyncio.get_running_loop()
        holding = True  # the dispatcher's window slot, given back while waiting on another process
        try:
            # Answers stored before the look-up starts; if more are stored by the time this row
            # would send, a twin may have been answered meanwhile (see below).
            stamp = self._stores
            row = await loop.run_in_executor(pool, self._prepare, pos)
            if row.busy:
                self.counters.waited += 1
            while row.busy:
                # Another process is asking this key: wait for its answer without holding a
                # slot, so this run goes on with rows nobody has claimed.
                window.release()
                holding = False
                got = await self._wait_turn(row, pool)
                if isinstance(got, CachedAnswer):
                    self._hit(row, got)
                    return
                if not got:  # the run is stopping
                    result.error = INTERRUPTED
                    return
                await window.acquire()  # the claim is ours now: plan it as any miss
                holding = True
                stamp = self._stores
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
            twin = self._pending.get(row.key)
            if twin is not None:
                entry = await asyncio.shield(twin)
                if entry is not None:
                    self._hit(row, entry)
                    return
            elif self._stores != stamp:
                # A twin may have been answered, stored and retired between this row's cache
                # look-up (in the pool) and now: look again rather than pay for it twice.
                hit = plan.lookup(row.key)
                if hit is not None:
                    self._hit(row, hit)
                    return
            future: asyncio.Future[CachedAnswer | None] = loop.create_future()
            self._pending[row.key] = future
            entry = None
            try:
                entry = await self._send(row, sdk)
            finally:
                # Without a cache an answered key stays, so a later repeat is answered from it
                # as the dry run counts it (with a cache, the cache answers it, and nothing per
                # row is kept: memory stays bounded by the requests in flight). A failed key is
                # dropped so a repeat tries again.
                keep = entry is not None and plan.cache is None
                if not keep and self._pending.get(row.key) is future:
                    del self._pending[row.key]
                future.set_result(entry)
                if entry is None and plan.cache is not None:
                    # Not answered: give the key up so another process may try it (the run's
                    # end releases every claim it still holds in any case).
                    with contextlib.suppress(Exception):
                        plan.cache.release(row.key, self.owner)
        except asyncio.CancelledError:
            if result.error is None and result.answer is None:
                result.error = INTERRUPTED
            raise
        except CacheError as exc:  # the cache file broke mid-run: one error for the run
            if result.error is None and result.answer is None:
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
        """Read, hash, look up and claim the key, and on a miss encode and check (in the pool).

        Once the run is stopping, a miss is not encoded (``request`` stays ``None``).
        """
        plan = self.plan
        row = lookup_row(plan, pos)
        if row.images is None:  # an error or a hit
            return row
        if plan.recording is not None and plan.replaying:
            row.images = None
            row.error = not_recorded_message(plan.recording)
            self._unrecorded.append(pos)
            return row
        if plan.cache is not None:
            assert row.key is not None
            got = plan.cache.claim(row.key, self.owner)
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

    async def _wait_turn(self, row: RowPlan, pool: ThreadPoolExecutor) -> CachedAnswer | bool:
        """Wait while another process asks ``row.key``: its answer, or ``True`` once the key
        is this run's to ask (the other gave up or died and its lease ran out), or ``False``
        if this run is stopping."""
        cache = self.plan.cache
        assert cache is not None and row.key is not None
        loop = asyncio.get_running_loop()
        logger.debug("row %r: another process is asking %s; waiting", row.label, row.key[:12])
        while not self.stopping:
            await self._sleep(CLAIM_POLL * (0.5 + random.random()))
            if self.stopping:
                break
            got: CachedAnswer | bool = await loop.run_in_executor(
                pool, cache.peek, row.key, self.owner
            )
            if got is not False:
                return got
        return False

    async def _sleep(self, seconds: float) -> None:
        """Sleep, waking early if the run is interrupted."""
        assert self._drain is not None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._drain.wait(), timeout=seconds)

    async def _send(self, row: RowPlan, sdk: Any) -> CachedAnswer | None:
        """Send ``row``'s request, retrying as the policy says; the answer, or None."""
        import openai
        from openai.types.chat import ChatCompletion

        plan = self.plan
        max_retries = plan.options.max_retries
        prepared = row.request
        assert prepared is not None and row.key is not None
        result = self.rows[row.pos]
        result.estimated_tokens = prepared.estimated_tokens
        self.counters.estimated_tokens += prepared.estimated_tokens
        # What a tokens-per-minute limit is booked for before the answer says: the prompt's
        # estimate plus the completion the request allows at most, if it says.
        max_tokens = plan.options.request_options.get("max_tokens")
        booked = prepared.estimated_tokens + (max_tokens if isinstance(max_tokens, int) else 0)
        attempt = 0
        while True:
            if self.stopping:
                if attempt == 0:
                    result.error = INTERRUPTED
                else:
                    result.error = f"{result.error} (not retried: interrupted)"
                return None
            ticket = await self._acquire(booked)
            if ticket is None:  # stopping: the top of the loop says why
                continue
            if self.stopping:
                await self.gate.release(ticket, "error")
                continue
            attempt += 1
            result.attempts = attempt
            self.counters.requests += 1
            try:
                # The body goes out verbatim through the SDK's documented ``post`` (auth,
                # errors and response types are the SDK's): the JSON bytes serialised -- once,
                # in the thread pool -- and measured in ``prepare_request``. That skips
                # ``create``'s per-call re-typing of every field and a second serialisation
                # on the event loop, which together cost more CPU than everything else
                # visionkit does per row.
                started = time.perf_counter()
                response = await sdk.post(
                    "/chat/completions", cast_to=ChatCompletion, content=prepared.payload
                )
                latency = time.perf_counter() - started
            except openai.APIError as exc:
                kind = classify(exc)
                retry_after = parse_retry_after(headers_of(exc))
                if kind == "rate":
                    await self.gate.report_429(ticket, retry_after)
                else:
                    await self.gate.release(ticket, "error")
                if kind == "auth":
                    self._stop(exc)
                    return None
                result.error = describe_error(exc)
                if kind == "fail":
                    return None
                if kind == "rate":
                    self.counters.rate_limited += 1
                if attempt > max_retries:
                    result.error = f"{result.error} ({_gave_up(attempt, max_retries)})"
                    return None
                if retry_after is not None and retry_after > MAX_RETRY_AFTER:
                    result.error = (
                        f"{result.error} (server asked to wait {retry_after:.0f} s; not retried)"
                    )
                    return None
                delay = retry_delay(attempt, retry_after)
                self.counters.retries += 1
                logger.info(
                    "row %r: %s; retry %d of %d in %.2f s",
                    row.label,
                    result.error,
                    attempt,
                    max_retries,
                    delay,
                )
                await self._sleep(delay)
                continue
            except BaseException:
                await self.gate.release(ticket, "error")
                raise
            usage = getattr(response, "usage", None)
            used = getattr(usage, "total_tokens", None)
            await self.gate.release(ticket, "ok", booked=booked, tokens=used)
            result.error = None
            return self._store(row, response, latency)

    async def _acquire(self, tokens: int) -> int | None:
        """The gate's ticket for a send, or ``None`` if the run stops while waiting for it
        (a pacing slot or a Retry-After pause can be long: an interrupt must not wait)."""
        assert self._drain is not None
        if self.stopping:
            return None
        acquire = asyncio.ensure_future(self.gate.acquire(tokens))
        stop = asyncio.ensure_future(self._drain.wait())
        try:
            await asyncio.wait({acquire, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not acquire.done():
                acquire.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await acquire
        if acquire.cancelled():
            return None
        return acquire.result()

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
        assert self._drain is not None
        self._drain.set()

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
                self._stores += 1
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
        plan = self.plan
        rows = self.rows
        for row in rows:
            if not row.finished and row.error is None and row.answer is None:
                row.error = INTERRUPTED
        index = plan.index
        out = pd.DataFrame(
            {
                "answer": pd.Series([r.answer for r in rows], index=index, dtype=object),
                "error": pd.Series([r.error for r in rows], index=index, dtype=object),
                "prompt_tokens": pd.array([r.prompt_tokens for r in rows], dtype="Int64"),
                "completion_tokens": pd.array([r.completion_tokens for r in rows], dtype="Int64"),
                "estimated_tokens": pd.array([r.estimated_tokens for r in rows], dtype="Int64"),
                "cached": pd.array([r.cached for r in rows], dtype=bool),
                "attempts": pd.array([r.attempts for r in rows], dtype="Int64"),
            },
            index=index,
        )
        if plan.schema is not None:
            for name, column in plan.schema_columns.items():
                values = [None if r.fields is None else r.fields.get(name) for r in rows]
                out[column] = schema_column(values, plan.schema.dtypes[name], index)
        c = self.counters
        out.attrs["usage"] = {
            "rows": plan.n,
            "requests": c.requests,
            "answered": c.answered,
            "cache_hits": c.cache_hits,
            "failed": int(sum(r.error is not None and r.error != INTERRUPTED for r in rows)),
            "not_run": int(sum(r.error == INTERRUPTED for r in rows)),
            "waited": c.waited,
            "retries": c.retries,
            "rate_limited": c.rate_limited,
            "prompt_tokens": c.prompt_tokens,
            "completion_tokens": c.completion_tokens,
            "estimated_tokens": c.estimated_tokens,
            "elapsed_s": round(self.elapsed, 3),
            "concurrency": plan.options.concurrency,
            "lowest_concurrency": int(self.gate.lowest),
            "interrupted": self.interrupted,
            "provider": plan.provider.name,
            "model": plan.model,
            # what this run bought, in US dollars, where the model's price is known
            **money_fields(plan.provider, plan.model, c.prompt_tokens, c.completion_tokens),
        }
        return out


def schema_column(values: list[Any], dtype: str, index: pd.Index) -> pd.Series:
    """A schema field's column in its nullable dtype (``object`` if a value does not fit)."""
    try:
        return pd.Series(pd.array(values, dtype=dtype), index=index)
    except (TypeError, ValueError):
        return pd.Series(values, index=index, dtype=object)


def _gave_up(attempts: int, max_retries: int) -> str:
    """``gave up after 3 attempts``; ``gave up after 1 attempt; max_retries=0``."""
    text = f"gave up after {attempts} attempt{'s' if attempts != 1 else ''}"
    return f"{text}; max_retries=0" if max_retries == 0 else text


async def discover_model(sdk: Any) -> str:
    """The one model a server serves (for ``connect(base_url=...)`` without ``model=``)."""
    page = await sdk.models.list()
    ids = [m.id for m in page.data]
    if len(ids) == 1:
        logger.info("using the server's only model %r", ids[0])
        return ids[0]
    raise ValueError(
        f"the server serves {len(ids)} models ({', '.join(ids[:10]) or 'none'}); "
        "pass model=... to ask() or connect()"
    )


def run_in_thread(run: Run) -> pd.DataFrame:
    """Run on a worker thread with its own event loop; the caller's thread handles interrupts."""
    outcome: dict[str, BaseException] = {}
    done = threading.Event()

    def target() -> None:
        try:
            asyncio.run(run.main(reraise_cancel=False))
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            done.set()

    worker = threading.Thread(target=target, name="visionkit-ask", daemon=True)
    interrupts = 0
    try:
        worker.start()
        while not done.is_set():
            try:
                done.wait(0.1)
            except KeyboardInterrupt:
                interrupts += 1
                if interrupts == 1:
                    in_flight = run.request_drain()
                    logger.warning(
                        "interrupted: finishing %d request(s) in flight so their answers are "
                        "kept; interrupt again to abandon them",
                        in_flight,
                    )
                else:
                    run.request_cancel()
    finally:
        if run.bar is not None:
            run.bar.close()
    if "error" in outcome:
        raise outcome["error"]
    result = run.frame()
    if run.interrupted:
        usage = result.attrs["usage"]
        message = (
            f"visionkit.ask was interrupted: {usage['answered'] + usage['cache_hits']} of "
            f"{usage['rows']} rows answered and cached; re-run the same call to resume."
        )
        if in_ipython():
            warnings.warn(message, RuntimeWarning, stacklevel=3)
            return result
        logger.warning(message)
        raise KeyboardInterrupt(message)
    return result
