"""Options shared by subcommands, so they are spelled the same everywhere."""

from __future__ import annotations

import argparse

__all__ = ["add_model_options", "add_provider_option"]


def add_provider_option(parser: argparse.ArgumentParser) -> None:
    """``--provider NAME``: any name in ``visionkit.providers`` (default inference.net)."""
    from ..providers import providers

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
