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

from ..errors import ImageError, RequestError
from ..types import default_workers
from .body import prepare_request
from .cache import CachedAnswer
from .messages import describe_error
from .plan import Plan, read_row
from .progress import in_ipython
from .retry import (
    MAX_RETRY_AFTER,
    AdaptiveLimiter,
    classify,
    headers_of,
    parse_retry_after,
    retry_delay,
)

__all__ = ["INTERRUPTED", "Run", "run_in_thread"]

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


@dataclass
class Run:
    plan: Plan
    bar: Any = None
    counters: _Counters = field(default_factory=_Counters)

    def __post_init__(self) -> None:
        n = self.plan.n
        self.answer: list[str | None] = [None] * n
        self.error: list[str | None] = [None] * n
        self.prompt_tokens: list[int | None] = [None] * n
        self.completion_tokens: list[int | None] = [None] * n
        self.estimated: list[int | None] = [None] * n
        self.cached = [False] * n
        self.attempts = [0] * n
        self.parsed: list[dict[str, Any] | None] = [None] * n
        self.finished = [False] * n
        self.fatal: BaseException | None = None
        self.interrupted = False
        self.limiter = AdaptiveLimiter(self.plan.concurrency)
        self.started = time.perf_counter()
        self.elapsed = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[Any] | None = None
        self._drain: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pending: dict[str, asyncio.Future[CachedAnswer | None]] = {}
        self._entries: dict[int, CachedAnswer] = {}
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

    # -- bookkeeping ---------------------------------------------------------------------
    def _finish(self, pos: int) -> None:
        self.finished[pos] = True
        c = self.counters
        if self.error[pos] is not None:
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
        self.answer[pos] = entry.answer
        self.prompt_tokens[pos] = entry.prompt_tokens
        self.completion_tokens[pos] = entry.completion_tokens
        self.estimated[pos] = entry.estimated_tokens if estimated is None else estimated
        self.cached[pos] = cached
        if cached:
            c.cache_hits += 1
        else:
            c.answered += 1
            c.prompt_tokens += entry.prompt_tokens or 0
            c.completion_tokens += entry.completion_tokens or 0
        if self.plan.schema is not None:
            try:
                self.parsed[pos] = self.plan.schema.parse(entry.answer)
            except ValueError as exc:
                self.error[pos] = f"SchemaError: {exc}"

    # -- the coroutine ----------------------------------------------------------------
    async def main(self, *, reraise_cancel: bool = True) -> None:
        plan = self.plan
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
            sdk = plan.client.openai.with_options(max_retries=0, timeout=plan.timeout)
        else:
            sdk = plan.client.openai.copy(
                max_retries=0, timeout=plan.timeout, http_client=http_client
            )
        window = asyncio.Semaphore(plan.concurrency + 2 * workers)
        try:
            if plan.model is None:
                plan.model = await _discover_model(sdk)
            for pos in range(plan.n):
                prompt = plan.prompts[pos]
                if isinstance(prompt, RequestError):
                    self.error[pos] = describe_error(prompt)
                    self._finish(pos)
                    continue
                await window.acquire()
                if self.draining or self.fatal is not None:
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
        label = plan.index[pos]
        loop = asyncio.get_running_loop()
        try:
            try:
                job = await loop.run_in_executor(pool, self._prepare, pos)
            except (ImageError, RequestError) as exc:
                self.error[pos] = describe_error(exc)
                return
            kind, key, payload, stamp = job
            if kind == "hit":
                logger.debug("row %r: cache hit %s", label, key[:12])
                self._record(pos, payload, cached=True)
                return
            if kind == "skip":
                self.error[pos] = INTERRUPTED
                return
            # Two rows with the same key in one run (the same image and prompt): the second
            # waits for the first's answer instead of paying for it again.
            twin = self._pending.get(key)
            if twin is not None:
                entry = await asyncio.shield(twin)
                if entry is not None:
                    self._record(pos, entry, cached=True)
                    return
            elif plan.cache is not None and self._stores != stamp:
                # A twin may have been answered, stored and retired between this row's cache
                # lookup (in the pool) and now: look again rather than pay for it twice.
                hit = plan.cache.get(key)
                if hit is not None:
                    self._record(pos, hit, cached=True)
                    return
            future: asyncio.Future[CachedAnswer | None] = loop.create_future()
            self._pending[key] = future
            try:
                await self._send(pos, key, payload, sdk)
            finally:
                entry = self._entries.pop(pos, None)
                # Without a cache an answered key stays, so a later repeat is answered from it
                # as the dry run counts it (with a cache, the cache answers it, and nothing per
                # row is kept: memory stays bounded by the requests in flight). A failed key is
                # dropped so a repeat tries again.
                keep = entry is not None and plan.cache is None
                if not keep and self._pending.get(key) is future:
                    del self._pending[key]
                future.set_result(entry)
        except asyncio.CancelledError:
            if self.error[pos] is None and self.answer[pos] is None:
                self.error[pos] = INTERRUPTED
            raise
        except Exception as exc:  # a bug or an unexpected library error: this row only
            logger.exception("row %r failed unexpectedly", label)
            self.error[pos] = describe_error(exc)
        finally:
            window.release()
            self._finish(pos)

    def _prepare(self, pos: int) -> tuple[str, str, Any, int]:
        """Read, hash, look up the cache, and on a miss encode and check (in the thread pool)."""
        plan = self.plan
        datas, digests = read_row(plan, pos)
        assert plan.model is not None
        key = plan.key(pos, digests, plan.model)
        stamp = self._stores
        if plan.cache is not None:
            hit = plan.cache.get(key)
            if hit is not None:
                return ("hit", key, hit, stamp)
        if self.draining or self.fatal is not None:
            return ("skip", key, None, stamp)
        prepared = prepare_request(
            datas,
            provider=plan.provider,
            model=plan.model,
            prompt=str(plan.prompts[pos]),
            system=plan.system,
            response_format=plan.schema.response_format if plan.schema else None,
            params=plan.params,
            encode_options=plan.encode_options,
            row=plan.index[pos],
        )
        return ("miss", key, prepared, stamp)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, waking early if the run is interrupted."""
        assert self._drain is not None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._drain.wait(), timeout=seconds)

    async def _send(self, pos: int, key: str, prepared: Any, sdk: Any) -> None:
        import openai

        plan = self.plan
        label = plan.index[pos]
        self.estimated[pos] = prepared.estimated_tokens
        self.counters.estimated_tokens += prepared.estimated_tokens
        from openai.types.chat import ChatCompletion

        attempt = 0
        while True:
            if self.draining or self.fatal is not None:
                if attempt == 0:
                    self.error[pos] = INTERRUPTED
                else:
                    self.error[pos] = f"{self.error[pos]} (not retried: interrupted)"
                return
            ticket = await self.limiter.acquire()
            if self.draining or self.fatal is not None:
                await self.limiter.release(ticket, "error")
                continue
            attempt += 1
            self.attempts[pos] = attempt
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
                    return
                self.error[pos] = describe_error(exc)
                if kind == "fail":
                    return
                if kind == "rate":
                    self.counters.rate_limited += 1
                if attempt > plan.max_retries:
                    self.error[pos] = f"{self.error[pos]} (gave up after {attempt} attempts)"
                    return
                if retry_after is not None and retry_after > MAX_RETRY_AFTER:
                    self.error[pos] = (
                        f"{self.error[pos]} (server asked to wait {retry_after:.0f} s; not retried)"
                    )
                    return
                delay = retry_delay(attempt, retry_after)
                self.counters.retries += 1
                logger.info(
                    "row %r: %s; retry %d of %d in %.2f s",
                    label,
                    self.error[pos],
                    attempt,
                    plan.max_retries,
                    delay,
                )
                await self._sleep(delay)
                continue
            except BaseException:
                await self.limiter.release(ticket, "error")
                raise
            await self.limiter.release(ticket, "ok")
            self.error[pos] = None
            self._store(pos, key, prepared, response)
            return

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

    def _store(self, pos: int, key: str, prepared: Any, response: Any) -> None:
        plan = self.plan
        choices = getattr(response, "choices", None) or []
        message = choices[0].message if choices else None
        answer = getattr(message, "content", None) if message is not None else None
        usage = getattr(response, "usage", None)
        entry = CachedAnswer(
            answer=answer,
            prompt_tokens=getattr(usage, "prompt_tokens", None),
            completion_tokens=getattr(usage, "completion_tokens", None),
            estimated_tokens=prepared.estimated_tokens,
            model=getattr(response, "model", None) or plan.model,
            provider=plan.provider.name,
        )
        if plan.cache is not None:
            try:
                plan.cache.put(key, entry)
                self._stores += 1
            except Exception as exc:  # a full disk must not cost the answer in memory
                logger.error("could not store row %r in the cache: %s", plan.index[pos], exc)
        self._record(pos, entry, cached=False)
        self._entries[pos] = entry
        if answer is None:
            refusal = getattr(message, "refusal", None)
            self.error[pos] = f"empty reply{f': {refusal}' if refusal else ''}"

    # -- the result ------------------------------------------------------------------
    def frame(self) -> pd.DataFrame:
        plan = self.plan
        for pos in range(plan.n):
            if not self.finished[pos] and self.error[pos] is None and self.answer[pos] is None:
                self.error[pos] = INTERRUPTED
        index = plan.index
        out = pd.DataFrame(
            {
                "answer": pd.Series(self.answer, index=index, dtype=object),
                "error": pd.Series(self.error, index=index, dtype=object),
                "prompt_tokens": pd.array(self.prompt_tokens, dtype="Int64"),
                "completion_tokens": pd.array(self.completion_tokens, dtype="Int64"),
                "estimated_tokens": pd.array(self.estimated, dtype="Int64"),
                "cached": pd.array(self.cached, dtype=bool),
                "attempts": pd.array(self.attempts, dtype="Int64"),
            },
            index=index,
        )
        if plan.schema is not None:
            for name in plan.schema.fields:
                out[name] = pd.Series(
                    [None if p is None else p.get(name) for p in self.parsed], index=index
                )
        c = self.counters
        out.attrs["usage"] = {
            "rows": plan.n,
            "requests": c.requests,
            "answered": c.answered,
            "cache_hits": c.cache_hits,
            "failed": int(sum(e is not None for e in self.error)),
            "retries": c.retries,
            "rate_limited": c.rate_limited,
            "prompt_tokens": c.prompt_tokens,
            "completion_tokens": c.completion_tokens,
            "estimated_tokens": c.estimated_tokens,
            "elapsed_s": round(self.elapsed, 3),
            "concurrency": plan.concurrency,
            "lowest_concurrency": int(self.limiter.lowest),
            "interrupted": self.interrupted,
            "provider": plan.provider.name,
            "model": plan.model,
        }
        return out


async def _discover_model(sdk: Any) -> str:
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
