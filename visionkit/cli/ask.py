"""``visionkit ask PATH... PROMPT --out results.csv``: a batch of vision queries from a shell.

Registered in ``visionkit.cli.app.COMMANDS`` (``add_ask_parser``). Resumable: answers go to the
same SQLite cache as ``df.vision.ask``, so running the same command again after a Ctrl-C, a
crash or a failed row sends only what is missing. The output format follows ``--out``'s
extension: ``.csv``, ``.parquet`` or ``.jsonl``.

    visionkit ask datasets/images/ "Describe this image in one sentence." --out out/answers.csv
    visionkit ask photos/ "Is this a {label}?" ...      # templates need a table, use Python
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .connection import add_connection_options, connect_from_args
from .shared import add_concurrency_option, count, read_paths

__all__ = ["add_ask_parser", "check_arguments", "output_format", "run_ask", "write_table"]

FORMATS = {".csv": "csv", ".parquet": "parquet", ".jsonl": "jsonl", ".json": "jsonl"}


def add_ask_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "ask",
        help="ask a vision model about every image; answers to CSV, Parquet or JSONL",
        description="Send one request per image (checked against the provider's rules first), "
        "with a progress bar; every answer is cached as it arrives, so re-running the same "
        "command resumes. Without INFERENCE_API_KEY (and with --provider auto) it runs against "
        "the offline stand-in, whose answers describe pixels only.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders or globs")
    parser.add_argument("prompt", metavar="PROMPT", help="the question asked about each image")
    parser.add_argument(
        "--out", required=True, metavar="FILE", help="results file: .csv, .parquet or .jsonl"
    )
    add_connection_options(parser)
    add_concurrency_option(parser)
    parser.add_argument("--system", help="a system prompt")
    parser.add_argument("--schema", metavar="FILE", help="a JSON schema file for structured output")
    parser.add_argument("--max-side", type=int, metavar="PX", help="downscale images to this side")
    parser.add_argument("--max-retries", type=int, default=6, help="default: %(default)s")
    parser.add_argument("--timeout", type=float, default=60, help="seconds per request")
    parser.add_argument(
        "--cache",
        default=None,
        metavar="PATH",
        help="the SQLite answer cache (default: the user cache directory)",
    )
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    parser.add_argument(
        "--dry-run", action="store_true", help="no requests: estimate tokens and request sizes"
    )
    parser.add_argument(
        "--budget-tokens", type=int, metavar="N", help="refuse to start above this estimate"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_ask)
    return parser


def output_format(out: str | Path) -> str:
    """The format ``--out``'s extension names (raises ``ValueError`` for any other)."""
    kind = FORMATS.get(Path(out).suffix.lower())
    if kind is None:
        raise ValueError(f"--out {str(out)!r}: use a .csv, .parquet or .jsonl file name")
    return kind


def check_arguments(args: argparse.Namespace) -> dict[str, Any] | None:
    """Every argument checked before an image is read or a request sent (a wrong ``--out``
    found after a paid run costs the whole run); returns the parsed ``--schema``."""
    output_format(args.out)
    if args.out and Path(args.out).is_dir():
        raise ValueError(f"--out {args.out!r} is a folder; name a file")
    for name, value, low in [
        ("--concurrency", args.concurrency, 1),
        ("--max-retries", args.max_retries, 0),
        ("--max-side", args.max_side, 16),
        ("--budget-tokens", args.budget_tokens, 0),
    ]:
        if value is not None and value < low:
            raise ValueError(f"{name} must be at least {low}, not {value}")
    if args.timeout is not None and not args.timeout > 0:
        raise ValueError(f"--timeout must be a number of seconds above 0, not {args.timeout}")
    if args.no_cache and args.cache:
        raise ValueError("pass either --cache PATH or --no-cache, not both")
    if not args.schema:
        return None
    try:
        schema = json.loads(Path(args.schema).read_text())
    except OSError as exc:
        raise ValueError(f"--schema {args.schema!r}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"--schema {args.schema!r} is not valid JSON: {exc}") from None
    if not isinstance(schema, dict):
        raise ValueError(f"--schema {args.schema!r} must hold a JSON object (a JSON schema)")
    return schema


def write_table(table: Any, out: str | Path) -> Path:
    """Write ``table`` to ``out`` in the format its extension names."""
    path = Path(out)
    kind = output_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "csv":
        table.to_csv(path, index=False)
    elif kind == "parquet":
        table.to_parquet(path, index=False)
    else:
        table.to_json(path, orient="records", lines=True, force_ascii=False)
    return path


def run_ask(args: argparse.Namespace) -> int:
    import pandas as pd

    from ..query.ask import ask

    schema = check_arguments(args)
    images = read_paths(args.paths)
    cache: Any = False if args.no_cache else (args.cache or True)
    client = None
    chosen = args.base_url or args.provider != "auto" or args.api_key_env
    if not args.dry_run or chosen or args.record or args.replay:
        client = connect_from_args(args)
    result = ask(
        images,
        args.prompt,
        client=client,
        model=args.model,
        image_column="path",
        system=args.system,
        schema=schema,
        concurrency=args.concurrency,
        max_retries=args.max_retries,
        timeout=args.timeout,
        cache=cache,
        dry_run=args.dry_run,
        budget_tokens=args.budget_tokens,
        progress=not args.no_progress,
        max_side=args.max_side,
    )
    table = pd.concat([images[["path"]], result], axis=1)
    out = write_table(table, args.out)
    usage = result.attrs["usage"]
    if args.dry_run:
        print(
            f"dry run: {count(usage['requests'], 'request')} to send, "
            f"~{usage['estimated_tokens']:,} tokens, {usage['request_bytes']:,} bytes; "
            f"{usage['cache_hits']} cached, {usage['failed']} would fail -> {out}",
            file=sys.stderr,
        )
    else:
        print(
            f"{count(usage['rows'], 'row')}: {usage['answered']} answered, "
            f"{usage['cache_hits']} from the cache, {usage['failed']} failed; "
            f"{usage['prompt_tokens']:,} prompt + {usage['completion_tokens']:,} completion "
            f"tokens in {usage['elapsed_s']:.1f} s -> {out}",
            file=sys.stderr,
        )
    return 1 if usage["failed"] else 0
