"""What the plots draw, checked on the artists themselves (Agg backend, no display)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection

import visionkit as vk
from visionkit import costs
from visionkit.tokens import anthropic_tokens, inference_net_tokens, openai_tokens


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def sizes() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "path": ["a.png", "b.jpg", "c.webp", "d.gif", "broken.jpg"],
            "width": [512, 840, 2000, 2400, None],
            "height": [512, 560, 1500, 300, None],
            "error": [None, None, None, None, "cannot identify image file"],
        }
    )


def _scatter(ax) -> PathCollection:
    (points,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    return points


def _texts(ax) -> str:
    return "\n".join(t.get_text() for t in ax.texts)


def test_plot_tokens_puts_each_image_at_its_size_coloured_by_its_tokens(sizes):
    ax = sizes.vision.plot_tokens()
    points = _scatter(ax)
    known = sizes.dropna(subset=["width"])
    np.testing.assert_array_equal(points.get_offsets(), known[["width", "height"]].to_numpy())
    tokens = [inference_net_tokens(w, h) for w, h in known[["width", "height"]].to_numpy()]
    np.testing.assert_array_equal(points.get_array(), tokens)
    # the colours drawn are the colormap at the normalised tokens
    expected = points.cmap(points.norm(np.asarray(tokens)))
    fig = ax.figure
    fig.canvas.draw()
    np.testing.assert_allclose(points.get_facecolors(), expected)
    assert points.norm.vmin == 1601 and points.norm.vmax == 6404


def test_plot_tokens_marks_the_tiers_and_labels_the_colourbar(sizes):
    ax = vk.plot_tokens(sizes, "inference.net")
    tier_lines = [line for line in ax.lines if (line.get_gid() or "").startswith("tier-")]
    assert len(tier_lines) == 4  # 560 and 1120, on both axes
    vertical = {
        line.get_xdata()[0] for line in tier_lines if line.get_xdata()[1] == line.get_xdata()[0]
    }
    horizontal = {
        line.get_ydata()[0] for line in tier_lines if line.get_ydata()[1] == line.get_ydata()[0]
    }
    assert vertical == horizontal == {560, 1120}
    assert "560 px" in _texts(ax) and "1120 px" in _texts(ax)
    assert "1,601 each" in _texts(ax) and "6,404 each" in _texts(ax)
    cbar_ax = next(a for a in ax.figure.axes if a is not ax)
    assert cbar_ax.get_ylabel().startswith("estimated tokens per image")
    assert ax.get_xlabel() == "width (px)" and ax.get_ylabel() == "height (px)"


def test_plot_tokens_title_gives_total_and_saving(sizes):
    ax = sizes.vision.plot_tokens()
    summary = costs.token_summary(sizes)
    title = ax.get_title(loc="left")
    assert title == summary.describe()
    assert f"{summary.tokens:,} tokens" in title
    assert f"would save {summary.saved:,}" in title
    assert f"resize to 1120 px saves {summary.saved_at_cap:,}" in title
    assert "1 without a known size" in title


def test_plot_tokens_background_is_the_providers_surface(sizes):
    ax = sizes.vision.plot_tokens("openai")
    filled = [c for c in ax.collections if hasattr(c, "levels") and c.filled]
    assert len(filled) == 1
    levels = filled[0].levels
    assert levels[0] == openai_tokens(512, 512) == 255  # the map spans the minimum...
    assert levels[-1] >= openai_tokens(2400, 300)  # ...to past the dearest image
    np.testing.assert_array_equal(
        _scatter(ax).get_array(),
        [openai_tokens(w, h) for w, h in [(512, 512), (840, 560), (2000, 1500), (2400, 300)]],
    )
    tier_lines = {line.get_gid() for line in ax.lines if line.get_gid()}
    assert tier_lines == {"tier-512", "tier-2048"}


def test_plot_tokens_draws_into_a_given_ax_and_forwards_kwargs(sizes):
    fig, (left, right) = plt.subplots(1, 2)
    out = sizes.vision.plot_tokens(ax=right, marker="s", s=10, colorbar=False)
    assert out is right and not left.collections
    assert _scatter(right).get_sizes().tolist() == [10]
    assert len(fig.axes) == 2  # no colourbar added


def test_plot_tokens_without_ax_makes_a_new_figure_each_time(sizes):
    a = sizes.vision.plot_tokens()
    b = sizes.vision.plot_tokens()
    assert a.figure is not b.figure


@pytest.mark.parametrize(
    "frame",
    [
        pd.DataFrame({"path": [], "width": [], "height": []}),
        pd.DataFrame({"path": ["x", "y"], "width": [None, None], "height": [None, None]}),
    ],
    ids=["empty", "all-errors"],
)
def test_plot_tokens_of_nothing_says_so(frame):
    ax = frame.vision.plot_tokens()
    assert "nothing to plot" in _texts(ax)
    assert not ax.collections
    assert ("no images" in _texts(ax)) and (len(frame) == 0 or "known size" in _texts(ax))


def test_plot_token_curve_lines_are_the_token_functions():
    ax = vk.plot_token_curve()
    labels = [line.get_label() for line in ax.lines]
    assert labels == ["inference.net", "openai", "anthropic"]
    functions = {
        "inference.net": inference_net_tokens,
        "openai": openai_tokens,
        "anthropic": anthropic_tokens,
    }
    for line in ax.lines:
        x = np.asarray(line.get_xdata())
        np.testing.assert_array_equal(line.get_ydata(), functions[line.get_label()](x, x))
    assert [t.get_text() for t in ax.get_legend().get_texts()] == labels
    assert ax.get_xlabel() == "longest side (px)"
    assert ax.lines[0].get_xdata()[-1] >= 2048  # reaches past every provider's cap


def test_plot_token_curve_at_an_aspect_and_on_a_given_ax():
    _fig, ax = plt.subplots()
    out = vk.plot_token_curve(["inference.net"], aspect=2.0, max_side=1300, ax=ax, linewidth=3)
    assert out is ax
    (line,) = ax.lines
    x = np.asarray(line.get_xdata())
    assert x[-1] == 1300 and line.get_linewidth() == 3
    np.testing.assert_array_equal(line.get_ydata(), inference_net_tokens(x, x / 2))
    assert "aspect 2" in ax.get_title(loc="left")


def test_plot_usage_draws_estimates_against_reported_with_the_diagonal():
    result = pd.DataFrame(
        {
            "answer": ["a", "b", "c", None],
            "estimated_tokens": pd.array([1601, 3202, 6404, 1601], dtype="Int64"),
            "prompt_tokens": pd.array([1650, 3260, 6460, None], dtype="Int64"),
        }
    )
    ax = vk.plot_usage(result)
    points = _scatter(ax)
    np.testing.assert_array_equal(points.get_offsets(), [[1601, 1650], [3202, 3260], [6404, 6460]])
    (diagonal,) = [line for line in ax.lines if line.get_label() == "y = x"]
    np.testing.assert_array_equal(diagonal.get_xdata(), diagonal.get_ydata())
    fit = costs.estimate_accuracy(result)
    assert fit.describe() in ax.get_title(loc="left")
    assert "median error" in ax.get_title(loc="left")
    assert ax.get_xlabel() == "estimated tokens" and ax.get_ylabel() == "reported prompt tokens"


@pytest.mark.parametrize(
    "result",
    [
        pd.DataFrame({"estimated_tokens": [], "prompt_tokens": []}),
        pd.DataFrame({"estimated_tokens": [1601, 1601], "prompt_tokens": [None, None]}),
    ],
    ids=["empty", "all-NA"],
)
def test_plot_usage_of_nothing_says_so(result):
    ax = vk.plot_usage(result)
    assert "no rows with both" in _texts(ax)
    assert not ax.collections


def test_plots_never_show(monkeypatch, sizes):
    monkeypatch.setattr(plt, "show", lambda *a, **k: pytest.fail("plt.show() was called"))
    sizes.vision.plot_tokens()
    vk.plot_token_curve()
    vk.plot_usage(pd.DataFrame({"estimated_tokens": [10], "prompt_tokens": [11]}))


def test_plot_tokens_inspects_the_image_column_when_sizes_are_missing(tmp_path):
    from PIL import Image

    paths = []
    for i, size in enumerate([(300, 200), (1500, 900)]):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", size).save(path)
        paths.append(str(path))
    paths.append(str(tmp_path / "missing.png"))
    ax = pd.DataFrame({"path": paths}).vision.plot_tokens()
    np.testing.assert_array_equal(_scatter(ax).get_offsets(), [[300, 200], [1500, 900]])
    assert "1 without a known size" in ax.get_title(loc="left")


def _sample_calls(sizes: pd.DataFrame) -> dict:
    labels = pd.DataFrame(
        {"label": ["cat", "dog", "cat", "dog"], "answer": ["cat", "cat", "cat", "dog"]}
    )
    raters = pd.DataFrame(
        {"ann": ["a", "b", "a", "a"], "bob": ["a", "b", "b", "a"], "cy": ["a", "b", "a", "b"]}
    )
    boxes = pd.DataFrame(
        {
            "truth": [[{"label": "cat", "x": 0, "y": 0, "w": 10, "h": 10}]],
            "pred": [[{"label": "cat", "x": 1, "y": 1, "w": 10, "h": 10}]],
        }
    )
    return {
        "plot_tokens": lambda **kw: vk.plot_tokens(sizes, **kw),
        "plot_token_curve": lambda **kw: vk.plot_token_curve(**kw),
        "plot_usage": lambda **kw: vk.plot_usage(
            pd.DataFrame({"estimated_tokens": [10, 20], "prompt_tokens": [11, 19]}), **kw
        ),
        "plot_agreement": lambda **kw: vk.plot_agreement(labels, **kw),
        "plot_rater_agreement": lambda **kw: vk.plot_rater_agreement(raters, **kw),
        "plot_class_agreement": lambda **kw: vk.plot_class_agreement(raters, **kw),
        "plot_box_agreement": lambda **kw: vk.plot_box_agreement(
            vk.box_agreement(boxes, truth="truth", answer="pred"), **kw
        ),
    }


def test_every_plot_function_draws_on_a_new_figure_without_ax_and_returns_the_axes(sizes):
    """plot_agreement drew on plt.gca(), over the previous plot (issue 8): the rule is for all."""
    calls = _sample_calls(sizes)
    public = sorted(n for n in vk.__all__ if n.startswith("plot_"))
    assert public == sorted(calls), "add the new plot function to _sample_calls"
    for name, call in calls.items():
        before = plt.figure()
        ax = call()
        assert ax.figure is not before and plt.gcf() is ax.figure, name
        again = call()
        assert again.figure is not ax.figure, name
        given = plt.figure().subplots()
        assert call(ax=given) is given, name
        plt.close("all")
