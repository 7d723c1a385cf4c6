"""The tutorial notebooks are committed executed, clean and complete.

nbval (configured in pyproject.toml) re-runs them and compares outputs; these checks cover what
nbval cannot: that outputs were committed at all, that none is an error, that nothing
machine-specific or secret was committed, and that the notebooks teach the public API.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import visionkit as vk

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
REQUIRED = {
    "01-getting-started.ipynb",
    "02-batched-queries.ipynb",
    "03-structured-answers.ipynb",
    "04-annotating.ipynb",
    "05-token-budgets.ipynb",
    "06-annotating-as-a-team.ipynb",
}

ABSOLUTE_PATH = re.compile(r"(?<![\w.])(/work|/home|/tmp|/root|/Users|/var/folders)/|[A-Z]:\\\\")
KEY_LIKE = re.compile(
    r"sk-[A-Za-z0-9_-]{16,}"  # OpenAI/Anthropic-style secret keys
    r"|Bearer\s+[A-Za-z0-9._~+/-]{16,}"  # an Authorization header
    r"|(?:API_KEY|api_key)\s*[=:]\s*['\"][^'\"]{8,}['\"]"  # a key assigned literally
    r"|eyJ[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{20,}"  # a JWT
)
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")

# Public names a tutorial need not spell out (exception classes, modules, the accessor class).
NOT_TAUGHT = {
    # the exception and warning classes (visionkit/errors.py's docstring lists them)
    "BatchWarning",
    "CacheError",
    "CacheWarning",
    "EncodeWarning",
    "ReadImagesWarning",
    "ReplayError",
    "ReplayWarning",
    "BudgetExceeded",
    "ImageError",
    "MissingAPIKey",
    "RequestError",
    "RowError",
    "VisionAccessor",
    "VisionError",
    "Provider",
    "Price",  # what set_price makes; notebook 10 sets prices
    "inspect_images",
    "Client",  # what connect() returns; 02-batched-queries shows one
    "register_provider",
    "stats",
    "tokens",
}
# Public names whose tutorial waits for another feature to land (remove them as it does).
PENDING: set[str] = set()


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def _output_texts(nb: dict):
    for cell in _code_cells(nb):
        for out in cell.get("outputs", []):
            if "text" in out:
                yield _text(out["text"])
            for mime, value in out.get("data", {}).items():
                if mime.startswith("text/") or mime.endswith("json"):
                    yield _text(value) if isinstance(value, str | list) else json.dumps(value)
            if "traceback" in out:
                yield "\n".join(out["traceback"])


def test_the_tutorials_exist():
    assert {p.name for p in NOTEBOOKS} >= REQUIRED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_with_outputs_run_top_to_bottom(path):
    nb = _load(path)
    cells = _code_cells(nb)
    assert cells, "a tutorial without code"
    counts = [c["execution_count"] for c in cells]
    assert None not in counts, (
        f"{path.name}: cells {[i for i, n in enumerate(counts) if n is None]} were not run"
    )
    assert counts == list(range(1, len(cells) + 1)), f"{path.name}: not run top to bottom once"
    assert sum(len(c["outputs"]) for c in cells) >= len(cells) // 2, "outputs were stripped"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_error_outputs(path):
    for i, cell in enumerate(_code_cells(_load(path))):
        for out in cell["outputs"]:
            assert out["output_type"] != "error", f"{path.name} cell {i}: {out.get('ename')}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_absolute_paths_timings_or_secrets(path):
    nb = _load(path)
    sources = ["".join(c["source"]) for c in nb["cells"]]
    for text in [*sources, *_output_texts(nb)]:
        assert not ABSOLUTE_PATH.search(text), f"{path.name}: absolute path in {text[:200]!r}"
        assert not KEY_LIKE.search(text), f"{path.name}: something key-like was committed"
    assert "widgets" not in nb["metadata"], f"{path.name}: widget state (ids, timings) committed"
    for cell in nb["cells"]:
        assert "execution" not in cell.get("metadata", {}), f"{path.name}: timing metadata"
    assert not TIMESTAMP.search(json.dumps([c.get("metadata") for c in nb["cells"]]))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_kernel_is_plain_python3_and_imports_visionkit_as_vk(path):
    nb = _load(path)
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    sources = "\n".join("".join(c["source"]) for c in _code_cells(nb))
    assert "import visionkit as vk" in sources


def test_the_tutorials_teach_every_public_name():
    sources = "\n".join("".join(c["source"]) for p in NOTEBOOKS for c in _code_cells(_load(p)))
    untaught = [
        name
        for name in vk.__all__
        if name not in NOT_TAUGHT | PENDING and not re.search(rf"\b{re.escape(name)}\b", sources)
    ]
    assert not untaught, f"no tutorial uses {untaught}: teach them in notebooks/"


def test_sanitize_file_is_valid_and_used_by_pytest():
    cfg = (ROOT / "notebooks" / "sanitize.cfg").read_text()
    pairs = re.findall(r"^regex: (.*)$\n^replace: (.*)$", cfg, flags=re.MULTILINE)
    assert pairs
    for rx, _ in pairs:
        re.compile(rx)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert "--nbval-sanitize-with notebooks/sanitize.cfg" in pyproject
    assert re.search(r'testpaths = \[[^\]]*"notebooks"', pyproject)
