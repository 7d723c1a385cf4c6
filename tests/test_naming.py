"""One name per idea: every public signature is held to the naming table (docs/naming.md).

Walks the public surface -- ``vk.__all__`` (functions, classes with their public methods and
properties, the ``costs`` and ``tokens`` modules), ``df.vision``, ``ddf.vision``,
``visionkit.dask`` -- and fails when a parameter uses a name the table gives to nothing (or
to another idea), when an option after the first two arguments can be passed positionally,
or when a public callable returns ``Any``. The twins (``df.vision.X`` and ``vk.X``, the
widgets' ``df.vision`` methods and their constructors, ``submit``'s overloads) must take the
same parameters with the same defaults.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest

import visionkit as vk

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "docs" / "naming.md"

# idea -> (its one name, the names it must not go by). Mirrors the table in docs/naming.md,
# which test_the_table_in_the_docs_lists_every_name checks.
IDEAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "a DataFrame as first argument": ("data", ("df", "ddf", "frame", "result", "table")),
    "one image": ("image", ("cell", "img", "picture")),
    "several images": ("images", ("cells",)),
    "where images are read from": ("source", ("folder", "root", "location")),
    "the image column(s)": ("image_column", ("column", "columns", "col", "image_col")),
    "a column of class labels": ("label_column", ("label_col",)),
    "a column of boxes": ("box_column", ("boxes_column",)),
    "the allowed classes": ("labels", ("options", "classes", "categories")),
    "the reference column": ("truth", ("human", "a", "reference", "expected")),
    "the compared column": ("answer", ("b", "predicted", "prediction")),
    "many rater columns": ("raters", ()),
    "two raters compared symmetrically": ("rater_a", ()),
    "the second of two raters": ("rater_b", ()),
    "pixels sent to a model": ("max_side", ("max_size", "resize")),
    "grid thumbnails": ("thumb_size", ("size", "thumbnail_size")),
    "an annotator's main view": ("view_size", ("image_size", "display_size")),
    "the largest side sent to the browser for zoom": ("zoom_size", ("preview_size",)),
    "an export's destination": ("path", ("folder", "out_dir", "filename", "file")),
    "an image visionkit makes, (width, height)": ("dimensions", ()),
    "storage options for fsspec": ("storage_options", ()),
}
FORBIDDEN = {bad: name for name, bads in IDEAS.values() for bad in bads}
# The first argument of these is a DataFrame of images; of these, a column of image cells.
DATAFRAME_FIRST = re.compile(r"^(pd\.)?DataFrame\b|^dd\.DataFrame\b")


def _public_methods(cls: type) -> Iterator[tuple[str, Callable[..., object]]]:
    """The class itself (its constructor), then its public methods and properties, inherited
    ones too, as long as visionkit defines them (not ipywidgets' or traitlets')."""
    yield f"{cls.__name__}()", cls
    for name in dir(cls):
        if name.startswith("_"):
            continue
        owner = next(k for k in cls.__mro__ if name in vars(k))
        if not owner.__module__.startswith("visionkit"):
            continue
        member = vars(owner)[name]
        if isinstance(member, property) and member.fget is not None:
            yield f"{cls.__name__}.{name}", member.fget
        elif isinstance(member, classmethod | staticmethod):
            yield f"{cls.__name__}.{name}", getattr(cls, name)
        elif inspect.isfunction(member):
            yield f"{cls.__name__}.{name}", member


def public_callables() -> list[tuple[str, Callable[..., object]]]:
    """Every public callable a user reaches: ``vk.X``, ``vk.costs.X``, ``vk.tokens.X``,
    ``df.vision.X``, ``ddf.vision.X`` and ``visionkit.dask.X``."""
    import visionkit.dask

    out: list[tuple[str, Callable[..., object]]] = []
    modules = [("vk", vk), ("vk.dask", visionkit.dask)]
    for prefix, module in modules:
        names = list(module.__all__)
        for name in names:
            obj = getattr(module, name)
            if inspect.ismodule(obj):
                for sub in obj.__all__:
                    member = getattr(obj, sub)
                    if typing.get_origin(member) is not None:
                        continue  # a type alias (vk.tokens.TokenCount), not a callable
                    if inspect.isclass(member):
                        out += [(f"{prefix}.{name}.{n}", f) for n, f in _public_methods(member)]
                    elif callable(member):
                        out.append((f"{prefix}.{name}.{sub}", member))
            elif inspect.isclass(obj):
                if issubclass(obj, BaseException | Warning):
                    continue
                out += [(f"{prefix}.{n}", f) for n, f in _public_methods(obj)]
            elif callable(obj):
                out.append((f"{prefix}.{name}", obj))
    frame = pd.DataFrame({"path": ["a.png"]})
    for name in dir(vk.VisionAccessor):
        if not name.startswith("_"):
            out.append((f"df.vision.{name}", getattr(frame.vision, name)))
    for name in dir(visionkit.dask.DaskVisionAccessor):
        if not name.startswith("_"):
            out.append((f"ddf.vision.{name}", getattr(visionkit.dask.DaskVisionAccessor, name)))
    return out


PUBLIC = public_callables()


def _parameters(function: Callable[..., object]) -> list[inspect.Parameter]:
    params = list(inspect.signature(function).parameters.values())
    return [p for p in params if p.name not in ("self", "cls")]


def _is_dataclass_type(obj: object) -> bool:
    return inspect.isclass(obj) and dataclasses.is_dataclass(obj)


def _annotation(function: Callable[..., object]) -> object:
    target = function.__init__ if inspect.isclass(function) else function  # type: ignore[misc]
    return inspect.signature(target).return_annotation


def _any_at_top(annotation: object) -> bool:
    """True for ``Any`` or a union with ``Any`` in it (``dict[str, Any]`` is precise)."""
    if annotation is typing.Any:
        return True
    if not isinstance(annotation, str):
        return False
    depth, parts, current = 0, [], ""
    for ch in annotation:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "|" and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    parts.append(current.strip())
    return any(p in ("Any", "typing.Any") for p in parts)


def test_the_walk_sees_the_whole_public_surface():
    names = {n for n, _ in PUBLIC}
    # a few of each kind, so that a broken walk cannot pass every test below vacuously
    assert {"vk.ask", "vk.submit", "vk.Gallery()", "vk.costs.estimate_accuracy"} <= names
    assert {"df.vision.ask", "df.vision.annotate_boxes", "ddf.vision.submit"} <= names
    assert {"vk.BatchJob.wait", "vk.Annotator.label_column", "vk.dask.read_images"} <= names
    assert len(PUBLIC) > 150


@pytest.mark.parametrize("name, function", PUBLIC, ids=[n for n, _ in PUBLIC])
def test_no_parameter_uses_a_forbidden_name(name, function):
    for p in _parameters(function):
        if p.name in FORBIDDEN:
            pytest.fail(f"{name}: parameter {p.name!r} should be {FORBIDDEN[p.name]!r}")


@pytest.mark.parametrize("name, function", PUBLIC, ids=[n for n, _ in PUBLIC])
def test_a_dataframe_first_argument_is_called_data(name, function):
    if _is_dataclass_type(function):
        return  # a result's fields say what they hold (EstimateAccuracy.rows)
    params = _parameters(function)
    first = params[0] if params else None
    if first is not None and isinstance(first.annotation, str) and first.name != "data":
        assert not DATAFRAME_FIRST.match(first.annotation), (
            f"{name}: the DataFrame is {first.name!r}"
        )


@pytest.mark.parametrize("name, function", PUBLIC, ids=[n for n, _ in PUBLIC])
def test_options_after_the_first_two_arguments_are_keyword_only(name, function):
    if _is_dataclass_type(function):
        return  # a record visionkit fills in (users construct Provider and Price by keyword)
    positional = [
        p for p in _parameters(function) if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    late = [p.name for p in positional[2:] if p.default is not p.empty]
    assert not late, f"{name}: options {late} can be passed positionally; put them after *"


@pytest.mark.parametrize("name, function", PUBLIC, ids=[n for n, _ in PUBLIC])
def test_no_public_callable_returns_any(name, function):
    if inspect.isclass(function):
        return  # a constructor returns its class
    annotation = _annotation(function)
    assert annotation is not inspect.Signature.empty, f"{name} has no return annotation"
    assert not _any_at_top(annotation), f"{name} returns {annotation!r}; say what it returns"


def test_the_checks_catch_what_they_are_for():
    """Each rule fails on a signature written the old way (so none can pass vacuously)."""

    def old_gallery(df: pd.DataFrame, column=None, caption=None, page_size=24): ...

    def old_submit(df, prompt, **kwargs) -> typing.Any: ...

    assert [p.name for p in _parameters(old_gallery) if p.name in FORBIDDEN] == ["df", "column"]
    positional = [p for p in _parameters(old_gallery) if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert [p.name for p in positional[2:] if p.default is not p.empty] == ["caption", "page_size"]
    assert _any_at_top(_annotation(old_submit)) and _any_at_top("pd.DataFrame | Any")
    assert not _any_at_top("dict[str, Any]")
    assert DATAFRAME_FIRST.match("pd.DataFrame | None")


def _same_parameters(method: Callable[..., object], function: Callable[..., object], skip: int):
    """``method``'s parameters are ``function``'s less its first ``skip``: names, kinds and
    defaults, in order."""

    def shape(params: list[inspect.Parameter]) -> list[tuple[str, object, object]]:
        return [(p.name, p.kind, p.default) for p in params]

    assert shape(_parameters(method)) == shape(_parameters(function)[skip:]), (
        f"{method.__qualname__} differs from {function.__qualname__}"
    )


def test_df_vision_twins_take_their_functions_parameters():
    from visionkit.widgets import Annotator, BoxAnnotator, Gallery

    frame = pd.DataFrame({"path": ["a.png"]})
    _same_parameters(frame.vision.ask, vk.ask, 1)
    _same_parameters(frame.vision.ask_async, vk.ask_async, 1)
    _same_parameters(frame.vision.submit, vk.submit, 1)
    _same_parameters(frame.vision.evaluate, vk.evaluate, 1)
    _same_parameters(frame.vision.propose_boxes, vk.propose_boxes, 1)
    _same_parameters(frame.vision.gallery, Gallery, 1)
    _same_parameters(frame.vision.annotate, Annotator, 1)
    _same_parameters(frame.vision.annotate_boxes, BoxAnnotator, 1)


def test_encode_shows_encode_series_options():
    """``df.vision.encode`` spells out ``encode_series``' options (no ``**kwargs``: help(),
    Shift+Tab and the reference show them), with the same names, kinds and defaults; the
    provider comes first and positional, as in ``estimate_tokens``."""
    from visionkit.images.encode import encode_series

    frame = pd.DataFrame({"path": ["a.png"]})
    method = _parameters(frame.vision.encode)
    assert [p.name for p in method[:2]] == ["provider", "image_column"]
    assert all(p.kind is not p.VAR_KEYWORD for p in method)
    options = [(p.name, p.kind, p.default) for p in method[2:]]
    function = _parameters(encode_series)
    assert options == [(p.name, p.kind, p.default) for p in function[2:]]
    assert (method[0].name, method[0].default) == (function[1].name, function[1].default)


def test_ddf_vision_twins_take_df_visions_parameters():
    import visionkit.dask

    dask_side = visionkit.dask.DaskVisionAccessor
    _same_parameters(dask_side.encode, vk.VisionAccessor.encode, 0)
    ask = _parameters(dask_side.ask)
    assert [p.name for p in ask if p.name != "out"] == [p.name for p in _parameters(vk.ask)[1:]]
    _same_parameters(dask_side.submit, vk.submit, 1)


@pytest.mark.skipif(not hasattr(typing, "get_overloads"), reason="typing.get_overloads: 3.11+")
def test_submits_overloads_differ_from_it_in_dry_run_alone():
    import importlib

    import visionkit.dask

    submit_module = importlib.import_module("visionkit.batch.submit")
    for function in (
        submit_module.submit,
        vk.VisionAccessor.submit,
        visionkit.dask.DaskVisionAccessor.submit,
    ):
        overloads = typing.get_overloads(function)
        assert len(overloads) == 3, function.__qualname__
        names = [p.name for p in _parameters(function)]
        returns = set()
        for overload in overloads:
            assert [p.name for p in _parameters(overload)] == names
            returns.add(inspect.signature(overload).return_annotation)
        assert returns == {"Job", "pd.DataFrame", "Job | pd.DataFrame"}


def test_submits_options_are_the_option_objects_fields_with_their_defaults():
    """``submit`` hands its arguments to ``BatchAskOptions`` and ``BatchSettings`` by name
    (``batch_arguments``): each option must be a field of one of them, with its default."""
    from visionkit.batch.limits import BatchSettings
    from visionkit.batch.shared import BatchAskOptions

    fields = {
        f.name: f for cls in (BatchAskOptions, BatchSettings) for f in dataclasses.fields(cls)
    }
    for p in _parameters(vk.submit)[2:]:
        if p.kind is p.VAR_KEYWORD:
            assert p.name == "request_options"
            continue
        assert p.name in fields, f"submit's {p.name} is no option field"
        f = fields[p.name]
        assert p.kind is p.KEYWORD_ONLY and p.default == f.default, p.name


def test_submit_returns_a_job_either_way():
    """``BatchJob`` and ``ReplayedJob`` both satisfy ``vk.Job``, the type ``submit`` promises."""
    from visionkit.batch import BatchJob, ReplayedJob

    for cls in (BatchJob, ReplayedJob):
        for member in ("status", "done", "batches", "refresh", "cancel", "wait", "result"):
            assert hasattr(cls, member) or member in getattr(cls, "__dataclass_fields__", {})
        for method in ("wait", "wait_async"):
            assert [p.name for p in _parameters(getattr(cls, method))] == [
                p.name for p in _parameters(getattr(vk.Job, method))
            ]


def test_the_table_in_the_docs_lists_every_name():
    text = TABLE.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    named = {re.match(r"\| `([^`]+)`", row).group(1) for row in rows}  # type: ignore[union-attr]
    assert {name for name, _ in IDEAS.values()} <= named
    for name, bads in IDEAS.values():
        row = next(r for r in rows if r.startswith(f"| `{name}`"))
        for bad in bads:
            assert f"`{bad}`" in row, f"docs/naming.md: the row of {name} does not name {bad}"
