"""The widgets' front-end files: each ESM is its own file plus the shared keyboard code."""

from __future__ import annotations

from pathlib import Path

__all__ = ["esm"]

HERE = Path(__file__).parent


def esm(name: str) -> str:
    """``_keys.js`` followed by ``name``: one module, as anywidget loads a single ESM."""
    return (HERE / "_keys.js").read_text() + "\n" + (HERE / name).read_text()
