"""Warnings from Dask tasks, said once per call on the client, at the user's line.

A task runs on a worker -- another process, or one of dask's threads -- where a warning names
no line of the user's and, once per partition, says the same thing many times (a damaged cache
entry seen by nine partitions warned nine times, on the workers' stderr, which a notebook never
shows). So each visionkit call that builds tasks makes a call id (``start_call``) and each task
runs its body ``with in_task(call):``. Inside, every visionkit warning (``errors.warn``) is
taken by this relay instead:

- on a ``distributed`` worker, it is sent to the client as an event (topic ``TOPIC``), once per
  worker process for each distinct (category, text) of a call;
- on dask's local schedulers (threads of the user's process), it is said here at once.

The client subscribes to the topic when the call is made; it says each distinct warning of a
call once, with ``errors.warn_at_user``: at the line the user's main thread is on, which, while
``.compute()`` (or ``submit``) waits for the tasks, is the user's line. A worker sends the event
before it reports the task done, so the warning is said before ``compute`` returns.

Threads a task starts (thread pools) do not carry the task's call; while exactly one call has
tasks running in a process, a warning from such a thread is that call's.
"""

from __future__ import annotations

import builtins
import contextlib
import threading
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from .. import errors
from .._state import register

__all__ = ["TOPIC", "in_task", "start_call"]

TOPIC = "visionkit-warnings"
_MEMORY = 4096  # (call, category, text) triples remembered, on either side

_lock = threading.Lock()
_local = threading.local()  # .call: the call of the task this thread runs
_running: dict[str, int] = {}  # call -> tasks of it running in this process
_workers: dict[str, Any] = {}  # call -> the distributed Worker running its tasks here
_said: OrderedDict[tuple[str, str, str], None] = OrderedDict()  # sent or said already
_subscribed: weakref.WeakSet[Any] = weakref.WeakSet()  # clients listening to TOPIC


def start_call() -> str:
    """A new call's id; subscribes the running ``distributed`` Client, if any, to the relay."""
    try:
        from distributed import get_client

        client = get_client()
    except (ImportError, ValueError):
        client = None
    if client is not None:
        with _lock:
            new = client not in _subscribed
            _subscribed.add(client)
        if new:
            client.subscribe_topic(TOPIC, _on_event)
    return uuid.uuid4().hex


@contextlib.contextmanager
def in_task(call: str) -> Iterator[None]:
    """Run a task's body with its warnings relayed for ``call`` (module doc)."""
    previous = getattr(_local, "call", None)
    _local.call = call
    worker = _worker()
    with _lock:
        _running[call] = _running.get(call, 0) + 1
        if worker is not None:
            _workers[call] = worker
    try:
        yield
    finally:
        _local.call = previous
        with _lock:
            _running[call] -= 1
            if not _running[call]:
                del _running[call]
                _workers.pop(call, None)


def _relay(message: str, category: type[Warning]) -> bool:
    """``errors.warn``'s relay: take the warning when this thread runs a task of a call."""
    call = getattr(_local, "call", None)
    with _lock:
        if call is None:
            if threading.current_thread() is threading.main_thread() or len(_running) != 1:
                return False
            call = next(iter(_running))
        worker = _workers.get(call)
        if not _first(call, category.__name__, message):
            return True
    if worker is None:  # dask's threads in the user's process: say it here
        errors.warn_at_user(message, category)
    else:
        worker.log_event(TOPIC, {"call": call, "category": category.__name__, "text": message})
    return True


def _on_event(event: Any) -> None:
    """A worker's warning, on the client: said once per call (module doc)."""
    _, message = event
    if not isinstance(message, dict):
        return
    call, name, text = (message.get(k) for k in ("call", "category", "text"))
    if not (isinstance(call, str) and isinstance(name, str) and isinstance(text, str)):
        return
    with _lock:
        if not _first(call, name, text):
            return
    errors.warn_at_user(text, _category(name))


def _first(call: str, name: str, text: str) -> bool:
    """Whether (call, name, text) is new here (remembered from now on). Under ``_lock``."""
    key = (call, name, text)
    if key in _said:
        return False
    _said[key] = None
    while len(_said) > _MEMORY:
        _said.popitem(last=False)
    return True


def _category(name: str) -> type[Warning]:
    """The warning class a name stands for: visionkit's or a built-in one, else UserWarning
    (a name from the network never imports anything)."""
    for place in (errors, builtins):
        found = getattr(place, name, None)
        if isinstance(found, type) and issubclass(found, Warning):
            return found
    return UserWarning


def _worker() -> Any:
    """The ``distributed`` Worker running this task, or None (dask's local schedulers)."""
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):
        return None


def _held() -> tuple[int, str]:
    with _lock:
        return len(
            _said
        ), f"{len(_subscribed)} client(s) listening; {len(_running)} call(s) running"


def _forget() -> None:
    with _lock:
        _said.clear()


errors.RELAYS.append(_relay)
register("dask warning relay", __name__, _held, _forget)
