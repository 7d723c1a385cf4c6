"""The widgets' front-end files: each ESM is ``_dom.js`` (the shared DOM helpers), then the
files named (``_keys.js`` for the annotators' keyboard, the widget's own file last), and each
stylesheet the CSS files named, in order."""

from __future__ import annotations

from pathlib import Path

__all__ = ["css", "esm"]

HERE = Path(__file__).parent


def esm(*names: str) -> str:
    """``_dom.js`` followed by ``names``: one module, as anywidget loads a single ESM (a string
    ``_esm`` is the module's source)."""
    return "\n".join((HERE / name).read_text() for name in ("_dom.js", *names))


def css(*names: str) -> str:
    """The stylesheets ``names``, one after the other."""
    return "\n".join((HERE / name).read_text() for name in names)
