"""The ``visionkit`` command line: ``visionkit estimate datasets/images/ --plot out/tokens.png``.

Each subcommand is a module of this package with one ``add_NAME_parser(subparsers)`` function
that declares its arguments and sets ``func`` to a ``run_NAME(args) -> int`` function;
``COMMANDS`` lists them in help order. To add a subcommand, write the pair (heavy imports inside
``run_NAME``, so ``visionkit --help`` stays fast) and append ``add_NAME_parser`` to
``COMMANDS``. ``visionkit.cli.shared`` keeps shared options and wording the same everywhere.

Errors that are the user's (a missing file, an unknown provider) and every error of the
provider (the openai SDK's: a refused key, a 5xx, no connection; ``visionkit.cli.connection``)
print one line on stderr and exit with status 1, never a traceback and never a key;
``VISIONKIT_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from .. import __version__
from ..errors import VisionError
from .ask import add_ask_parser
from .batch import add_batch_parser
from .connection import provider_error_line
from .estimate import add_estimate_parser

__all__ = ["COMMANDS", "build_parser", "main"]

Subparsers = Any  # argparse._SubParsersAction, which argparse does not export

COMMANDS: list[Callable[[Subparsers], argparse.ArgumentParser]] = [
    add_estimate_parser,
    add_ask_parser,
    add_batch_parser,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="visionkit",
        description="Image sets for vision models: sizes, token estimates, encoding, queries.",
    )
    parser.add_argument("--version", action="version", version=f"visionkit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (``visionkit`` exits with it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        # One plain line per warning ("visionkit estimate: warning: no files match ..."), not
        # Python's file:line and source excerpt, which mean nothing to a shell user.
        warnings.showwarning = _plain_warning(args.command)
        return _run(args)


def _plain_warning(command: str) -> Callable[..., None]:
    def show(message: Warning | str, *_: Any, **__: Any) -> None:
        print(f"visionkit {command}: warning: {message}", file=sys.stderr)

    return show


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args) or 0)
    except (VisionError, KeyError, OSError, ValueError) as exc:
        if os.environ.get("VISIONKIT_DEBUG"):
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"visionkit {args.command}: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"visionkit {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        line = provider_error_line(exc, args)
        if line is None or os.environ.get("VISIONKIT_DEBUG"):
            raise
        print(f"visionkit {args.command}: error: {line}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
