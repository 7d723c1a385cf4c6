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
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..errors import RequestError
from ..types import default_workers
from .cache import CachedAnswer
from .messages import describe_error
from .plan import Plan, RowPlan, lookup_row, prepare_request_for
from .progress import in_ipython
from .retry import (
    MAX_RETRY_AFTER,
    AdaptiveLimiter,
    classify,
    headers_of,
    parse_retry_after,
    retry_delay,
)

__all__ = ["INTERRUPTED", "RowResult", "Run", "discover_model", "run_in_thread"]

logger = logging.getLogger("visionkit")


INTERRUPTED = "not run: interrupted (re-run to resume from the cache)"


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


@dataclass
class Run:
    """One run of ``plan``: ``await run.main()``, then ``run.frame()``."""

    plan: Plan
    bar: Any = None
    counters: _Counters = field(default_factory=_Counters)

    def __post_init__(self) -> None:
        self.rows = [RowResult() for _ in range(self.plan.n)]
        self.fatal: BaseException | None = None
        self.interrupted = False
        self.limiter = AdaptiveLimiter(self.plan.options.concurrency)
        self.started = time.perf_counter()
        self.elapsed = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[Any] | None = None
        self._drain: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pending: dict[str, asyncio.Future[CachedAnswer | None]] = {}
        self._stores = 0  # answers stored in the cache so far (see _row's repeat check)

    # -- control from another thread ---------------------------------------------------
    def request_drain(self) -> int:
        """Stop starting requests; those in flight finish. Returns how many are in flight."""
        self.interrupted = True
        if self._loop is not None and self._drain is not None:
            self._loop.call_soon_threadsafe(self._drain.set)
        return self.limiter.in_flight

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
        if row.error is not None:
            c.failed += 1
        if self.bar is not None:
            self.bar.set_postfix(
                cached=c.cache_hits,
                failed=c.failed,
                tokens=f"{c.prompt_tokens + c.completion_tokens:,}",
                refresh=False,
            )
            self.bar.update(1)

    def _record(
        self, pos: int, entry: CachedAnswer, *, cached: bool, estimated: int | None = None
    ) -> None:
        c = self.counters
        row = self.rows[pos]
        row.answer = entry.answer
        row.prompt_tokens = entry.prompt_tokens
        row.completion_tokens = entry.completion_tokens
        row.estimated_tokens = entry.estimated_tokens if estimated is None else estimated
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
        http_client = plan.client.http_client()
        if http_client is None:
            sdk = plan.client.openai.with_options(max_retries=0, timeout=options.timeout)
        else:
            sdk = plan.client.openai.copy(
                max_retries=0, timeout=options.timeout, http_client=http_client
            )
        window = asyncio.Semaphore(options.concurrency + 2 * workers)
        try:
            if plan.model is None:
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
            pool.shutdown(wait=False, cancel_futures=True)
            if http_client is not None:
                await sdk.close()
        if self.fatal is not None:
            raise self.fatal

    async def _row(
        self, pos: int, sdk: Any, pool: ThreadPoolExecutor, window: asyncio.Semaphore
    ) -> None:
        plan = self.plan
        result = self.rows[pos]
        loop = asyncio.get_running_loop()
        try:
            # Answers stored before the look-up starts; if more are stored by the time this row
            # would send, a twin may have been answered meanwhile (see below).
            stamp = self._stores
            row = await loop.run_in_executor(pool, self._prepare, pos)
            if row.error is not None:
                result.error = row.error
                return
            assert row.key is not None
            if row.hit is not None:
                logger.debug("row %r: cache hit %s", row.label, row.key[:12])
                self._record(pos, row.hit, cached=True)
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
                    self._record(pos, entry, cached=True)
                    return
            elif self._stores != stamp:
                # A twin may have been answered, stored and retired between this row's cache
                # look-up (in the pool) and now: look again rather than pay for it twice.
                hit = plan.lookup(row.key)
                if hit is not None:
                    self._record(pos, hit, cached=True)
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
        except asyncio.CancelledError:
            if result.error is None and result.answer is None:
                result.error = INTERRUPTED
            raise
        except Exception as exc:  # a bug or an unexpected library error: this row only
            logger.exception("row %r failed unexpectedly", plan.index[pos])
            result.error = describe_error(exc)
        finally:
            window.release()
            self._finish(pos)

    def _prepare(self, pos: int) -> RowPlan:
        """Read, hash, look up the cache, and on a miss encode and check (in the thread pool).

        Once the run is stopping, a miss is not encoded (``request`` stays ``None``).
        """
        row = lookup_row(self.plan, pos)
        if row.images is None or self.stopping:
            row.images = None
            return row
        return prepare_request_for(self.plan, row)

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
        attempt = 0
        while True:
            if self.stopping:
                if attempt == 0:
                    result.error = INTERRUPTED
                else:
                    result.error = f"{result.error} (not retried: interrupted)"
                return None
            ticket = await self.limiter.acquire()
            if self.stopping:
                await self.limiter.release(ticket, "error")
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
                response = await sdk.post(
                    "/chat/completions", cast_to=ChatCompletion, content=prepared.payload
                )
            except openai.APIError as exc:
                kind = classify(exc)
                retry_after = parse_retry_after(headers_of(exc))
                await self.limiter.release(
                    ticket, "rate" if kind == "rate" else "error", retry_after
                )
                if kind == "auth":
                    self._stop(exc)
                    return None
                result.error = describe_error(exc)
                if kind == "fail":
                    return None
                if kind == "rate":
                    self.counters.rate_limited += 1
                if attempt > max_retries:
                    result.error = f"{result.error} (gave up after {attempt} attempts)"
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
                await self.limiter.release(ticket, "error")
                raise
            await self.limiter.release(ticket, "ok")
            result.error = None
            return self._store(row, response)

    def _stop(self, exc: BaseException) -> None:
        """A 401: start nothing more and raise ``exc`` from ``main``.

        Requests already in flight are let finish (they were sent with a key the server may
        have accepted, so their answers may be paid for) but are not retried.
        """
        if self.fatal is None:
            self.fatal = exc
            logger.error(
                "authentication failed (%s); stopping the run. Answers received so far "
                "are in the cache.",
                getattr(exc, "status_code", "?"),
            )
            assert self._drain is not None
            self._drain.set()

    def _store(self, row: RowPlan, response: Any) -> CachedAnswer:
        """Commit a paid answer at once, then record it in the row."""
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
        )
        row.request = None  # the body is no longer needed
        if plan.cache is not None:
            try:
                plan.save(row.key, entry)
                self._stores += 1
            except Exception as exc:  # a full disk must not cost the answer in memory
                logger.error("could not store row %r in the cache: %s", row.label, exc)
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
            for name in plan.schema.fields:
                out[name] = pd.Series(
                    [None if r.fields is None else r.fields.get(name) for r in rows],
                    index=index,
                )
        c = self.counters
        out.attrs["usage"] = {
            "rows": plan.n,
            "requests": c.requests,
            "answered": c.answered,
            "cache_hits": c.cache_hits,
            "failed": int(sum(r.error is not None for r in rows)),
            "retries": c.retries,
            "rate_limited": c.rate_limited,
            "prompt_tokens": c.prompt_tokens,
            "completion_tokens": c.completion_tokens,
            "estimated_tokens": c.estimated_tokens,
            "elapsed_s": round(self.elapsed, 3),
            "concurrency": plan.options.concurrency,
            "lowest_concurrency": int(self.limiter.lowest),
            "interrupted": self.interrupted,
            "provider": plan.provider.name,
            "model": plan.model,
        }
        return out


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
