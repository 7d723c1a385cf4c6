"""Docstrings read well in the API reference, which mkdocstrings renders as Markdown.

reStructuredText markup is shown there as typed: ``:func:`ask``` as ":func:" before the name,
``Usage::`` with both colons, `` `fsspec <https://...>`_`` as a literal. Cross-references are
written the mkdocstrings way (``[`agreement`][visionkit.agreement]``), other names as plain code.
Every docstring in the package is checked in its source, and the public ones again as Python
sees them at run time (some are finished at import).
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "visionkit"

RST = {
    "a Sphinx role": re.compile(r":(?:py:)?[a-z]+:`"),
    "an RST link": re.compile(r"`[^`<]+<[a-z]+://[^>]+>`_"),
    "an RST literal-block marker (::)": re.compile(r"\S::[ \t]*$", re.M),
    "an RST table": re.compile(r"^[ \t]*={3,}(?:[ \t]+={3,})+[ \t]*$", re.M),
}


def rst_markup(text: str) -> list[str]:
    """What in ``text`` is reStructuredText that Markdown would show as typed."""
    return [f"{what}: {m.group(0)!r}" for what, p in RST.items() for m in p.finditer(text)]


def source_docstrings() -> Iterator[tuple[str, str]]:
    """``(file:line, docstring)`` for every module, class and function docstring."""
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(
                node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
            ):
                continue
            doc = ast.get_docstring(node, clean=False)
            if doc:
                line = node.body[0].lineno
                yield f"{path.relative_to(ROOT).as_posix()}:{line}", doc


def public_objects() -> Iterator[tuple[str, object]]:
    """Every public name and its public methods, as imported."""
    import visionkit.dask
    import visionkit.evaluation
    import visionkit.offline

    spaces = [("visionkit", visionkit), ("visionkit.dask", visionkit.dask)]
    spaces += [("visionkit.offline", visionkit.offline)]
    spaces += [("visionkit.evaluation", visionkit.evaluation)]
    for prefix, module in spaces:
        yield prefix, module
        for name in module.__all__:
            obj = getattr(module, name)
            yield f"{prefix}.{name}", obj
            if inspect.isclass(obj):
                for member, value in vars(obj).items():
                    if not member.startswith("_") and (
                        callable(value) or isinstance(value, property)
                    ):
                        yield f"{prefix}.{name}.{member}", value


def test_no_source_docstring_keeps_rst_markup():
    found = [f"{where}: {hit}" for where, doc in source_docstrings() for hit in rst_markup(doc)]
    assert not found, "reStructuredText in docstrings:\n" + "\n".join(found)


def test_no_public_docstring_keeps_rst_markup_at_run_time():
    objects = list(public_objects())
    assert len(objects) > 150  # the walk sees the public surface
    found = []
    for where, obj in objects:
        doc = inspect.getdoc(obj.fget if isinstance(obj, property) else obj) or ""
        found += [f"{where}: {hit}" for hit in rst_markup(doc)]
    assert not found, "reStructuredText in public docstrings:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "text",
    [
        "The result of :func:`agreement`.",
        "See :meth:`Evaluation.plot`.",
        "read through `fsspec <https://filesystem-spec.readthedocs.io>`_ and",
        "Usage::\n\n    vk.ask(df)",
        "See :py:class:`Job`.",
        "====  ======\nrule  status\n====  ======\n",
    ],
)
def test_the_check_catches_rst(text):
    assert rst_markup(text)


def test_the_check_lets_markdown_through():
    text = (
        "The result of [`agreement`][visionkit.agreement]; ``x`` or `x`. Usage:\n\n"
        "    df[::2]  # a slice\n\nA [link](https://example.org), a time 12:30, `a:b`."
    )
    assert not rst_markup(text)
