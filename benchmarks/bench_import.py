"""Start-up cost: ``import visionkit`` and ``visionkit --help``, now vs before the reshape.

Run: ``python benchmarks/bench_import.py`` (``--repeat N``, default 15; ``--before REV``).

Issue 9 made ``visionkit/__init__`` a lazy facade: names load on first use, and ``df.vision``
is registered when pandas loads rather than by importing pandas. This measures what that
bought, side by side in one run: each command runs in a fresh interpreter (after one
warm-up run per side, which also writes the bytecode), alternating between this checkout and
the package as it was at ``--before`` (default: b08d84e, the last commit before the reshape;
checked out with ``git worktree`` into benchmarks/_data, which git ignores). Reports the
median wall time of each, the ratio, and which heavy libraries each one loaded. No time is
asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "benchmarks" / "_data"
BEFORE = "b08d84e"
HEAVY = ("pandas", "numpy", "PIL", "openai", "matplotlib", "httpx", "sqlite3")

IMPORT = "import visionkit"
HELP = (
    "import sys; sys.argv = ['visionkit', '--help']\n"
    "from visionkit.cli import main\n"
    "try:\n    main()\nexcept SystemExit:\n    pass"
)
# Appended to each snippet: which heavy libraries it loaded (costs the same on both sides).
PROBE = "\nimport json, sys\nprint(json.dumps([m for m in {heavy!r} if m in sys.modules]))"


def checkout(rev: str) -> Path:
    """The repository at ``rev`` in a worktree under benchmarks/_data (made once)."""
    where = DATA / f"before-{rev}"
    if not (where / "visionkit").exists():
        DATA.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), rev],
            check=True,
            capture_output=True,
        )
    return where


def run(code: str, root: Path) -> tuple[float, list[str]]:
    """Wall seconds of ``python -c code`` with ``root`` first on the path; heavy modules loaded."""
    # Bytecode is written (the warm-up run compiles each side once), as in real use.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(root)
    script = code + PROBE.format(heavy=HEAVY)
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=DATA,
        check=True,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - start
    return elapsed, json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--before", default=BEFORE, help="the revision to compare with")
    parser.add_argument("--quick", action="store_true", help="5 repeats")
    args = parser.parse_args(argv)
    repeat = 5 if args.quick else args.repeat
    before = checkout(args.before)
    print(f"start-up, median of {repeat} fresh interpreters each (alternating sides)")
    print(f"{'':26}{'now':>9}{'before':>9}{'ratio':>8}   heavy modules loaded now | before")
    for name, code in [("import visionkit", IMPORT), ("visionkit --help", HELP)]:
        now, then = [], []
        loaded_now: list[str] = []
        loaded_then: list[str] = []
        run(code, ROOT)  # warm the OS file cache for both sides
        run(code, before)
        for _ in range(repeat):
            t, loaded_now = run(code, ROOT)
            now.append(t)
            t, loaded_then = run(code, before)
            then.append(t)
        a, b = statistics.median(now), statistics.median(then)
        print(
            f"{name:26}{a * 1000:7.0f}ms{b * 1000:7.0f}ms{b / a:7.1f}x   "
            f"{', '.join(loaded_now) or '-'} | {', '.join(loaded_then) or '-'}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
