"""The ``visionkit`` command line: ``visionkit estimate datasets/ --plot out/tokens.png``.

Each subcommand is one ``add_NAME_parser(subparsers)`` function that declares its arguments and
sets ``func`` to a ``run_NAME(args) -> int`` function; ``COMMANDS`` lists them in help order.
To add a subcommand, write the pair (heavy imports inside ``run_NAME``, so ``visionkit --help``
stays fast) and append ``add_NAME_parser`` to ``COMMANDS``. ``add_provider_option`` and
``add_model_options`` keep the shared options spelled the same everywhere.

Errors that are the user's (a missing file, an unknown provider) print one line on stderr and
exit with status 1, never a traceback; ``VISIONKIT_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .errors import VisionError

__all__ = ["COMMANDS", "add_estimate_parser", "build_parser", "main", "run_estimate"]

Subparsers = Any  # argparse._SubParsersAction, which argparse does not export


def add_provider_option(parser: argparse.ArgumentParser) -> None:
    """``--provider NAME``: any name in ``visionkit.providers`` (default inference.net)."""
    from .profiles import providers

    parser.add_argument(
        "--provider",
        default="inference.net",
        metavar="NAME",
        help=f"provider profile whose rules and token formula apply: {', '.join(providers)} "
        "(default: %(default)s)",
    )


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--model`` and ``--concurrency``, for subcommands that send requests."""
    parser.add_argument("--model", help="model name (default: the provider's default model)")
    parser.add_argument(
        "--concurrency", type=int, default=8, help="requests in flight (default: %(default)s)"
    )


# --- estimate ---------------------------------------------------------------------------------


def add_estimate_parser(subparsers: Subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "estimate",
        help="print each image's size and estimated tokens, with totals",
        description="Read image headers (no full decode), print each image's format, size and "
        "estimated tokens, and the total with what downscaling would save. Offline, no key.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders or globs")
    add_provider_option(parser)
    parser.add_argument("--plot", metavar="FILE", help="write the token plot to FILE (PNG, SVG..)")
    parser.add_argument("--csv", metavar="FILE", help="write the per-image table to FILE as CSV")
    parser.add_argument(
        "--resize-to",
        type=int,
        metavar="PX",
        help="price the saving at this longest side (default: the provider's floor, 560 px "
        "for inference.net)",
    )
    parser.add_argument(
        "--no-recursive", dest="recursive", action="store_false", help="do not enter subfolders"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print the totals only, not the table"
    )
    parser.set_defaults(func=run_estimate)
    return parser


def _display_paths(paths: Sequence[Any], roots: Sequence[str]) -> list[str]:
    """Paths relative to the folder they were found in (or the working directory), for reading."""
    bases = [Path(r).resolve() for r in roots if Path(r).is_dir()]
    bases.append(Path.cwd().resolve())
    out = []
    for p in paths:
        text = "" if p is None else str(p)
        if not text or "://" in text:
            out.append(text)
            continue
        resolved = Path(text).resolve()
        for base in bases:
            if resolved.is_relative_to(base):
                text = resolved.relative_to(base).as_posix()
                break
        out.append(text)
    return out


def _estimate_table(df: Any, provider: str, roots: Sequence[str]) -> Any:
    import pandas as pd

    from .profiles import estimate_tokens

    table = pd.DataFrame(
        {
            "path": _display_paths(df["path"].tolist(), roots),
            "format": df["format"],
            "width": pd.to_numeric(df["width"], errors="coerce").astype("Int64"),
            "height": pd.to_numeric(df["height"], errors="coerce").astype("Int64"),
        },
        index=df.index,
    )
    table["tokens"] = estimate_tokens(table["width"], table["height"], provider)
    table["error"] = df["error"]
    return table


def _print_table(table: Any) -> None:
    """Text left-aligned, numbers right-aligned, blanks for unknowns; one line per image."""
    import pandas as pd

    right = {"width", "height", "tokens"}

    def cell(col: str, value: Any) -> str:
        if value is None or pd.isna(value):
            return ""
        return f"{value:,}" if col == "tokens" else str(value)

    cells = {col: [cell(col, v) for v in table[col].tolist()] for col in table.columns}
    widths = {col: max([len(col), *map(len, values)]) for col, values in cells.items()}

    def line(values: dict[str, str]) -> str:
        parts = [
            values[c].rjust(widths[c]) if c in right else values[c].ljust(widths[c])
            for c in table.columns
        ]
        return "  ".join(parts).rstrip()

    print(line({c: c for c in table.columns}))
    for i in range(len(table)):
        print(line({c: cells[c][i] for c in table.columns}))


def _write_plot(df: Any, provider: str, path: Path, resize_to: Any) -> None:
    # A bare Figure (no pyplot): no GUI backend, nothing left open, safe in any process.
    from matplotlib.figure import Figure

    from .plots import plot_tokens

    fig = Figure(figsize=(7.2, 6.0), layout="constrained")
    plot_tokens(df, provider, resize_to=resize_to, ax=fig.add_subplot())
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)


def run_estimate(args: argparse.Namespace) -> int:
    from .imageinfo import read_images
    from .profiles import get_provider
    from .stats import token_summary

    provider = get_provider(args.provider).name
    source = args.paths[0] if len(args.paths) == 1 else list(args.paths)
    df = read_images(source, recursive=args.recursive)
    resize_to = "floor" if args.resize_to is None else args.resize_to
    table = _estimate_table(df, provider, args.paths)
    summary = token_summary(df, provider, resize_to=resize_to)
    if not args.quiet and len(table):
        _print_table(table)
        print()
    print(summary.describe() if len(table) else f"no images found in {' '.join(args.paths)}")
    if args.csv:
        out = Path(args.csv)
        out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(out, index=False)
        print(f"wrote {args.csv}")
    if args.plot:
        _write_plot(df, provider, Path(args.plot), resize_to)
        print(f"wrote {args.plot}")
    return 0 if summary.sized else 1


# --- the command line -------------------------------------------------------------------------

COMMANDS: list[Callable[[Subparsers], argparse.ArgumentParser]] = [add_estimate_parser]


def _register_ask() -> None:
    """The ``ask`` subcommand lives in ``visionkit.cli_ask`` (the ask module's owner)."""
    from .cli_ask import add_ask_parser

    COMMANDS.append(add_ask_parser)


_register_ask()


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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
