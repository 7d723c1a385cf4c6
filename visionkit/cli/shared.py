"""What subcommands share, so it is spelled the same everywhere: options, counts, key advice."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "KEY_ADVICE",
    "add_auto_provider_option",
    "add_model_options",
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


def add_auto_provider_option(parser: argparse.ArgumentParser) -> None:
    """``--provider NAME`` defaulting to ``auto``, for subcommands that connect (``connect``'s
    choice: inference.net with a key in the environment, else the offline stand-in)."""
    parser.add_argument(
        "--provider",
        default="auto",
        metavar="NAME",
        help="auto (inference.net if INFERENCE_API_KEY is set, else offline), or a profile name",
    )


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--model`` and ``--concurrency``, for subcommands that send requests."""
    parser.add_argument("--model", help="model name (default: the provider's default model)")
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


# The command line takes keys from the environment only: a key typed as an argument would be
# kept in the shell's history and shown by ps to every user of the machine.
KEY_ADVICE = (
    "export INFERENCE_API_KEY=... first (the command line reads keys from the environment "
    "only, never from an argument)"
)


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``count(1, "row")`` -> "1 row"; ``count(3, "row")`` -> "3 rows"."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"
