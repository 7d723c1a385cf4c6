"""Everything visionkit keeps for the life of the process, in one place to look at and reset.

Usage:

    import visionkit as vk
    vk.state()          # what is held now: a table, one row per piece of state
    vk.reset_state()    # forget it all (as a fresh kernel would), e.g. between experiments

What is kept and why, the environment variables ``connect()`` reads and the hooks installed
while an image decodes are listed in docs/reference/state.md ("Process state"). Each module
that holds state registers it here (``register(name, module, describe, reset)``) when it is
imported, so this module imports none of them, and a module never imported holds nothing and
is not listed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ENVIRONMENT", "StatePiece", "register", "reset_state", "state"]

# The environment variables visionkit reads at each call: those that change what vk.connect()
# gives, and the byte cap on one image. Values of the *_KEY ones are never shown.
ENVIRONMENT = (
    "INFERENCE_API_KEY",
    "VISIONKIT_RECORD",
    "VISIONKIT_REPLAY",
    "CI",
    "VISIONKIT_MAX_IMAGE_BYTES",
)


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
    ``items``, ``holds``, ``resettable``), then the environment variables visionkit reads.
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
