"""One rate limit for the whole cluster: the coordinator on the scheduler, and each worker's link.

A provider's limit is per key, not per worker, so every worker of a Dask cluster must share one
concurrency window, one pacing and one reaction to 429s. ``Coordinator`` is a
``distributed.SchedulerPlugin``: it lives in the scheduler process (the one process every
worker already talks to, and the last one to die) and holds, per gate, exactly the state a
single process's ``visionkit.query.pacing.Gate`` holds -- the AIMD window, the ``Retry-After``
pause and the known-limit pacer. It *is* that ``Gate``, run in the scheduler's event loop, so
the pandas and Dask paths share one implementation of the policy.

Workers reach it through scheduler handlers (``visionkit_gate_acquire`` ...), one round trip
per call, over a small connection pool in a thread of their own (``link()``). ``ClusterGate``
offers the ``Gate``'s four calls to ``visionkit.query.run.Run``, which therefore runs unchanged
on a worker. A 429 seen by one worker lowers the window and widens the pacing for all of them.

The same coordinator holds the cluster's *claims* (``claim``/``unclaim``/``done``): the key a
worker is about to pay for, so two workers never send the same key at once, and a short memory
of answers (``MEMO_SIZE``) so a worker that waited for a key gets the answer even when the two
workers do not share a cache file (see ``visionkit.dask.cache``).

Worker failure: tickets and claims belong to an *owner* (``"<worker address>#<run id>"``);
when the scheduler removes a worker, the plugin's ``remove_worker`` hook gives back everything
its owners held, so a dead worker never shrinks the window for the others.

Measured (``benchmarks/bench_dask.py``, 2-core machine, load ~7): a round trip to a scheduler
handler from a task's own event loop costs 0.33 ms; distributed's ``Semaphore`` acquire +
release 1.7 ms, ``Lock`` 2.9 ms, ``Variable.get`` 1.7 ms, an ``Actor`` call 0.8-1.3 ms (and an
actor lives on one worker, whose death loses the state for good: Dask does not restart
actors). Pub/Sub, which the issue listed, no longer exists in ``distributed`` (2026.8 has no
``distributed.Pub``). So the coordinator is a scheduler plugin with its own handlers.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

from distributed.diagnostics.plugin import SchedulerPlugin

from .._state import register
from ..providers import RateLimits
from ..query.limits import Announced
from ..query.pacing import Gate

__all__ = ["MEMO_SIZE", "ClusterGate", "Coordinator", "Link", "ensure_coordinator", "link"]

logger = logging.getLogger("visionkit")

NAME = "visionkit-coordinator"
Outcome = Literal["ok", "error"]
MEMO_SIZE = 20_000  # answers the coordinator remembers for workers that waited on a key
POOL_LIMIT = 16  # connections from one worker process to the coordinator


@dataclass
class _GateState:
    gate: Gate
    settings: tuple[int, float | None, float | None]
    owners: dict[int, str] = field(default_factory=dict)  # ticket -> owner
    acquired: int = 0
    rate_limited: int = 0


class Coordinator(SchedulerPlugin):
    """The cluster's gates and claims, on the scheduler (see the module docstring)."""

    name = NAME
    idempotent = True

    def __init__(self, memo_size: int = MEMO_SIZE) -> None:
        self.memo_size = memo_size
        self.gates: dict[str, _GateState] = {}
        self.claims: dict[str, str] = {}  # cache key -> owner
        self.memo: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self.closed: collections.deque[str] = collections.deque(maxlen=10_000)
        self.calls = collections.Counter[str]()
        self.usage: dict[str, dict[str, float]] = {}  # job -> summed per-partition usage

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        for op in (
            "gate_open",
            "gate_acquire",
            "gate_release",
            "gate_429",
            "gate_learn",
            "gate_stats",
            "claim",
            "unclaim",
            "done",
            "forget",
            "report",
            "job_usage",
        ):
            scheduler.handlers[f"visionkit_{op}"] = getattr(self, op)

    def remove_worker(self, scheduler: Any, worker: str, *args: Any, **kwargs: Any) -> None:
        """A worker left (or died): give back every ticket and claim its runs held."""
        prefix = f"{worker}#"
        owners = {o for o in self.claims.values() if o.startswith(prefix)}
        for state in self.gates.values():
            owners |= {o for o in state.owners.values() if o.startswith(prefix)}
        for owner in owners:
            self._forget(owner)

    # -- gates ---------------------------------------------------------------------------
    def gate_open(
        self,
        name: str,
        concurrency: int,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
    ) -> dict[str, Any]:
        """Make gate ``name`` (or keep it while it has requests in flight)."""
        self.calls["gate_open"] += 1
        settings = (int(concurrency), requests_per_minute, tokens_per_minute)
        state = self.gates.get(name)
        if state is None or (state.settings != settings and not state.owners):
            limits = (
                RateLimits(requests_per_minute, tokens_per_minute)
                if requests_per_minute or tokens_per_minute
                else None
            )
            state = self.gates[name] = _GateState(Gate(int(concurrency), limits), settings)
        return {"concurrency": state.settings[0]}

    def _state(self, name: str) -> _GateState:
        state = self.gates.get(name)
        if state is None:  # the scheduler restarted, or a worker raced the client: defaults
            state = self.gates[name] = _GateState(Gate(8), (8, None, None))
        return state

    async def gate_acquire(self, name: str, owner: str, tokens: int = 0) -> int:
        self.calls["gate_acquire"] += 1
        state = self._state(name)
        ticket = await state.gate.acquire(int(tokens))
        state.acquired += 1
        if owner in self.closed:  # the run ended while this waited: nobody will send it
            await state.gate.release(ticket, "error")
            return -1
        state.owners[ticket] = owner
        return ticket

    async def gate_release(
        self,
        name: str,
        ticket: int,
        outcome: Literal["ok", "error"] = "ok",
        booked: int = 0,
        tokens: int | None = None,
    ) -> dict[str, float]:
        self.calls["gate_release"] += 1
        state = self._state(name)
        if state.owners.pop(ticket, None) is not None:
            await state.gate.release(ticket, outcome, booked=booked, tokens=tokens)
        return self._limits(state)

    async def gate_429(
        self, name: str, ticket: int, retry_after: float | None = None
    ) -> dict[str, float]:
        self.calls["gate_429"] += 1
        state = self._state(name)
        state.rate_limited += 1
        if state.owners.pop(ticket, None) is not None:
            await state.gate.report_429(ticket, retry_after)
        return self._limits(state)

    def gate_learn(
        self,
        name: str,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        exhausted_for: float | None = None,
    ) -> None:
        """A worker read limits the server announced: the whole cluster paces to them."""
        self.calls["gate_learn"] += 1
        found = Announced(requests_per_minute, tokens_per_minute, exhausted_for)
        self._state(name).gate.learn(found)

    @staticmethod
    def _limits(state: _GateState) -> dict[str, float]:
        limiter = state.gate.limiter
        return {"limit": limiter.limit, "lowest": limiter.lowest}

    def gate_stats(self, name: str | None = None) -> dict[str, Any]:
        """What a gate did (``name``), or every gate, and the handler calls so far."""
        out: dict[str, Any] = {"calls": dict(self.calls)}
        for gname, state in self.gates.items():
            if name is not None and gname != name:
                continue
            limiter = state.gate.limiter
            pacer = state.gate.pacer
            out[gname] = {
                "concurrency": state.settings[0],
                "requests_per_minute": state.settings[1],
                "tokens_per_minute": state.settings[2],
                "paced_requests_per_minute": pacer.requests_per_minute if pacer else None,
                "limit": limiter.limit,
                "lowest": limiter.lowest,
                "in_flight": limiter.in_flight,
                "decreases": limiter.decreases,
                "acquired": state.acquired,
                "rate_limited": state.rate_limited,
            }
        return out

    # -- claims --------------------------------------------------------------------------
    def claim(self, key: str, owner: str, scope: str = "") -> Any:
        """``"mine"`` (send it), ``"busy"`` (another run is asking it: wait), or the answer
        remembered for a key another worker asked (a dict of ``CachedAnswer`` fields)."""
        self.calls["claim"] += 1
        found = self.memo.get(scope + key)
        if found is not None:
            self.memo.move_to_end(scope + key)
            return found
        holder = self.claims.get(key)
        if holder is not None and holder != owner:
            return "busy"
        self.claims[key] = owner
        return "mine"

    def unclaim(self, key: str, owner: str) -> None:
        self.calls["unclaim"] += 1
        if self.claims.get(key) == owner:
            del self.claims[key]

    def done(self, key: str, entry: dict[str, Any], scope: str = "") -> None:
        """``key`` was answered and stored: drop its claim, remember the answer a while."""
        self.calls["done"] += 1
        self.claims.pop(key, None)
        self.memo[scope + key] = entry
        self.memo.move_to_end(scope + key)
        while len(self.memo) > self.memo_size:
            self.memo.popitem(last=False)

    def forget(self, owner: str) -> None:
        """A run ended: whatever it still holds (claims of rows never sent, tickets granted
        after it stopped waiting) goes back."""
        self.calls["forget"] += 1
        self._forget(owner)

    def _forget(self, owner: str) -> None:
        self.closed.append(owner)
        for key in [k for k, o in self.claims.items() if o == owner]:
            del self.claims[key]
        for state in self.gates.values():
            for ticket in [t for t, o in state.owners.items() if o == owner]:
                del state.owners[ticket]
                state.gate.limiter.give_back(ticket, "error")
                state.gate.limiter.wake_all()

    # -- usage per job -------------------------------------------------------------------
    def report(self, job: str, usage: dict[str, Any]) -> None:
        """A partition's ``attrs["usage"]``: summed per job (``vk.dask.usage``)."""
        self.calls["report"] += 1
        total = self.usage.setdefault(job, {})
        for k, v in usage.items():
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            if k not in total:
                total[k] = v
            elif k == "lowest_concurrency":
                total[k] = min(total[k], v)
            elif k in ("concurrency", "elapsed_s"):  # partitions run side by side
                total[k] = max(total[k], v)
            else:
                total[k] += v
        total["partitions"] = total.get("partitions", 0) + 1

    def job_usage(self, job: str) -> dict[str, Any]:
        return dict(self.usage.get(job, {}))


def ensure_coordinator(client: Any) -> None:
    """Install the coordinator on ``client``'s scheduler (once; idempotent)."""
    has = client.run_on_scheduler(_has_coordinator)
    if not has:
        client.register_plugin(Coordinator())


def _has_coordinator(dask_scheduler: Any = None) -> bool:
    return dask_scheduler is not None and NAME in dask_scheduler.plugins


# ---------------------------------------------------------------------------------------------
# the worker side


class Link:
    """This process's line to the coordinator: a thread with its own event loop and a small
    pool of connections to the scheduler, used from any thread or event loop."""

    def __init__(self, address: str, connection_args: dict[str, Any] | None = None) -> None:
        from distributed.core import ConnectionPool

        self.address = address
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, args=(ready,), name="visionkit-coordinator-link", daemon=True
        )
        self._thread.start()
        ready.wait()

        async def make(limit: int) -> Any:
            pool = ConnectionPool(limit=limit, connection_args=connection_args or {})
            await pool.start()
            return pool

        # Two pools: an acquire holds its connection until the coordinator grants a slot, so
        # if releases queued behind waiting acquires for a connection, the slots they would
        # free could never be granted (this deadlocked a 2,000-row run at 16 connections).
        self.waits = asyncio.run_coroutine_threadsafe(make(POOL_LIMIT), self.loop).result()
        self.pool = asyncio.run_coroutine_threadsafe(make(POOL_LIMIT), self.loop).result()

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(ready.set)
        self.loop.run_forever()

    async def _call(self, op: str, **kwargs: Any) -> Any:
        pool = self.waits if op == "gate_acquire" else self.pool
        return await getattr(pool(self.address), f"visionkit_{op}")(**kwargs)

    def call(self, op: str, **kwargs: Any) -> Any:
        """Call handler ``op`` and wait (from a thread that is not this link's)."""
        return asyncio.run_coroutine_threadsafe(self._call(op, **kwargs), self.loop).result()

    async def acall(self, op: str, **kwargs: Any) -> Any:
        """Call handler ``op`` from another event loop."""
        future = asyncio.run_coroutine_threadsafe(self._call(op, **kwargs), self.loop)
        return await asyncio.wrap_future(future)

    def send(self, op: str, **kwargs: Any) -> None:
        """Call handler ``op`` without waiting for it (errors are logged)."""
        future = asyncio.run_coroutine_threadsafe(self._call(op, **kwargs), self.loop)
        future.add_done_callback(_log_failure)


def _log_failure(future: Any) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.warning("visionkit coordinator call failed: %s", future.exception())


_LINKS: dict[str, Link] = {}
_LINKS_LOCK = threading.Lock()


def link() -> Link:
    """This worker's (or client's) link to its scheduler's coordinator, made once."""
    address, args = _scheduler_address()
    with _LINKS_LOCK:
        found = _LINKS.get(address)
        if found is None:
            found = _LINKS[address] = Link(address, args)
        return found


def _scheduler_address() -> tuple[str, dict[str, Any]]:
    from distributed import get_client, get_worker

    try:
        worker = get_worker()
    except ValueError:
        client = get_client()
        return client.scheduler.address, dict(client.connection_args)
    return worker.scheduler.address, dict(worker.connection_args)


def owner_id(run: str) -> str:
    """The owner name of one run on this worker: ``"<worker address>#<run>"``."""
    from distributed import get_worker

    try:
        address = get_worker().address
    except ValueError:
        address = "client"
    return f"{address}#{run}"


class ClusterGate:
    """``visionkit.query.pacing.Gate``'s four calls, answered by the coordinator."""

    def __init__(self, line: Link, name: str, owner: str, concurrency: int) -> None:
        self.link = line
        self.name = name
        self.owner = owner
        self.in_flight = 0
        self.lowest = float(concurrency)
        self._learnt: Announced | None = None

    async def acquire(self, tokens: int = 0) -> int:
        ticket: int = await self.link.acall(
            "gate_acquire", name=self.name, owner=self.owner, tokens=int(tokens)
        )
        self.in_flight += 1
        return ticket

    async def release(self, ticket: int, outcome: Outcome, **usage: int | None) -> None:
        """``Gate.release(ticket, outcome, booked=, tokens=)``, sent without waiting for the
        reply: the slot is free once the message arrives, and the row need not wait a round
        trip more to finish."""
        self.in_flight -= 1
        booked, tokens = int(usage.get("booked") or 0), usage.get("tokens")
        self.link.send(
            "gate_release",
            name=self.name,
            ticket=ticket,
            outcome=outcome,
            booked=booked,
            tokens=tokens,
        )

    async def report_429(self, ticket: int, retry_after: float | None = None) -> None:
        self.in_flight -= 1
        self.link.send("gate_429", name=self.name, ticket=ticket, retry_after=retry_after)

    def learn(self, found: Announced | None) -> None:
        """``Gate.learn``: announced limits go to the coordinator (when they change)."""
        if found is None or found == self._learnt:
            return
        self._learnt = found
        self.link.send(
            "gate_learn",
            name=self.name,
            requests_per_minute=found.requests_per_minute,
            tokens_per_minute=found.tokens_per_minute,
            exhausted_for=found.exhausted_for,
        )

    def close(self) -> None:
        """Give back anything this run still holds (tickets granted after it stopped), and
        learn the lowest the shared window went (for ``attrs["usage"]``)."""
        with contextlib.suppress(Exception):
            self.link.call("forget", owner=self.owner)
            stats = self.link.call("gate_stats", name=self.name)
            self.lowest = min(self.lowest, float(stats[self.name]["lowest"]))


def _held_links() -> tuple[int, str]:
    with _LINKS_LOCK:
        return len(_LINKS), ", ".join(sorted(_LINKS))


register("dask coordinator links", __name__, _held_links)
