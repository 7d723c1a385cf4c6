"""``visionkit estimate PATH...``: sizes and token estimates from image headers, offline."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .shared import add_provider_option

__all__ = ["add_estimate_parser", "run_estimate"]

Subparsers = Any  # argparse._SubParsersAction, which argparse does not export


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

    from ..providers import estimate_tokens

    table = pd.DataFrame(
        {
            "path": _display_paths(df["path"].tolist(), roots),
            "format": df["format"],
            "width": pd.to_numeric(df["width"], errors="coerce").astype("Int64"),
            "height": pd.to_numeric(df["height"], errors="coerce").astype("Int64"),
        },
        index=df.index,
    )
    table["tokens"] = estimate_tokens(table["width"], table["height"], provider=provider)
    table["error"] = df["error"]
    return table


def _print_table(table: Any) -> None:
    """Text left-aligned, numbers right-aligned, blanks for unknowns; one line per image.

    Kept rather than ``DataFrame.to_string``, which right-aligns text columns and prints
    ``<NA>`` for nullable integers whatever ``na_rep`` says (pandas 2.x and 3.0).
    """
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

    from ..plots import plot_tokens

    fig = Figure(figsize=(7.2, 6.0), layout="constrained")
    plot_tokens(df, provider, resize_to=resize_to, ax=fig.add_subplot())
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)


def run_estimate(args: argparse.Namespace) -> int:
    from ..costs import token_summary
    from ..images.read import read_images
    from ..providers import get_provider

    provider = get_provider(args.provider).name
    if args.csv and Path(args.csv).is_dir():
        raise ValueError(f"--csv {args.csv!r} is a folder; name a file")
    if args.plot and not Path(args.plot).suffix:
        raise ValueError(f"--plot {args.plot!r}: name an image file (.png, .svg, .pdf)")
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
        # The file keeps each path as read_images gives it (as given, or under the folder
        # given), like `visionkit ask --out`, so the two files join on `path`; only the
        # printed table shortens paths for reading.
        out = Path(args.csv)
        out.parent.mkdir(parents=True, exist_ok=True)
        table.assign(path=df["path"]).to_csv(out, index=False)
        print(f"wrote {args.csv}")
    if args.plot:
        _write_plot(df, provider, Path(args.plot), resize_to)
        print(f"wrote {args.plot}")
    return 0 if summary.sized else 1
