"""Ask a vision model about every row of a DataFrame: fast, resumable, within the provider's rules.

Usage::

    import visionkit as vk
    df = vk.read_images("datasets/")
    result = df.vision.ask("Describe this image in one sentence.")
    table = df.drop(columns="error").join(result)   # same index; one error column (see below)
    result.attrs["usage"]                 # requests, cache hits, retries, tokens, elapsed

Joining: ``read_images`` and ``ask`` both have an ``error`` column (fixed names), so pandas
refuses ``df.join(result)`` ("columns overlap"). ``ask`` reads each image itself and a file
``read_images`` could not read fails here with the same reason, so ``read_images``' column can
be dropped with nothing lost: ``df.drop(columns="error").join(result)``, whose one ``error``
says why a row has no answer. ``df.join(result, rsuffix="_ask")`` keeps both.

How a run works (``_Run``): a dispatcher walks the rows in order and keeps at most
``concurrency + prefetch`` of them alive. Each row reads its image bytes, hashes them for the
cache key and looks the key up; on a miss it encodes the images and checks the request against
the provider's rules (``visionkit.requests``) -- all of that in a thread pool the size of the
machine's cores, overlapping the network waits -- then waits for a slot from the adaptive
limiter (``visionkit.retry``) and sends through the ``openai`` SDK. Memory therefore stays
bounded by the requests in flight, not by the size of the set.

Retries: the SDK client is copied with ``max_retries=0`` and visionkit retries itself, because
a batch must see 429s as they happen to lower its concurrency (AIMD) and pause for
``Retry-After``; delays follow the SDK's own policy (``visionkit.retry.retry_delay``). 5xx,
408/409, timeouts and dropped connections are retried with backoff up to ``max_retries``;
other 4xx fail the row at once with the provider's message; a 401 stops the whole run with the
SDK's ``openai.AuthenticationError`` (answers already received stay in the cache).

No loss: each answer is written to the SQLite cache (``visionkit.cache``) the moment it
arrives. On a KeyboardInterrupt (Jupyter's stop button, Ctrl-C), no new request is started and
the requests already in flight -- paid for -- are allowed to finish and are stored; a second
interrupt abandons them. Then, inside IPython/Jupyter, ``ask`` returns the partial DataFrame
with a warning (unfinished rows have ``error`` "not run: interrupted"); in a plain script it
re-raises KeyboardInterrupt. A re-run sends only the rows the cache does not have.

``ask`` works in a plain script and inside Jupyter's running event loop alike: the run always
happens on a worker thread with its own event loop while the calling thread waits (and
listens for interrupts). ``await ask_async(...)`` runs in the caller's loop instead.

Surprises met on the way:

- ``client.chat.completions.create`` re-types every field of the body against the SDK's
  TypedDicts on each call; for a vision body that cost more client CPU than everything else
  visionkit does per row (encode, hash, cache, checks). Bodies are therefore sent with the
  SDK's documented low-level ``post("/chat/completions", cast_to=ChatCompletion, content=...)``:
  same auth, errors and response types, and the bytes sent are exactly the bytes checked.
- ``post(body=...)`` still serialises the body on the event loop (about 1 ms for a 200 KB
  vision body); it was already serialised once to measure it, so those bytes are sent with
  ``post(content=...)``. What remains per request is the SDK's request/response handling and
  its HTTP stack: about 3.5 ms of client CPU with httpx on the benchmark machine.
- The SDK's aiohttp transport (``openai.DefaultAioHttpClient``, extra ``openai[aiohttp]``)
  costs 2.5 vs 3.5 ms of client CPU per request (-28 %) and brought the 400-row benchmark
  from 1.11x/1.18x (best/median) of the ideal time to 1.08x/1.12x, so it is used whenever it
  is installed (``pip install 'visionkit[aiohttp]'``; ``connect(transport="httpx")`` opts
  out). Each run makes its HTTP client inside its own event loop -- an aiohttp session is
  bound to the loop it was made in -- and closes it when the run ends.
- An AIMD limit on concurrency alone cannot hold a requests-per-second limit: near it the
  window is tiny (4 in flight at 20 req/s and 200 ms) and +1 per round is a 25 % jump, so
  about one request in five was refused. Pacing sends at ``limit / rtt`` after the first 429,
  and probing upward ten times more slowly while 429s are recent, brings that under 5 %.
- The same image twice in one run would be paid twice (both rows miss the cache before either
  answer arrives); rows with the same key now wait for the first one's answer, or take it
  once it has arrived (with ``cache=False`` too).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .cache import Cache, CachedAnswer, image_digest, request_key
from .client import Client, cache_identity, default_client, resolve_profile
from .errors import BudgetExceeded, ImageError, RequestError, VisionError
from .profiles import Provider
from .requests import check_template, fill_template, prepare_request, text_tokens
from .retry import (
    MAX_RETRY_AFTER,
    AdaptiveLimiter,
    classify,
    headers_of,
    parse_retry_after,
    retry_delay,
)
from .schema import Schema, make_schema
from .sources import image_column

__all__ = ["ask", "ask_async"]

logger = logging.getLogger("visionkit")

RESULT_COLUMNS = (
    "answer",
    "error",
    "prompt_tokens",
    "completion_tokens",
    "estimated_tokens",
    "cached",
    "attempts",
)
INTERRUPTED = "not run: interrupted (re-run to resume from the cache)"


# --------------------------------------------------------------------------- the plan
@dataclass
class _Plan:
    """Everything decided before anything is sent."""

    index: pd.Index
    columns: list[str]
    cells: list[list[Any]]  # per image column, the cells in row order
    prompts: list[str | RequestError]
    client: Client | None
    provider: Provider
    model: str | None
    system: str | None
    schema: Schema | None
    params: dict[str, Any]
    encode_options: dict[str, Any]
    concurrency: int
    max_retries: int
    timeout: float | None
    cache: Cache | None
    progress: bool

    @property
    def n(self) -> int:
        return len(self.index)

    def key(self, pos: int, digests: Sequence[str], model: str) -> str:
        if self.client is not None:
            name, base_url = self.client.cache_identity
        else:
            name, base_url = cache_identity(self.provider, self.provider.base_url)
        return request_key(
            provider=name,
            base_url=base_url,
            model=model,
            prompt=str(self.prompts[pos]),
            system=self.system,
            schema=self.schema.json_schema if self.schema else None,
            params={**self.params, "_encode": self.encode_options},
            images=digests,
        )


def _image_columns(df: pd.DataFrame, column: str | Sequence[str] | None) -> list[str]:
    if column is None:
        return [image_column(df, who="ask")]
    cols = [column] if isinstance(column, str) else list(column)
    if not cols:
        raise ValueError("column= is an empty list; name at least one image column")
    return [image_column(df, c, who="ask") for c in cols]


def _plan(
    df: pd.DataFrame,
    prompt: str,
    *,
    client: Client | str | None,
    model: str | None,
    column: str | Sequence[str] | None,
    system: str | None,
    schema: Any,
    concurrency: int,
    max_retries: int,
    timeout: float | None,
    cache: Any,
    progress: bool,
    max_side: int | None,
    request_options: dict[str, Any],
    connect_now: bool,
) -> _Plan:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"ask needs a DataFrame, not {type(df).__name__}")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt must be a non-empty string, e.g. 'Describe this image.'")
    if not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be an integer >= 1, but {concurrency!r} was passed")
    if not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(
            f"max_retries must be an integer >= 0 (0 disables retries), not {max_retries!r}"
        )
    for reserved in ("model", "messages", "stream"):
        if reserved in request_options:
            hint = "pass model=..." if reserved == "model" else "it is built from the row"
            raise TypeError(f"ask() does not take {reserved}= as a request option ({hint})")
    columns = _image_columns(df, column)
    fields = check_template(prompt, df.columns)
    sch = make_schema(schema)
    if sch is not None:
        clash = [f for f in sch.fields if f in RESULT_COLUMNS]
        if clash:
            raise ValueError(
                f"schema field(s) {clash} would collide with ask's result columns "
                f"{list(RESULT_COLUMNS)}; rename them in the schema"
            )
        if "response_format" in request_options:
            raise TypeError("pass either schema= or response_format=, not both")

    prompts: list[str | RequestError] = []
    if fields:
        records = df[fields].to_dict("records")
        for label, values in zip(df.index, records, strict=True):
            try:
                prompts.append(fill_template(prompt, values, row=label))
            except RequestError as exc:
                prompts.append(exc)
    else:
        literal = prompt.format_map({})
        prompts = [literal] * len(df)

    if isinstance(client, str):
        from .client import connect

        client = connect(client)
    if client is None and connect_now:
        client = default_client()
    if client is not None:
        client = client.with_model(model)
        provider, model = client.provider, client.model
    else:
        provider = resolve_profile("auto")
        model = model or provider.default_model
    if provider.max_images is not None and len(columns) > provider.max_images:
        raise RequestError(
            f"column={columns} puts {len(columns)} images in each request, but "
            f"{provider.name} allows at most {provider.max_images}; nothing was sent"
        )

    encode_options = {"max_side": max_side} if max_side is not None else {}
    return _Plan(
        index=df.index,
        columns=columns,
        cells=[df[c].tolist() for c in columns],
        prompts=prompts,
        client=client,
        provider=provider,
        model=model,
        system=system,
        schema=sch,
        params=dict(request_options),
        encode_options=encode_options,
        concurrency=concurrency,
        max_retries=max_retries,
        timeout=timeout,
        cache=Cache.open(cache),
        progress=progress,
    )


def _is_missing(cell: Any) -> bool:
    if cell is None:
        return True
    if isinstance(cell, (str, bytes)):
        return len(cell) == 0
    try:
        return bool(pd.isna(cell))
    except (TypeError, ValueError):
        return False


def _read_row(plan: _Plan, pos: int) -> tuple[list[bytes], list[str]]:
    """The raw bytes of the row's images and their content digests (thread-pool work)."""
    from .sources import read_bytes

    label = plan.index[pos]
    datas = []
    for col, cells in zip(plan.columns, plan.cells, strict=True):
        cell = cells[pos]
        if _is_missing(cell):
            raise ImageError(f"no image in column {col!r}", row=label)
        datas.append(read_bytes(cell, row=label))
    return datas, [image_digest(d) for d in datas]


def _describe(exc: BaseException) -> str:
    """A row's error text for an SDK or visionkit error (the provider's own message)."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        body = exc.body
        message = None
        if isinstance(body, Mapping):
            inner = body.get("error", body)
            message = inner.get("message") if isinstance(inner, Mapping) else str(inner)
        return f"{type(exc).__name__} ({exc.status_code}): {message or exc.message}"
    if isinstance(exc, openai.APIError):
        return f"{type(exc).__name__}: {exc.message}"
    if isinstance(exc, VisionError):
        reason = getattr(exc, "reason", None)
        return f"{type(exc).__name__}: {reason or exc}"
    return f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- the run
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
class _Run:
    plan: _Plan
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
        workers = max(2, min(8, os.cpu_count() or 2))
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
                    self.error[pos] = _describe(prompt)
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
                self.error[pos] = _describe(exc)
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
            self.error[pos] = _describe(exc)
        finally:
            window.release()
            self._finish(pos)

    def _prepare(self, pos: int) -> tuple[str, str, Any, int]:
        """Read, hash, look up the cache, and on a miss encode and check (in the thread pool)."""
        plan = self.plan
        datas, digests = _read_row(plan, pos)
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
                self.error[pos] = _describe(exc)
                if kind == "fail":
                    return
                if kind == "rate":
                    self.counters.rate_limited += 1
                if attempt > plan.max_retries:
                    self.error[pos] += f" (gave up after {attempt} attempts)"
                    return
                if retry_after is not None and retry_after > MAX_RETRY_AFTER:
                    self.error[pos] += f" (server asked to wait {retry_after:.0f} s; not retried)"
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


def _progress_bar(plan: _Plan, desc: str = "vision ask") -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=plan.n, desc=desc, unit="row", disable=not plan.progress, dynamic_ncols=True)


def _in_ipython() -> bool:
    ipython = sys.modules.get("IPython")
    try:
        return ipython is not None and ipython.get_ipython() is not None
    except Exception:
        return False


# --------------------------------------------------------------------------- estimates
# One computation serves ``dry_run=True``, ``budget_tokens=`` and the run itself: a row's
# estimate is ``prepare_request``'s -- the provider's formula on the image as encoded (after
# ``max_side`` and any shrinking to fit the body limit) plus the text -- and the total counts
# what would be sent: cache hits and a repeat of an image already in the run are free (the run
# answers them without a request), rows that would fail cost nothing.


def _estimate_row(plan: _Plan, pos: int, *, encode: bool) -> dict[str, Any]:
    """Per-row estimate without the network: tokens, request bytes, cached, key, error.

    ``encode=True`` is the exact estimate (what ``dry_run`` reports). ``encode=False`` reads
    only headers and prices each image at the size ``encode`` starts from (its ``max_side``
    fit); encoding can only shrink an image further, so this is an upper bound of the exact
    estimate, used by the budget check to skip encoding when even the bound is in budget.
    """
    from .imageinfo import display_size
    from .sources import open_header
    from .tokens import fit_within

    out: dict[str, Any] = {
        "estimated_tokens": None,
        "request_bytes": None,
        "cached": False,
        "key": None,
        "error": None,
    }
    prompt = plan.prompts[pos]
    label = plan.index[pos]
    try:
        if isinstance(prompt, RequestError):
            raise prompt
        datas, digests = _read_row(plan, pos)
        out["key"] = plan.key(pos, digests, plan.model or "")
        if plan.cache is not None and plan.model is not None:
            hit = plan.cache.get(out["key"])
            if hit is not None:
                out.update(cached=True, estimated_tokens=hit.estimated_tokens)
                return out
        if encode:
            prepared = prepare_request(
                datas,
                provider=plan.provider,
                model=plan.model or "model",
                prompt=str(prompt),
                system=plan.system,
                response_format=plan.schema.response_format if plan.schema else None,
                params=plan.params,
                encode_options=plan.encode_options,
                row=label,
            )
            out.update(estimated_tokens=prepared.estimated_tokens, request_bytes=prepared.nbytes)
        else:
            tokens = text_tokens(str(prompt), plan.system)
            max_side = plan.encode_options.get("max_side") or plan.provider.max_side
            for data in datas:
                with open_header(data, row=label) as im:
                    w, h = display_size(im)
                if max_side:
                    w, h = fit_within(w, h, max_side)
                tokens += int(plan.provider.estimate(w, h))
            out["estimated_tokens"] = tokens
    except (ImageError, RequestError) as exc:
        out["error"] = _describe(exc)
    return out


def _estimate(plan: _Plan, *, encode: bool) -> list[dict[str, Any]]:
    workers = max(2, min(8, os.cpu_count() or 2))
    desc = "vision dry run" if encode else "vision estimate"
    bar = _progress_bar(plan, desc=desc)
    rows: list[dict[str, Any]] = []
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for row in pool.map(lambda p: _estimate_row(plan, p, encode=encode), range(plan.n)):
                rows.append(row)
                bar.update(1)
    finally:
        bar.close()
    return rows


def _to_send(rows: Sequence[Mapping[str, Any]]) -> list[bool]:
    """Which rows would be sent: no error, not cached, not a repeat of an earlier row's key."""
    seen: set[str] = set()
    out = []
    for r in rows:
        send = r["error"] is None and not r["cached"] and r["key"] not in seen
        if send:
            seen.add(r["key"])
        out.append(send)
    return out


def _totals(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """The totals ``dry_run`` reports and ``budget_tokens`` is checked against."""
    send = _to_send(rows)
    sent = [r for r, s in zip(rows, send, strict=True) if s]
    failed = sum(r["error"] is not None for r in rows)
    hits = sum(bool(r["cached"]) for r in rows)
    sizes = [r["request_bytes"] or 0 for r in sent]
    return {
        "requests": len(sent),
        "cache_hits": hits,
        "repeats": len(rows) - len(sent) - hits - failed,
        "failed": failed,
        "estimated_tokens": sum(r["estimated_tokens"] or 0 for r in sent),
        "request_bytes": sum(sizes),
        "largest_request_bytes": max(sizes, default=0),
    }


def _dry_run_frame(plan: _Plan) -> pd.DataFrame:
    rows = _estimate(plan, encode=True)
    index = plan.index
    out = pd.DataFrame(
        {
            "estimated_tokens": pd.array([r["estimated_tokens"] for r in rows], dtype="Int64"),
            "request_bytes": pd.array([r["request_bytes"] for r in rows], dtype="Int64"),
            "cached": pd.array([r["cached"] for r in rows], dtype=bool),
            "error": pd.Series([r["error"] for r in rows], index=index, dtype=object),
        },
        index=index,
    )
    out.attrs["usage"] = {
        "rows": plan.n,
        **_totals(rows),
        "provider": plan.provider.name,
        "model": plan.model,
        "dry_run": True,
    }
    return out


def _check_budget(plan: _Plan, budget_tokens: int) -> int:
    """Raise ``BudgetExceeded`` if the dry run's total is over ``budget_tokens``; returns it.

    The decision and the number are the dry run's. To spare encoding every image twice (here
    and in the run), headers are read first: their total is an upper bound of the dry run's
    (encoding never enlarges an image, and token formulas do not fall as images grow), so
    when even it is within budget the run starts at once; otherwise the dry run's exact
    computation decides.
    """
    bound = _totals(_estimate(plan, encode=False))["estimated_tokens"]
    if bound <= budget_tokens:
        logger.info(
            "estimate of at most %s tokens is within budget_tokens=%s", bound, budget_tokens
        )
        return bound
    totals = _totals(_estimate(plan, encode=True))
    total = totals["estimated_tokens"]
    if total > budget_tokens:
        raise BudgetExceeded(
            f"the estimate is {total:,} tokens for {totals['requests']:,} requests "
            f"(prompt and images as encoded, {plan.provider.name} formula; cache hits and "
            f"repeated images are free), over budget_tokens={budget_tokens:,}; nothing was "
            "sent. dry_run=True shows the same estimate per row; max_side= makes images "
            "cheaper."
        )
    logger.info("estimate %s tokens is within budget_tokens=%s", total, budget_tokens)
    return total


# --------------------------------------------------------------------------- public API
_DOC_PARAMS = """
    **Parameters**

    - ``prompt``: text, or a template filled from the row (``"Is this a {label}?"``); a
      field that is not a column raises before anything is sent.
    - ``client``: from ``vk.connect(...)`` (or a provider name); default ``vk.connect()``.
    - ``model``: overrides the client's model.
    - ``column``: the image column (default ``image``, else ``path``), or a list of columns for
      several images per request (at most the provider's ``max_images``).
    - ``system``: a system prompt.
    - ``schema``: a pydantic model class or a JSON-schema dict for structured output; its
      fields become columns, and a reply that does not validate is that row's ``error`` with
      the raw text kept in ``answer``.
    - ``concurrency``: requests in flight at most (lowered automatically on 429s).
    - ``max_retries``: retries per row for 429, 5xx, timeouts and dropped connections.
    - ``timeout``: seconds per request.
    - ``cache``: ``True`` (the default file), ``False``, a path, or a ``visionkit.cache.Cache``.
    - ``dry_run``: no network, no key: per-row ``estimated_tokens``, ``request_bytes``,
      ``cached`` and ``error``, totals in ``attrs["usage"]``.
    - ``budget_tokens``: refuse to start (``BudgetExceeded``) if the estimate is above it --
      exactly the total ``dry_run=True`` reports in ``attrs["usage"]["estimated_tokens"]``:
      the rows that would be sent, priced as encoded; cache hits, repeats of an image already
      in the run and rows that would fail cost nothing.
    - ``progress``: a ``tqdm.auto`` bar with cache hits, failures and tokens.
    - ``max_side``: downscale images so their longest side is at most this (fewer tokens).
    - ``request_options``: extra fields of the chat-completions body (``temperature=0``,
      ``max_tokens=200``, or a server's own such as ``top_k``), sent as given.

    Returns a DataFrame on ``df``'s index with ``answer``, ``error``, ``prompt_tokens``,
    ``completion_tokens``, ``estimated_tokens``, ``cached``, ``attempts`` (and the schema's
    fields); ``attrs["usage"]`` has the totals. Join it to a ``read_images`` frame with
    ``df.drop(columns="error").join(result)``: a row ``read_images`` could not read fails here
    with the same reason, so the one ``error`` left says why any row has no answer.
"""


def _prepare_call(df: pd.DataFrame, prompt: str, kwargs: dict[str, Any]) -> tuple[_Plan, bool]:
    dry_run = kwargs.pop("dry_run")
    budget = kwargs.pop("budget_tokens")
    plan = _plan(df, prompt, connect_now=not dry_run, **kwargs)
    if budget is not None and not dry_run:
        _check_budget(plan, int(budget))
    return plan, dry_run


def ask(
    df: pd.DataFrame,
    prompt: str,
    *,
    client: Client | str | None = None,
    model: str | None = None,
    column: str | Sequence[str] | None = None,
    system: str | None = None,
    schema: Any = None,
    concurrency: int = 8,
    max_retries: int = 6,
    timeout: float | None = 60,
    cache: bool | str | os.PathLike[str] | Cache | None = True,
    dry_run: bool = False,
    budget_tokens: int | None = None,
    progress: bool = True,
    max_side: int | None = None,
    **request_options: Any,
) -> pd.DataFrame:
    """Ask a vision model about every row's image(s); one request per row, cached, resumable.

    Works in scripts and in Jupyter (where an event loop is already running). On a
    KeyboardInterrupt the requests in flight finish and are cached; in IPython/Jupyter the
    partial result is returned with a warning, in a script KeyboardInterrupt is re-raised.
    A 401 raises ``openai.AuthenticationError`` at once.

    **Parameters:**

    * **prompt** - the question; ``{column}`` fields are filled from each row (a missing
      column is an error before anything is sent).
    * **client** - from ``vk.connect()``, or a provider name; default ``connect("auto")``:
      inference.net when ``INFERENCE_API_KEY`` is set, else the offline stand-in.
    * **model** - overrides the client's model.
    * **column** - the image column (default ``image``, else ``path``), or a list of columns
      for several images per request (at most the provider's ``max_images``).
    * **system** - a system message.
    * **schema** - a pydantic model class or a JSON-schema dict: structured output, parsed
      into columns; an answer that does not validate is that row's error.
    * **concurrency** - requests in flight at most (lowered automatically on 429s).
    * **max_retries** - retries of 429, 5xx, timeouts and dropped connections, per row.
    * **timeout** - seconds per request.
    * **cache** - ``True`` (the user cache), ``False``/``None`` (off), a path or a ``Cache``.
    * **dry_run** - no network, no key: per-row estimated tokens and request bytes.
    * **budget_tokens** - refuse to start (``BudgetExceeded``) when the estimate is higher.
    * **progress** - a ``tqdm.auto`` bar with cache hits, failures and tokens.
    * **max_side** - downscale images further than the provider's default before sending.
    * **request_options** - passed into the request body (``temperature=0``, ``max_tokens``...).

    Returns a DataFrame on ``df``'s index: ``answer``, ``error``, ``prompt_tokens``,
    ``completion_tokens``, ``estimated_tokens``, ``cached``, ``attempts`` (and the schema's
    fields); ``result.attrs["usage"]`` has the totals.

    Usage::

        result = df.vision.ask("Is this a {label}? Answer yes or no.", concurrency=16)
        df.drop(columns="error").join(result)
    """
    plan, dry = _prepare_call(
        df,
        prompt,
        dict(
            client=client,
            model=model,
            column=column,
            system=system,
            schema=schema,
            concurrency=concurrency,
            max_retries=max_retries,
            timeout=timeout,
            cache=cache,
            dry_run=dry_run,
            budget_tokens=budget_tokens,
            progress=progress,
            max_side=max_side,
            request_options=request_options,
        ),
    )
    if dry:
        return _dry_run_frame(plan)
    return _run_in_thread(_Run(plan, bar=_progress_bar(plan)))


ask.__doc__ = (ask.__doc__ or "") + _DOC_PARAMS


def _run_in_thread(run: _Run) -> pd.DataFrame:
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
        if _in_ipython():
            warnings.warn(message, RuntimeWarning, stacklevel=3)
            return result
        logger.warning(message)
        raise KeyboardInterrupt(message)
    return result


async def ask_async(
    df: pd.DataFrame,
    prompt: str,
    *,
    client: Client | str | None = None,
    model: str | None = None,
    column: str | Sequence[str] | None = None,
    system: str | None = None,
    schema: Any = None,
    concurrency: int = 8,
    max_retries: int = 6,
    timeout: float | None = 60,
    cache: bool | str | os.PathLike[str] | Cache | None = True,
    dry_run: bool = False,
    budget_tokens: int | None = None,
    progress: bool = True,
    max_side: int | None = None,
    **request_options: Any,
) -> pd.DataFrame:
    """The async twin of ``ask``: ``result = await ask_async(df, "Describe this image.")``.

    Runs in the caller's event loop. Cancelling the task cancels the requests in flight
    (answers already received are in the cache) and re-raises ``CancelledError``.
    """
    kwargs = dict(
        client=client,
        model=model,
        column=column,
        system=system,
        schema=schema,
        concurrency=concurrency,
        max_retries=max_retries,
        timeout=timeout,
        cache=cache,
        dry_run=dry_run,
        budget_tokens=budget_tokens,
        progress=progress,
        max_side=max_side,
        request_options=request_options,
    )
    loop = asyncio.get_running_loop()
    # Planning and the budget pass read files: keep them off the event loop.
    plan, dry = await loop.run_in_executor(None, lambda: _prepare_call(df, prompt, kwargs))
    if dry:
        return await loop.run_in_executor(None, _dry_run_frame, plan)
    run = _Run(plan, bar=_progress_bar(plan))
    try:
        await run.main(reraise_cancel=True)
    finally:
        run.bar.close()
    return run.frame()


ask_async.__doc__ = (ask_async.__doc__ or "") + _DOC_PARAMS
