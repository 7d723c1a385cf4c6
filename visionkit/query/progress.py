"""The run's progress bar (``tqdm.auto``) and whether we are inside IPython/Jupyter."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .outcome import Tally

__all__ = ["in_ipython", "progress_bar", "show_progress"]


def progress_bar(total: int, *, desc: str = "vision ask", enabled: bool = True) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="row", disable=not enabled, dynamic_ncols=True)


def show_progress(bar: Any, tally: Tally) -> None:
    """One more row done: move ``bar`` on, with cache hits, failures and tokens beside it."""
    postfix = {"cached": tally.cache_hits, "failed": tally.failed}
    if tally.not_run:
        postfix["not run"] = tally.not_run
    bar.set_postfix(
        postfix, tokens=f"{tally.prompt_tokens + tally.completion_tokens:,}", refresh=False
    )
    bar.update(1)


def in_ipython() -> bool:
    ipython = sys.modules.get("IPython")
    try:
        return ipython is not None and ipython.get_ipython() is not None
    except Exception:
        return False
