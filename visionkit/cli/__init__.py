"""The ``visionkit`` command line (``visionkit --help``); one module per subcommand."""

from __future__ import annotations

from .app import main

__all__ = ["main"]
