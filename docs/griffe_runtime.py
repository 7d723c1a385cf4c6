"""A griffe extension for the API reference: some docstrings are finished at import time (``ask``
appends the parameter list it shares with ``submit``), so the source alone shows half of them.
For the functions of the modules named in ``modules``, the reference shows the docstring Python
sees at run time."""

from __future__ import annotations

import inspect
from typing import Any

import griffe


class RuntimeDocstrings(griffe.Extension):
    def __init__(self, modules: list[str]) -> None:
        super().__init__()
        self.modules = set(modules)

    def on_function(self, *, func: griffe.Function, **kwargs: Any) -> None:
        if func.parent is None or func.parent.path not in self.modules:
            return
        doc = inspect.getdoc(griffe.dynamic_import(func.path))
        old = func.docstring
        if doc and (old is None or doc != old.value):
            func.docstring = griffe.Docstring(
                doc,
                parent=func,
                parser=old.parser if old else None,
                parser_options=old.parser_options if old else None,
            )
