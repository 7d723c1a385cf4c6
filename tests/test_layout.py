"""The package's layout: no import circle inside visionkit/ (module level, inside functions or
under TYPE_CHECKING alike), and no module over 600 lines (issue 20).

Imports are read from the source (``ast``), every ``import`` and ``from ... import`` wherever
it stands, so a circle closed by a function-level import counts as one.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "visionkit"
MAX_LINES = 600

ALLOWED_LONG: set[str] = set()  # (batch/submit.py was, until batch/shared.py took its share)


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the visionkit modules it imports anywhere in its source."""
    modules = {_module_name(p, package.parent): p for p in package.rglob("*.py")}

    def targets(module: str, node: ast.Import | ast.ImportFrom, is_package: bool) -> list[str]:
        if isinstance(node, ast.Import):
            return [alias.name for alias in node.names]
        base = module if is_package else module.rsplit(".", 1)[0]
        if node.level:
            parts = base.split(".")
            base = ".".join(parts[: len(parts) - (node.level - 1)])
            target = f"{base}.{node.module}" if node.module else base
        else:
            target = node.module or ""
        return [
            f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target
            for alias in node.names
        ]

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in targets(module, node, path.name == "__init__.py"):
                    while target not in modules and "." in target:
                        target = target.rsplit(".", 1)[0]
                    if target in modules and target != module:
                        edges.add(target)
        graph[module] = edges
    return graph


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_inside_visionkit():
    found = circles(import_graph())
    assert not found, f"import circles: {[sorted(c) for c in found]}"


def test_the_circle_finder_finds_circles_closed_inside_functions(tmp_path):
    package = tmp_path / "visionkit"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from .sub import b\n")
    (package / "sub" / "b.py").write_text("def f():\n    from ..a import x\n")
    (package / "c.py").write_text("if TYPE_CHECKING:\n    from .a import y\n")
    assert circles(import_graph(package)) == [{"visionkit.a", "visionkit.sub.b"}]


def test_no_module_over_600_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not {k: v for k, v in long.items() if k not in ALLOWED_LONG}, long
