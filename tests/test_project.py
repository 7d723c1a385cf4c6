"""The project's promises: dependency lists agree, ruff is set up, README leads with commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the test is skipped on 3.10

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower()


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _conda_packages() -> dict[str, str]:
    """Package -> spec from environment.yml: its conda list and, for packages conda-forge
    lacks, its pip section (python, pip and the editable install excluded)."""
    out = {}
    text = (ROOT / "environment.yml").read_text()
    for line in text.split("dependencies:", 1)[1].splitlines():
        m = re.match(r"^(?:  |      )- ([A-Za-z0-9_.\-]+)(.*)$", line)
        if m and m.group(1) not in ("python", "pip") and not m.group(1).startswith("-"):
            out[m.group(1).lower()] = m.group(1) + m.group(2).strip()
    return out


# conda has no pip extras: a ``pkg[extra]`` requirement is the package (with the same bound)
# plus the conda packages its extra pulls in, listed here.
CONDA_FOR_PIP_EXTRAS = {
    "openai[aiohttp]": {"aiohttp"},
    "moto[server]": {"flask", "flask-cors"},
    "dask[dataframe]": {"pandas", "pyarrow"},
    "mkdocstrings[python]": {"mkdocstrings-python"},
}


def _spec(requirement: str) -> str:
    return re.sub(r"\[[^\]]*\]", "", requirement.replace(" ", ""))


def test_environment_yml_lists_the_same_packages_as_pyproject():
    project = _pyproject()["project"]
    wanted = {_name(r): _spec(r) for r in project["dependencies"]}
    extras_pulled: set[str] = set()
    for extra in project["optional-dependencies"].values():
        wanted.update({_name(r): _spec(r) for r in extra})
        for r in extra:
            m = re.match(r"[A-Za-z0-9_.\-]+\[[^\]]*\]", r.strip())
            if m:
                assert m.group(0) in CONDA_FOR_PIP_EXTRAS, f"say what {m.group(0)} is in conda"
                extras_pulled |= CONDA_FOR_PIP_EXTRAS[m.group(0)]
    conda = _conda_packages()
    for name in extras_pulled:
        assert name in conda, f"environment.yml lacks {name} (pulled by a pip extra)"
        wanted.setdefault(name, conda[name])
    assert sorted(conda) == sorted(wanted)
    for name, spec in wanted.items():
        assert conda[name].replace(" ", "") == spec, f"{name}: {conda[name]} vs {spec}"


def test_core_dependencies_are_the_mission_list():
    project = _pyproject()["project"]
    core = {_name(r) for r in project["dependencies"]}
    assert {"openai", "pillow", "ipywidgets", "matplotlib", "pandas"} <= core
    # Test tools are not run-time dependencies of a plain `pip install visionkit` (issue 8).
    dev = {_name(r) for r in project["optional-dependencies"]["dev"]}
    assert {"nbval", "pytest", "ruff", "mypy"} <= dev
    assert not {"nbval", "pytest", "ruff", "mypy", "playwright", "jupyterlab"} & core


def test_a_package_has_one_bound_everywhere():
    """pyproject said openai>=1.40 in the core and >=3.19 in the aiohttp extra (issue 8)."""
    project = _pyproject()["project"]
    seen: dict[str, str] = {}
    for requirement in [
        *project["dependencies"],
        *(r for extra in project["optional-dependencies"].values() for r in extra),
    ]:
        name, spec = (
            _name(requirement),
            re.sub(r"^[A-Za-z0-9_.\-]+(\[[^\]]*\])?", "", _spec(requirement)),
        )
        assert seen.setdefault(name, spec) == spec, f"{name}: {seen[name]} vs {spec}"


def test_ruff_is_configured():
    assert "ruff" in _pyproject()["tool"]


def test_readme_leads_with_the_commands_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", readme, flags=re.S)
    assert len(blocks) >= 2, "README must lead with two command blocks"
    test_command = blocks[1].strip()
    last = [line for line in ci.splitlines() if line.strip()][-1]
    assert last == test_command, ".ci/run's last line must be README's test command, verbatim"


def test_ci_runs_lint_format_and_types_as_steps_before_the_tests():
    """ruff check, ruff format --check and mypy are commands of their own in .ci/run (under
    ``set -e``, so each failure stops CI), after the venv that brings them and before README's
    test command, which stays the last line."""
    readme = (ROOT / "README.md").read_text()
    test_command = re.findall(r"```(?:bash|sh)\n(.*?)```", readme, flags=re.S)[1].strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "set -euo pipefail" in ci
    lines = [ln.strip() for ln in ci.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines[-1] == test_command, ".ci/run must end with README's test command"
    steps = [".venv/bin/ruff check .", ".venv/bin/ruff format --check .", ".venv/bin/mypy"]
    at = [lines.index(step) for step in steps]  # ValueError: a step is missing
    venv = next(i for i, ln in enumerate(lines) if ln.startswith("python3 -m venv .venv"))
    assert venv < min(at) and max(at) < len(lines) - 1
    assert _pyproject()["tool"]["mypy"]["packages"] == ["visionkit"]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed_closure(requirements: list[str]) -> set[str]:
    """Every distribution that installing ``requirements`` brings (extras and markers
    evaluated), read from the installed packages' metadata."""
    from importlib import metadata

    from packaging.requirements import Requirement

    seen: set[tuple[str, str]] = set()
    todo = [(Requirement(r), "") for r in requirements]
    names: set[str] = set()
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = _canonical(req.name)
        for wanted in ["", *sorted(req.extras)]:
            if (name, wanted) in seen:
                continue
            seen.add((name, wanted))
            names.add(name)
            todo += [(Requirement(r), wanted) for r in metadata.requires(req.name) or []]
    return names


def _notebook_imports() -> set[str]:
    """The top-level modules the tutorial notebooks import."""
    import ast
    import json

    modules: set[str] = set()
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(notebook.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            source = "".join(cell["source"])
            lines = source.splitlines()
            code = "\n".join(line for line in lines if not line.startswith(("%", "!")))
            for node in ast.walk(ast.parse(code)):
                if isinstance(node, ast.Import):
                    modules |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules.add(node.module.split(".")[0])
    return modules


def test_the_tutorials_extra_brings_what_the_notebooks_import():
    """`pip install -e '.[tutorials]'` then `jupyter lab notebooks/` must work: every module a
    notebook imports comes with the core or the tutorials extra (or with what they pull in)."""
    import sys
    from importlib import metadata

    project = _pyproject()["project"]
    extra = project["optional-dependencies"]["tutorials"]
    brought = _installed_closure([*project["dependencies"], *extra])
    assert {"jupyterlab", "ipykernel"} <= brought
    providers = metadata.packages_distributions()
    imports = _notebook_imports() - set(sys.stdlib_module_names) - {"visionkit"}
    assert {"pandas", "moto", "distributed"} <= imports  # the parser sees the notebooks' imports
    missing = {
        module: providers.get(module)
        for module in sorted(imports)
        if not {_canonical(d) for d in providers.get(module, [])} & brought
    }
    assert not missing, f"the tutorials extra does not bring these notebook imports: {missing}"
