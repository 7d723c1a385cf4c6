"""``visionkit batch submit|status|results``: batch jobs (inference.net's Batch API) from a shell.

Registered in ``visionkit.cli.app.COMMANDS`` (``add_batch_parser``):

    visionkit batch submit datasets/images/ "Describe this image." [--dry-run] [--wait --out FILE]
    visionkit batch status [JOB]                # every job, or one job's files and batches
    visionkit batch results JOB --out answers.csv [--wait]

A job is recorded in the manifest beside the answer cache (``--cache``), so ``status`` and
``results`` work from another shell or after a reboot; running the same ``submit`` again
continues the same job. Rows are labelled by their path, which ``--out`` keeps as a column.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .connection import add_connection_options, connect_from_args
from .shared import read_paths

__all__ = ["add_batch_parser"]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache", default=None, metavar="PATH", help="the answer cache (default: the user's)"
    )
    add_connection_options(parser, batch=True)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_batch_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "batch",
        help="batch jobs: submit every image as one cheap, unattended Batch API job",
        description="inference.net's Batch API: the requests are written to JSONL files, "
        "uploaded at the provider's pace, and answered within 24 hours; the answers go to the "
        "same cache as 'visionkit ask'.",
    )
    commands = parser.add_subparsers(dest="batch_command", metavar="ACTION", required=True)

    sub = commands.add_parser("submit", help="plan, write and upload a job")
    sub.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders or globs")
    sub.add_argument("prompt", metavar="PROMPT", help="the question asked about each image")
    _common(sub)
    sub.add_argument("--system", help="a system prompt")
    sub.add_argument("--max-side", type=int, metavar="PX", help="downscale images to this side")
    sub.add_argument("--max-file-bytes", type=int, metavar="N", help="bytes per input file")
    sub.add_argument("--max-requests-per-file", type=int, metavar="N")
    sub.add_argument("--upload-interval", type=float, metavar="S", help="seconds between uploads")
    sub.add_argument("--dry-run", action="store_true", help="plan only: files, bytes, tokens")
    sub.add_argument("--budget-tokens", type=int, metavar="N")
    sub.add_argument("--wait", action="store_true", help="wait for the results")
    sub.add_argument("--out", metavar="FILE", help="with --wait: results (.csv/.parquet/.jsonl)")
    sub.set_defaults(func=run_submit)

    status = commands.add_parser("status", help="the jobs, or one job's files and batches")
    status.add_argument("job", nargs="?", metavar="JOB")
    _common(status)
    status.set_defaults(func=run_status)

    results = commands.add_parser("results", help="write a job's results")
    results.add_argument("job", metavar="JOB")
    results.add_argument("--out", required=True, metavar="FILE", help=".csv, .parquet or .jsonl")
    results.add_argument("--wait", action="store_true", help="wait until every batch finished")
    _common(results)
    results.set_defaults(func=run_results)
    return parser


def _client(args: argparse.Namespace) -> Any:
    return connect_from_args(args)


def _cache(args: argparse.Namespace) -> Any:
    return args.cache or True


def _write(job: Any, out: str) -> int:
    from .ask import write_table

    table = job.result()
    path = write_table(table.rename_axis("path").reset_index(), out)
    usage = table.attrs["usage"]
    print(
        f"{usage['rows']} rows: {usage['answered']} answered by the job, {usage['cache_hits']} "
        f"from the cache, {usage['failed']} without an answer ({usage['status']}) -> {path}",
        file=sys.stderr,
    )
    return 1 if usage["failed"] else 0


def run_submit(args: argparse.Namespace) -> int:
    from ..batch.submit import submit

    images = read_paths(args.paths)
    images.index = images["path"]
    result = submit(
        images,
        args.prompt,
        client=None if args.dry_run and args.provider == "auto" else _client(args),
        model=args.model,
        image_column="path",
        system=args.system,
        cache=_cache(args),
        max_side=args.max_side,
        max_file_bytes=args.max_file_bytes,
        max_requests_per_file=args.max_requests_per_file,
        upload_interval=args.upload_interval,
        dry_run=args.dry_run,
        budget_tokens=args.budget_tokens,
        progress=not args.no_progress,
    )
    if args.dry_run:
        u = result.attrs["usage"]
        print(
            f"dry run: {u['requests']} requests in {u['files']} file(s) of {u['file_bytes']:,} "
            f"bytes, ~{u['estimated_tokens']:,} tokens; uploads take {u['upload_seconds']:.0f} s "
            f"at the provider's pace; {u['cache_hits']} cached, {u['failed']} would fail",
            file=sys.stderr,
        )
        return 0
    print(result.id)
    print(f"submitted {result!r}", file=sys.stderr)
    if args.wait:
        result.wait(progress=not args.no_progress)
        if args.out:
            return _write(result, args.out)
    return 0


def run_status(args: argparse.Namespace) -> int:
    from ..batch.job import BatchJob
    from ..batch.listing import batch_jobs

    if args.job is None:
        table = batch_jobs(_cache(args))
        print(table.to_string(index=False) if len(table) else "no batch jobs")
        return 0
    job = BatchJob.load(args.job, client=_client_for_job(args), cache=_cache(args)).refresh()
    print(f"{job.id}: {job.status}")
    print(job.batches.to_string(index=False))
    return 0


def _client_for_job(args: argparse.Namespace) -> Any:
    """A client from the flags when any was given, else the job's own (``BatchJob.load``)."""
    chosen = args.base_url or args.batch_base_url or args.provider != "auto" or args.api_key_env
    if chosen or args.record or args.replay:
        return _client(args)
    return None


def run_results(args: argparse.Namespace) -> int:
    from ..batch.job import BatchJob

    job = BatchJob.load(args.job, client=_client_for_job(args), cache=_cache(args))
    if args.wait:
        job.wait(progress=not args.no_progress)
    else:
        job.refresh()
    return _write(job, args.out)
