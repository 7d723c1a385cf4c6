"""Run every visionkit benchmark in turn, one after another (they share 2 cores badly).

    python benchmarks/run_all.py            # the full runs (about 10 minutes on 2 idle cores)
    python benchmarks/run_all.py --quick    # smaller runs, a smoke test of every benchmark

Each benchmark prints its own figures and ratios measured side by side in one run; nothing
here asserts a time. Run it on a quiet machine: load from other work skews wall-clock ratios
(the image benchmark also reports CPU-time ratios, which load skews less).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (script, arguments for a full run, arguments for --quick)
BENCHMARKS = [
    ("bench_images.py", [], ["--quick"]),
    ("bench_ask.py", [], ["--quick"]),
    ("bench_offline.py", [], ["--requests", "64", "--repeat", "1"]),
    ("bench_widgets.py", [], ["200"]),
    ("bench_agreement.py", [], ["20000"]),
    ("bench_batch.py", [], ["--quick"]),
    ("bench_dask.py", [], ["--quick"]),
    ("bench_import.py", [], ["--quick"]),
    ("bench_scale.py", [], ["--rows", "1000"]),
    ("bench_evaluate.py", [], ["--rows", "30"]),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (smoke test)")
    parser.add_argument("only", nargs="*", help="benchmark names to run (default: all)")
    args = parser.parse_args(argv)
    failed = []
    for script, full, quick in BENCHMARKS:
        if args.only and not any(name in script for name in args.only):
            continue
        print(f"\n=== {script} {' '.join(quick if args.quick else full)}", flush=True)
        start = time.perf_counter()
        cmd = [sys.executable, str(HERE / script), *(quick if args.quick else full)]
        code = subprocess.call(cmd)
        print(f"=== {script}: exit {code} after {time.perf_counter() - start:.0f} s", flush=True)
        if code:
            failed.append(script)
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
