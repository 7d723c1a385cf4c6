"""What subcommands share, so it is spelled the same everywhere: options, counts, key advice."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "add_concurrency_option",
    "add_provider_option",
    "count",
    "read_paths",
]


def add_provider_option(parser: argparse.ArgumentParser) -> None:
    """``--provider NAME``: any name in ``visionkit.providers`` (default inference.net)."""
    from ..providers import DEFAULT_PROVIDER, providers

    parser.add_argument(
        "--provider",
        default=DEFAULT_PROVIDER,
        metavar="NAME",
        help=f"provider profile whose rules and token formula apply: {', '.join(providers)} "
        "(default: %(default)s)",
    )


def add_concurrency_option(parser: argparse.ArgumentParser) -> None:
    """``--concurrency``, for subcommands that send requests."""
    parser.add_argument(
        "--concurrency", type=int, default=8, help="requests in flight (default: %(default)s)"
    )


def read_paths(paths: list[str]) -> pd.DataFrame:
    """``read_images`` over the PATH arguments (files, folders or globs); ``ValueError`` when
    they hold no image, before anything is planned or sent."""
    from ..images.read import read_images

    images = read_images(paths if len(paths) > 1 else paths[0])
    if images.empty:
        raise ValueError(f"no images found in {', '.join(paths)}")
    return images


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``count(1, "row")`` -> "1 row"; ``count(3, "row")`` -> "3 rows"."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"
