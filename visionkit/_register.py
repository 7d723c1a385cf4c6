"""Register ``df.vision`` as soon as pandas is imported, without importing pandas ourselves.

``import visionkit`` stays light (the command line's ``--help`` never loads pandas), yet
``df.vision`` works on any DataFrame in a process that imported visionkit: if pandas is already
loaded the accessor is registered at once; otherwise a one-shot import hook registers it the
moment ``import pandas`` finishes.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any

__all__ = ["register_accessor"]

_ACCESSOR = "visionkit.accessor"


def register_accessor() -> None:
    """Import ``visionkit.accessor`` now if pandas is loaded, else right after it loads."""
    if "pandas" in sys.modules:
        importlib.import_module(_ACCESSOR)
    elif not any(isinstance(f, _AfterPandas) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterPandas())


class _AfterPandas(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps pandas' own loader so the accessor follows pandas."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "pandas":
            return None
        sys.meta_path.remove(self)  # one shot: pandas is imported once
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader = spec.loader
        run_pandas = loader.exec_module

        def exec_module(module: Any) -> None:
            run_pandas(module)
            importlib.import_module(_ACCESSOR)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec
