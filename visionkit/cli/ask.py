"""``visionkit ask PATH... PROMPT --out results.csv``: a batch of vision queries from a shell.

Registered in ``visionkit.cli.app.COMMANDS`` (``add_ask_parser``). Resumable: answers go to the
same SQLite cache as ``df.vision.ask``, so running the same command again after a Ctrl-C, a
crash or a failed row sends only what is missing. The output format follows ``--out``'s
extension: ``.csv``, ``.parquet`` or ``.jsonl``.

    visionkit ask datasets/ "Describe this image in one sentence." --out out/answers.csv
    visionkit ask photos/ "Is this a {label}?" ...      # templates need a table, use Python
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

__all__ = ["add_ask_parser", "run_ask", "write_table"]

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
    parser.add_argument(
        "--provider",
        default="auto",
        metavar="NAME",
        help="auto (inference.net if INFERENCE_API_KEY is set, else offline), or a profile name",
    )
    parser.add_argument("--base-url", help="any OpenAI-compatible server (e.g. a local vLLM)")
    parser.add_argument("--model", help="model name (default: the provider's default model)")
    parser.add_argument(
        "--concurrency", type=int, default=8, help="requests in flight (default: %(default)s)"
    )
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


def write_table(table: Any, out: str | Path) -> Path:
    """Write ``table`` to ``out`` in the format its extension names."""
    path = Path(out)
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"--out {out!r}: use a .csv, .parquet or .jsonl file name")
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

    from ..images.read import read_images
    from ..query.ask import ask
    from ..query.client import OfflineWarning, connect, offline_notice

    paths = args.paths if len(args.paths) > 1 else args.paths[0]
    images = read_images(paths)
    if images.empty:
        raise ValueError(f"no images found in {', '.join(args.paths)}")
    schema = json.loads(Path(args.schema).read_text()) if args.schema else None
    cache: Any = False if args.no_cache else (args.cache or True)
    client = None
    if not args.dry_run or args.base_url or args.provider != "auto":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OfflineWarning)  # said below, as one plain line
            client = connect(args.provider, base_url=args.base_url, model=args.model)
        if args.provider == "auto" and client.provider.name == "offline":
            print(f"note: {offline_notice(client.base_url)}", file=sys.stderr)
    result = ask(
        images,
        args.prompt,
        client=client,
        model=args.model,
        column="path",
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
            f"dry run: {usage['requests']} requests to send, ~{usage['estimated_tokens']:,} "
            f"tokens, {usage['request_bytes']:,} bytes; {usage['cache_hits']} cached, "
            f"{usage['failed']} would fail -> {out}",
            file=sys.stderr,
        )
    else:
        print(
            f"{usage['rows']} rows: {usage['answered']} answered, {usage['cache_hits']} from "
            f"the cache, {usage['failed']} failed; {usage['prompt_tokens']:,} prompt + "
            f"{usage['completion_tokens']:,} completion tokens in {usage['elapsed_s']:.1f} s "
            f"-> {out}",
            file=sys.stderr,
        )
    return 1 if usage["failed"] else 0
