"""The run's progress bar (``tqdm.auto``) and whether we are inside IPython/Jupyter."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["in_ipython", "progress_bar"]


def progress_bar(total: int, *, desc: str = "vision ask", enabled: bool = True) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="row", disable=not enabled, dynamic_ncols=True)


def in_ipython() -> bool:
    ipython = sys.modules.get("IPython")
    try:
        return ipython is not None and ipython.get_ipython() is not None
    except Exception:
        return False
