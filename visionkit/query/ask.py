"""Ask a vision model about every row of a DataFrame: fast, resumable, within the provider's rules.

Usage:

    import visionkit as vk
    df = vk.read_images("datasets/images/")
    result = df.vision.ask("Describe this image in one sentence.")
    table = df.drop(columns="error").join(result)   # same index; one error column (see below)
    result.attrs["usage"]                 # requests, cache hits, retries, tokens, elapsed

Joining: ``read_images`` and ``ask`` both have an ``error`` column (fixed names), so pandas
refuses ``df.join(result)`` ("columns overlap"). ``ask`` reads each image itself and a file
``read_images`` could not read fails here with the same reason, so ``read_images``' column can
be dropped with nothing lost: ``df.drop(columns="error").join(result)``, whose one ``error``
says why a row has no answer. ``df.join(result, rsuffix="_ask")`` keeps both.

Where things live: ``ask`` and ``ask_async`` turn their arguments into one ``AskOptions``
(``visionkit.query.options``, where each parameter's doc is written once); the planner
(``visionkit.query.plan``) decides each row -- cache key, cache hit, checked request or row
error -- and is the seam batch jobs and Dask build on; ``visionkit.query.run`` sends (how a
run works -- the window of rows in flight, the thread pool, the limiter, why memory stays
bounded -- is told in its module docstring).

Retries: the SDK client is copied with ``max_retries=0`` and visionkit retries itself, because
a batch must see 429s as they happen to lower its concurrency (AIMD) and pause for
``Retry-After``; delays follow the SDK's own policy (``visionkit.query.retry.retry_delay``). 5xx,
408/409, timeouts and dropped connections are retried with backoff up to ``max_retries``;
other 4xx fail the row at once with the provider's message; a 401 stops the whole run with the
SDK's ``openai.AuthenticationError`` (answers already received stay in the cache).

No loss: each answer is written to the SQLite cache (``visionkit.query.cache``) the moment it
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
  about one request in five was refused. After the first 429 sends are paced at a rate, cut
  on each 429 and won back slowly (``visionkit.query.window``); before it the window starts
  small and doubles each round trip (TCP's slow start), so a limit nobody announced costs a
  few requests, not the opening burst (17 % refused at 10 requests/s before, 4 % after).
- Many servers announce their limits on every response (OpenAI's ``x-ratelimit-*``, the
  IETF's ``RateLimit-Policy``); the run reads them through the SDK's raw response and paces
  to them from the first answer on, as if ``requests_per_minute=`` had been given.
- The same image twice in one run would be paid twice (both rows miss the cache before either
  answer arrives); rows with the same key now wait for the first one's answer, or take it
  once it has arrived (with ``cache=False`` too).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any

import pandas as pd

from .cache import Cache
from .client import Client
from .estimate import check_budget, dry_run_frame
from .options import AskOptions, parameters_doc
from .plan import Plan, make_plan
from .progress import progress_bar
from .run import Run
from .thread import run_in_thread

__all__ = ["ask", "ask_async"]


_RETURNS = """
    Returns a DataFrame on ``data``'s index with ``answer``, ``error``, ``prompt_tokens``,
    ``completion_tokens``, ``estimated_tokens``, ``cached``, ``attempts`` (and the schema's
    fields); ``attrs["usage"]`` has the totals. Join it to a ``read_images`` frame with
    ``df.drop(columns="error").join(result)``: a row ``read_images`` could not read fails here
    with the same reason, so the one ``error`` left says why any row has no answer.
"""


def _plan_call(df: pd.DataFrame, prompt: str, options: AskOptions) -> Plan:
    """Plan the call and, unless it is a dry run, check the budget (closing on failure)."""
    plan = make_plan(df, prompt, options, connect_now=not options.dry_run)
    try:
        if options.budget_tokens is not None and not options.dry_run:
            check_budget(plan, int(options.budget_tokens))
    except BaseException:
        plan.close()
        raise
    return plan


def ask(
    data: pd.DataFrame,
    prompt: str,
    *,
    client: Client | str | None = None,
    model: str | None = None,
    image_column: str | Sequence[str] | None = None,
    system: str | None = None,
    schema: Any = None,
    concurrency: int = 8,
    max_retries: int = 6,
    timeout: float | None = 60,
    cache: bool | str | os.PathLike[str] | Cache | None = True,
    dry_run: bool = False,
    budget_tokens: int | None = None,
    progress: bool = True,
    requests_per_minute: float | None = None,
    tokens_per_minute: float | None = None,
    max_side: int | None = None,
    **request_options: Any,
) -> pd.DataFrame:
    """Ask a vision model about every row's image(s); one request per row, cached, resumable.

    Works in scripts and in Jupyter (where an event loop is already running). On a
    KeyboardInterrupt the requests in flight finish and are cached; in IPython/Jupyter the
    partial result is returned with a warning, in a script KeyboardInterrupt is re-raised.
    A 401 raises ``openai.AuthenticationError`` at once.

    Usage:

        result = df.vision.ask("Is this a {label}? Answer yes or no.", concurrency=16)
        df.drop(columns="error").join(result)
    """
    options = AskOptions.from_arguments(locals())
    with _plan_call(data, prompt, options) as plan:
        if options.dry_run:
            return dry_run_frame(plan)
        return run_in_thread(Run(plan, bar=progress_bar(plan.n, enabled=options.progress)))


# ask_async's parameters are ask's, written out again on purpose. A typed ParamSpec decorator
# copying ask's signature was tried: mypy, help() and IPython's completer (which reads
# __signature__ at run time) saw every parameter, but static tools reading the source did not
# (jedi 0.20's Script -- python-lsp-server, jedi-language-server, jupyterlab-lsp -- showed
# ask_async(df, prompt, **options) and completed no option). Drift is caught instead:
# tests/test_ask_plan.py checks both signatures against AskOptions' fields and defaults.
async def ask_async(
    data: pd.DataFrame,
    prompt: str,
    *,
    client: Client | str | None = None,
    model: str | None = None,
    image_column: str | Sequence[str] | None = None,
    system: str | None = None,
    schema: Any = None,
    concurrency: int = 8,
    max_retries: int = 6,
    timeout: float | None = 60,
    cache: bool | str | os.PathLike[str] | Cache | None = True,
    dry_run: bool = False,
    budget_tokens: int | None = None,
    progress: bool = True,
    requests_per_minute: float | None = None,
    tokens_per_minute: float | None = None,
    max_side: int | None = None,
    **request_options: Any,
) -> pd.DataFrame:
    """The async twin of ``ask``: ``result = await ask_async(df, "Describe this image.")``.

    Runs in the caller's event loop. Cancelling the task cancels the requests in flight
    (answers already received are in the cache) and re-raises ``CancelledError``.
    """
    options = AskOptions.from_arguments(locals())
    loop = asyncio.get_running_loop()
    # Planning and the budget pass read files: keep them off the event loop.
    plan = await loop.run_in_executor(None, _plan_call, data, prompt, options)
    with plan:
        if options.dry_run:
            return await loop.run_in_executor(None, dry_run_frame, plan)
        run = Run(plan, bar=progress_bar(plan.n, enabled=options.progress))
        try:
            await run.main(reraise_cancel=True)
        finally:
            run.bar.close()
        return run.frame()


ask.__doc__ = (ask.__doc__ or "") + parameters_doc() + _RETURNS
ask_async.__doc__ = (ask_async.__doc__ or "") + parameters_doc() + _RETURNS
