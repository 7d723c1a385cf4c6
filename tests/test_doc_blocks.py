"""Every code block in README.md and in the docs site (docs/**/*.md) runs as written.

Each ```python block runs on its own, in a fresh interpreter, from the repository root as a
reader who cloned it would run it, with no provider key (so ``vk.connect()`` is the offline
stand-in) and a throwaway answer cache. Afterwards the working tree must be as it was: examples
write under a scratch folder of their own, never into the repository. A block that cannot run
here (a real cluster, a real key) is preceded by ``<!-- not run: reason -->``.
README's first bash block, the main job, runs too, minus its venv and install steps.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(
    r"(<!-- not run: (?P<why>[^>]*?) -->\s*\n)?```(?P<lang>\w*)\n(?P<code>.*?)```", re.S
)
# An HTTP server's access log line, e.g. moto's werkzeug: "GET /photos/a.jpg HTTP/1.1" 200 -
ACCESS_LOG = re.compile(r'"(GET|HEAD|PUT|POST|DELETE) \S+ HTTP/1\.[01]" \d{3}')


def blocks(page: Path, lang: str) -> list[tuple[str, str, str | None]]:
    """``(page:line, code, why-not-run)`` for each ``lang`` block of ``page``."""
    text = page.read_text()
    name = page.relative_to(ROOT).as_posix()
    out = []
    for m in FENCE.finditer(text):
        if m.group("lang") == lang:
            line = text.count("\n", 0, m.start("code")) + 1
            out.append((f"{name}:{line}", m.group("code"), m.group("why")))
    return out


PYTHON_BLOCKS = [b for page in PAGES for b in blocks(page, "python")]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(
        VISIONKIT_CACHE_DIR=str(tmp_path / "cache"),
        MPLBACKEND="Agg",
        PYTHONPATH=str(ROOT),
        PYTHONWARNINGS="default",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def _run(
    command: str | list[str], cwd: Path, tmp_path: Path, shell: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in ``cwd`` as a reader would: no keys, a throwaway cache (``_env``),
    output captured for the failure message."""
    return subprocess.run(
        command,
        shell=shell,
        cwd=cwd,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )


def tree_state() -> set[str]:
    """What git sees in the working tree: changes, untracked and ignored files."""
    proc = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all", "--ignored"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return {line for line in proc.stdout.splitlines() if "__pycache__" not in line}


@pytest.mark.parametrize("where, code, why", PYTHON_BLOCKS, ids=[b[0] for b in PYTHON_BLOCKS])
def test_python_block_runs_as_written(where, code, why, tmp_path):
    if why:
        pytest.skip(f"not run: {why}")
    script = tmp_path / "block.py"
    script.write_text(code)
    before = tree_state()
    proc = _run([sys.executable, str(script)], ROOT, tmp_path)
    assert proc.returncode == 0, f"{where} failed:\n{proc.stderr[-3000:]}"
    left = sorted(tree_state() - before)
    assert not left, f"{where} wrote into the repository (use a scratch folder): {left}"
    floods = ACCESS_LOG.findall(proc.stdout + proc.stderr)
    assert not floods, f"{where} printed {len(floods)} HTTP access-log lines (silence the server)"


def test_blocks_not_run_say_why():
    skipped = [(where, why) for where, _, why in PYTHON_BLOCKS if why is not None]
    for where, why in skipped:
        assert len(why.strip()) > 10, f"{where}: say why the block cannot run here"
    assert len(skipped) <= 3, f"too many blocks are not run: {skipped}"


def test_every_guide_has_a_block_that_runs():
    """A guide without a runnable example teaches nothing the suite can check."""
    for page in sorted((ROOT / "docs" / "guides").glob("*.md")):
        runnable = [b for b in blocks(page, "python") if b[2] is None]
        assert runnable, f"{page.name} has no python block that runs"


def test_main_job_runs_offline_without_a_key(tmp_path):
    """README's first command, after its venv and install steps, on the bundled images."""
    first = blocks(ROOT / "README.md", "bash")[0][1].strip()
    steps = [s.strip() for s in first.split("&&")]
    assert steps[0].startswith("python3 -m venv") and "pip install" in steps[1]
    bindir = Path(sys.executable).parent
    if not (bindir / "visionkit").exists():
        pytest.skip("the visionkit script is not installed in this environment")
    work = tmp_path / "work"  # out/ is the reader's own folder: here a scratch copy of the root
    work.mkdir()
    (work / "datasets").symlink_to(ROOT / "datasets", target_is_directory=True)
    for step in steps[2:]:
        command = step.replace(".venv/bin/", f"{bindir}/")
        proc = _run(command, work, tmp_path, shell=True)
        assert proc.returncode == 0, f"{step!r} failed:\n{proc.stderr[-3000:]}"
    assert (work / "out" / "tokens.png").stat().st_size > 10_000
    answers = (work / "out" / "answers.csv").read_text()
    assert answers.count("\n") > 20 and "answer" in answers.splitlines()[0]
