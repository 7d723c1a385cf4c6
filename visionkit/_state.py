"""Everything visionkit keeps for the life of the process, in one place to look at and reset.

Usage::

    import visionkit as vk
    vk.state()          # what is held now: a table, one row per piece of state
    vk.reset_state()    # forget it all (as a fresh kernel would), e.g. between experiments

Most of visionkit keeps nothing between calls: a call's options travel with the call, and the
answer cache is a file (``vk.Cache``). What a process does keep, and why:

============================  ====================================  ===========================
piece                         kept by                               why
============================  ====================================  ===========================
storage options               ``visionkit.images.remote``           ``read_images(source,
                                                                    storage_options=...)``
                                                                    remembers them per prefix
                                                                    so that later reads of the
                                                                    same cells (encode, ask,
                                                                    thumbnails) can open them
fsspec filesystems            ``visionkit.images.remote``           one per protocol and
                                                                    options: connections reused
datasets                      ``visionkit.images.tables``           a ``datasets.Dataset`` read
                                                                    by ``read_images`` (cells
                                                                    ``dataset:<id>#col[row]``
                                                                    point into it)
table row groups, files       ``visionkit.images.tables``           Parquet row groups and open
                                                                    files, for cells that point
                                                                    into a table
thumbnails                    ``visionkit.images.thumbnails``       the thumbnails ``show()``
                                                                    and the widgets made, by
                                                                    path and mtime
default clients               ``visionkit.query.client``            ``vk.connect()`` made once
                                                                    for calls without
                                                                    ``client=``
the shared offline server     ``visionkit.offline``                 the stand-in a key-less
                                                                    ``vk.connect()`` starts
replayed batch jobs           ``visionkit.batch.replayed``          ``BatchJob.load(id)`` finds
                                                                    a job replayed here
token tiers                   ``visionkit.costs``                   each provider's floor and
                                                                    cap, scanned once
providers                     ``visionkit.providers``               ``vk.register_provider``;
                                                                    not reset (the built-in
                                                                    profiles live there too)
Dask: keys, clients, links    ``visionkit.dask``                    a worker's copy of the key
                                                                    and storage options, its
                                                                    clients, its link to the
                                                                    coordinator
============================  ====================================  ===========================

Environment variables that change what ``vk.connect()`` gives (read at each call, never
stored): ``INFERENCE_API_KEY`` (inference.net, else the offline stand-in), ``VISIONKIT_RECORD``
and ``VISIONKIT_REPLAY`` (record answers to a folder, or replay them from one), ``CI``
(replays are strict: a row never recorded fails the call). ``vk.state()`` shows them, with a
key shown only as set or not.

Hooks: while visionkit decodes an image it routes Pillow's warnings and libtiff's C error
messages to that row's error text (``visionkit.images.pil_messages``): ``warnings.showwarning``
is wrapped and libtiff's error handler replaced for the duration of the decode only, and put
back when the last decode in flight ends, so nothing global stays installed between calls.
``vk.state()`` says whether they are installed at this moment.

How it is kept here: each module that holds state registers it (``register(name, describe,
reset)``) when it is imported, so this module imports none of them (and a module never
imported holds nothing and is not listed).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ENVIRONMENT", "StatePiece", "register", "reset_state", "state", "without_credentials"]

# The environment variables that change what vk.connect() gives; values of the *_KEY ones are
# never shown.
ENVIRONMENT = ("INFERENCE_API_KEY", "VISIONKIT_RECORD", "VISIONKIT_REPLAY", "CI")


@dataclass(frozen=True)
class StatePiece:
    """One piece of process-wide state: its name, the module keeping it, a function saying
    what it holds now (``(count, description)``) and one forgetting it (``None``: kept)."""

    name: str
    module: str
    describe: Callable[[], tuple[int, str]]
    reset: Callable[[], None] | None


_PIECES: dict[str, StatePiece] = {}
_LOCK = threading.Lock()


def register(
    name: str,
    module: str,
    describe: Callable[[], tuple[int, str]],
    reset: Callable[[], None] | None = None,
) -> None:
    """Called by a module holding process-wide state, once, when it is imported."""
    with _LOCK:
        _PIECES[name] = StatePiece(name, module, describe, reset)


def without_credentials(url: str) -> str:
    """``url`` with any ``user:password@`` removed, for showing it."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _environment() -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for name in ENVIRONMENT:
        value = os.environ.get(name)
        shown = (
            ("set" if value else "empty") if name.endswith("_KEY") and value is not None else value
        )
        rows.append(
            {
                "piece": f"${name}",
                "kept_by": "environment",
                "items": int(bool(value)),
                "holds": "unset" if value is None else shown,
                "resettable": False,
            }
        )
    return rows


def state() -> pd.DataFrame:
    """What visionkit keeps in this process now: one row per piece (``piece``, ``kept_by``,
    ``items``, ``holds``, ``resettable``), then the environment variables ``connect()`` reads.
    Secrets are never shown: storage options by their keys, the API key as set or not."""
    import pandas as pd

    with _LOCK:
        pieces = sorted(_PIECES.values(), key=lambda p: p.name)
    rows: list[dict[str, object]] = []
    for piece in pieces:
        count, text = piece.describe()
        rows.append(
            {
                "piece": piece.name,
                "kept_by": piece.module,
                "items": count,
                "holds": text,
                "resettable": piece.reset is not None,
            }
        )
    columns = ["piece", "kept_by", "items", "holds", "resettable"]
    return pd.DataFrame(rows + _environment(), columns=columns)


def reset_state() -> list[str]:
    """Forget everything ``state()`` lists as resettable (as a fresh kernel would hold it):
    storage options, filesystems, datasets, caches, default clients, the shared offline
    server (stopped), replayed jobs. Registered providers and the environment are kept.
    Returns the names of the pieces reset."""
    with _LOCK:
        pieces = sorted(_PIECES.values(), key=lambda p: p.name)
    done = []
    for piece in pieces:
        if piece.reset is not None:
            piece.reset()
            done.append(piece.name)
    return done
