"""Re-execute the tutorial notebooks in place, offline, and store clean outputs.

    PYTHONPATH=$PWD .venv/bin/python notebooks/execute.py            # every notebook
    PYTHONPATH=$PWD .venv/bin/python notebooks/execute.py 01-getting-started.ipynb

CI compares these stored outputs with fresh ones (``pytest --nbval``), so commit what this
writes. It runs each notebook top to bottom in its own folder with the ``python3`` kernel of
this Python, with every provider key removed from the environment and a fresh answer cache, as
in CI (the tutorials must run offline; pass ``--live`` to keep keys and your cache, and do not
commit that run), records no timings, and applies ``sanitize.cfg`` to the stored text so
nothing machine-specific (temporary paths, memory addresses, progress-bar rates) is committed. Needs ``nbclient`` (comes with jupyter).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
KEY_VARIABLES = ("INFERENCE_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY")
CACHE_VARIABLE = "VISIONKIT_CACHE_DIR"


def sanitize_patterns(path: Path = HERE / "sanitize.cfg") -> list[tuple[re.Pattern, str]]:
    """The ``regex:``/``replace:`` pairs of nbval's sanitize file, in order."""
    pairs = re.findall(r"^regex: (.*)$\n^replace: (.*)$", path.read_text(), flags=re.MULTILINE)
    return [(re.compile(rx), rep) for rx, rep in pairs]


def _clean(text: str | list[str], patterns: list[tuple[re.Pattern, str]]) -> str:
    if isinstance(text, list):
        text = "".join(text)
    for rx, rep in patterns:
        text = rx.sub(rep, text)
    return text


def clean_outputs(nb: nbformat.NotebookNode) -> None:
    """Apply the sanitize patterns to stored plain text and drop timing metadata.

    HTML is stored as it is: nbval sanitizes both sides anyway, and the thumbnails' base64
    bytes must stay intact for the notebook to render.
    """
    patterns = sanitize_patterns()
    nb.metadata.pop("widgets", None)  # progress-bar widget state: model ids and timings
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        for output in cell.get("outputs", []):
            if "text" in output:
                output["text"] = _clean(output["text"], patterns)
            data = output.get("data", {})
            if "text/plain" in data:  # (not HTML: its thumbnails must still render on GitHub)
                data["text/plain"] = _clean(data["text/plain"], patterns)
    nb.metadata["kernelspec"] = {
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "name": "python3",
    }


def execute(path: Path, *, live: bool = False) -> None:
    nb = nbformat.read(path, as_version=4)
    saved = {}
    if not live:
        saved = {k: os.environ.pop(k) for k in KEY_VARIABLES if k in os.environ}
    # A fresh answer cache, as CI's (conftest.py): answers left in the user's cache by an
    # earlier run would show as cache hits in the stored outputs, and CI would see purchases.
    cache_dir = os.environ.get(CACHE_VARIABLE)
    fresh = None if live else tempfile.mkdtemp(prefix="visionkit-notebook-cache-")
    if fresh is not None:
        os.environ[CACHE_VARIABLE] = fresh
    try:
        client = NotebookClient(
            nb,
            timeout=600,
            kernel_name="python3",
            record_timing=False,
            resources={"metadata": {"path": str(path.parent)}},
        )
        client.execute()
    finally:
        os.environ.update(saved)
        if fresh is not None:
            shutil.rmtree(fresh, ignore_errors=True)
            if cache_dir is None:
                del os.environ[CACHE_VARIABLE]
            else:
                os.environ[CACHE_VARIABLE] = cache_dir
    clean_outputs(nb)
    nbformat.write(nb, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="notebook files (default: all)")
    parser.add_argument("--live", action="store_true", help="keep provider keys (do not commit)")
    args = parser.parse_args(argv)
    paths = [Path(p) for p in args.notebooks] or sorted(HERE.glob("[0-9]*.ipynb"))
    for path in paths:
        path = path if path.exists() else HERE / path
        print(f"executing {path.name}", flush=True)
        execute(path.resolve(), live=args.live)
    return 0


if __name__ == "__main__":
    sys.exit(main())
