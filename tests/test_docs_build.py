"""The documentation site builds in strict mode, offline, and covers what it promises.

``mkdocs build --strict`` fails on a broken link, a missing anchor, a reference mkdocstrings
cannot resolve or a page left out of the nav. The build runs once per session into a temporary
folder, with every proxy variable pointing at a closed port, so a build step that reaches for
the network (web fonts, a CDN) fails here instead of hanging on a machine without one.
"""

from __future__ import annotations

import html
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import visionkit

ROOT = Path(__file__).resolve().parents[1]
USER_DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    closed = "http://127.0.0.1:9"  # the discard port: nothing listens, a fetch fails at once
    env = {
        **os.environ,
        "HTTP_PROXY": closed,
        "HTTPS_PROXY": closed,
        "http_proxy": closed,
        "https_proxy": closed,
        "NO_PROXY": "",
        "no_proxy": "",
        "NO_MKDOCS_2_WARNING": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", "mkdocs.yml", "-d", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stderr[-5000:]}"
    assert "WARNING" not in proc.stderr, proc.stderr[-5000:]
    return out


def _reference_ids(site: Path) -> set[str]:
    ids: set[str] = set()
    for page in (site / "reference").rglob("*.html"):
        ids |= set(re.findall(r'id="([\w.]+)"', page.read_text()))
    return ids


def test_every_public_name_is_in_the_reference(site):
    ids = _reference_ids(site)
    missing = [name for name in visionkit.__all__ if f"visionkit.{name}" not in ids]
    assert not missing, f"not in the API reference: {missing}"


def test_every_df_vision_method_is_in_the_reference(site):
    ids = _reference_ids(site)
    methods = [
        name
        for name, _ in inspect.getmembers(visionkit.VisionAccessor, inspect.isfunction)
        if not name.startswith("_")
    ]
    assert methods
    missing = [m for m in methods if f"visionkit.VisionAccessor.{m}" not in ids]
    assert not missing, f"df.vision methods not in the API reference: {missing}"


def test_every_dask_name_and_ddf_vision_method_is_in_the_reference(site):
    import visionkit.dask

    ids = _reference_ids(site)
    missing = [n for n in visionkit.dask.__all__ if f"visionkit.dask.{n}" not in ids]
    accessor = visionkit.dask.DaskVisionAccessor
    methods = [
        n for n, _ in inspect.getmembers(accessor, inspect.isfunction) if not n.startswith("_")
    ]
    missing += [m for m in methods if f"visionkit.dask.DaskVisionAccessor.{m}" not in ids]
    assert not missing, f"not in the API reference: {missing}"


def _modules_with_all():
    """The public modules whose every ``__all__`` name the reference documents."""
    import visionkit.costs
    import visionkit.dask
    import visionkit.evaluation
    import visionkit.offline
    import visionkit.tokens

    return [
        visionkit,
        visionkit.costs,
        visionkit.dask,
        visionkit.evaluation,
        visionkit.offline,
        visionkit.tokens,
    ]


def _documented(ids: set[str], module: str, name: str) -> bool:
    """``visionkit.evaluation.Choice`` may be documented under that path or as ``vk.Choice``."""
    return f"{module}.{name}" in ids or f"visionkit.{name}" in ids


def test_every_name_of_the_public_modules_is_in_the_reference(site):
    """vk.*, visionkit.offline, visionkit.evaluation, visionkit.costs, visionkit.tokens and
    visionkit.dask: every name each lists in ``__all__``."""
    ids = _reference_ids(site)
    missing = [
        f"{m.__name__}.{name}"
        for m in _modules_with_all()
        for name in m.__all__
        if not _documented(ids, m.__name__, name)
    ]
    assert not missing, f"not in the API reference: {missing}"


def test_every_public_method_of_a_public_class_is_in_the_reference(site):
    """Methods and properties a class defines (``Job.wait``, ``Evaluation.best``,
    ``OfflineServer.inject``...), each under its class's documented path."""
    ids = _reference_ids(site)
    missing, seen = [], 0
    for module in _modules_with_all():
        for name in module.__all__:
            cls = getattr(module, name)
            if not inspect.isclass(cls) or issubclass(cls, BaseException):
                continue
            path = (
                f"visionkit.{name}" if f"visionkit.{name}" in ids else f"{module.__name__}.{name}"
            )
            for member, value in vars(cls).items():
                if member.startswith("_") or not (
                    inspect.isfunction(value) or isinstance(value, property | classmethod)
                ):
                    continue
                seen += 1
                if f"{path}.{member}" not in ids:
                    missing.append(f"{path}.{member}")
    assert seen > 100
    assert not missing, f"methods not in the API reference: {missing}"


def test_tutorials_are_rendered_with_their_stored_outputs(site):
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert len(notebooks) >= 9
    for notebook in notebooks:
        page = site / "notebooks" / notebook.stem / "index.html"
        assert page.exists(), f"{notebook.name} is not rendered"
        html = page.read_text()
        assert "jp-OutputArea" in html, f"{notebook.name} is rendered without its outputs"


def test_the_site_fetches_nothing_from_the_web(site):
    """No web fonts or CDN scripts: the site reads the same offline."""
    for page in site.rglob("*.html"):
        html = page.read_text()
        for host in ("fonts.googleapis.com", "fonts.gstatic.com"):
            assert host not in html, f"{page.relative_to(site)} loads {host}"


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in sorted((ROOT / "docs").rglob("*.md")):
        rel = page.relative_to(ROOT / "docs").as_posix()
        assert rel in nav, f"docs/{rel} is not in mkdocs.yml's nav"


def test_quick_start_runs_the_readme_main_job():
    fence = re.compile(r"```bash\n(.*?)```", re.S)
    readme = fence.findall((ROOT / "README.md").read_text())[0]
    quick = fence.findall((ROOT / "docs" / "quickstart.md").read_text())[0]
    assert quick == readme


def test_quick_start_points_to_every_guide():
    """ "What to do next" leads a newcomer to every capability's guide."""
    text = (ROOT / "docs" / "quickstart.md").read_text()
    after = text[text.index("## What to do next") :]
    missing = [
        page.name
        for page in sorted((ROOT / "docs" / "guides").glob("*.md"))
        if f"(guides/{page.name}" not in after
    ]
    assert not missing, f"the quick start's next steps do not link {missing}"


def test_installation_lists_every_extra():
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    page = (ROOT / "docs" / "installation.md").read_text()
    for extra in extras:
        assert f"| `{extra}` |" in page, f"the installation table lacks the {extra} extra"
        assert f"pip install -e '.[{extra}]'" in page
    listed = set(re.findall(r"^\| `([\w-]+)` \|", page, re.M))
    assert listed == set(extras), f"the table lists extras pyproject lacks: {listed - set(extras)}"
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Installation") : readme.index("## A short tour")]
    named = set(re.findall(r"`([\w-]+)`", table))
    assert set(extras) <= named, f"README's extras table lacks {set(extras) - named}"


# What user documentation must not carry: machine load beside a figure, issue numbers and
# commit hashes (they mean nothing to a reader and go stale).
FORBIDDEN = {
    "a load average": re.compile(r"\bload(?: average| avg)?s? (?:of )?\d|\bloadavg\b", re.I),
    "an issue number": re.compile(r"\bissues? #?\d+|(?<![\w&])#\d{2,}\b", re.I),
    "a commit hash": re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b"),
}


@pytest.mark.parametrize("page", USER_DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_user_docs_carry_no_load_averages_issue_numbers_or_hashes(page):
    text = page.read_text()
    for what, pattern in FORBIDDEN.items():
        found = [m.group(0) for m in pattern.finditer(text)]
        assert not found, f"{page.relative_to(ROOT)} quotes {what}: {found[:5]}"


@pytest.mark.parametrize(
    "notebook", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name
)
def test_tutorials_carry_no_load_averages_issue_numbers_or_hashes(notebook):
    """The tutorials' text and code, as the docs render them (outputs hold data: a dataset's
    fingerprint looks like a hash)."""
    import json

    cells = json.loads(notebook.read_text())["cells"]
    text = "\n".join("".join(cell["source"]) for cell in cells)
    for what, pattern in FORBIDDEN.items():
        found = [m.group(0) for m in pattern.finditer(text)]
        assert not found, f"{notebook.name} quotes {what}: {found[:5]}"


def test_the_forbidden_patterns_catch_what_they_name():
    samples = {
        "a load average": "took 1.2 s at a load average of 3.5",
        "an issue number": "fixed in issue 18, see #21",
        "a commit hash": "measured against b08d84e",
    }
    for what, sample in samples.items():
        assert FORBIDDEN[what].search(sample), what
    harmless = "1,601 tokens; a 200 MB cap; cafe; 1120 px; facade"
    assert not any(p.search(harmless) for p in FORBIDDEN.values())


def test_the_reference_shows_docstrings_finished_at_import(site):
    """``ask``'s parameter list is appended to its docstring at import time (shared with
    ``submit``); the source alone lacks it, so docs/griffe_runtime.py puts it back."""
    text = " ".join(
        html.unescape(re.sub(r"<[^>]+>", " ", page.read_text()))
        for page in (site / "reference").rglob("*.html")
    )
    text = re.sub(r"\s+", " ", text)
    for function in (visionkit.ask, visionkit.ask_async):
        doc = inspect.getdoc(function) or ""
        assert "budget_tokens" in doc
        last = [line for line in doc.splitlines() if line.strip()][-1]
        assert re.sub(r"[`*]", "", last).strip() in text, f"{function.__name__}: {last!r}"


def test_readme_links_into_the_docs_resolve():
    """README.md is read on its own (on a forge, in an editor): its links are relative paths."""
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [t for t in targets if "://" not in t]
    assert any(t.startswith("docs/") for t in local)
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README links to missing files: {missing}"


def _page_text(page: Path) -> str:
    """A built page's visible text: no scripts, styles or tags."""
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", page.read_text(), flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", text))


def test_the_rendered_reference_shows_no_rst_and_no_machine_details(site):
    """The API reference is user documentation too: the docstrings it renders carry no
    reStructuredText (tests/test_docstrings.py checks the sources) and none of FORBIDDEN."""
    from test_docstrings import rst_markup

    pages = sorted((site / "reference").rglob("*.html"))
    assert len(pages) >= 10
    found = []
    for page in pages:
        text = _page_text(page)
        found += [f"{page.parent.name}: {hit}" for hit in rst_markup(text)]
        for what, pattern in FORBIDDEN.items():
            found += [f"{page.parent.name}: {what} {m.group(0)!r}" for m in pattern.finditer(text)]
    assert not found, "\n".join(found)


NUMBERS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
]


@pytest.mark.parametrize("page", USER_DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_docs_count_the_tutorials_right(page):
    """ "Nine notebooks" went stale when the tenth came: every count of them is checked."""
    count = len(list((ROOT / "notebooks").glob("*.ipynb")))
    words = "|".join(NUMBERS)
    said = re.findall(rf"\b({words}|\d+) (?:tutorial )?notebooks\b", page.read_text(), re.I)
    wrong = [s for s in said if (int(s) if s.isdigit() else NUMBERS.index(s.lower())) != count]
    assert not wrong, f"{page.relative_to(ROOT)} says {wrong} notebooks; there are {count}"


def test_readme_is_a_short_front_door():
    """At most ~250 lines: what visionkit is, the two commands first (the test command saying
    how long it takes and what the browser tests need), installation, a tour, the tutorials
    and the way into the docs."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    headings = re.findall(r"^## (.+)$", readme, re.M)
    assert headings[0] == "Two commands", headings
    for section in ("Installation", "A short tour", "Tutorials", "Documentation"):
        assert section in headings, f"README has no {section} section"
    commands = readme[readme.index("## Two commands") : readme.index(f"## {headings[1]}")]
    assert re.search(r"\d+ to \d+ minutes", commands), "say how long the tests take"
    assert "Chromium" in commands and "apt-get install chromium" in commands
