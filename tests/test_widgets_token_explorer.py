"""TokenExplorer: the table follows the sliders and equals vk.estimate_tokens."""

from __future__ import annotations

import pandas as pd
import pytest
from widget_images import image_frame

import visionkit as vk
from visionkit.tokens import fit_within
from visionkit.widgets.token_explorer import fit_budget


def test_table_equals_estimate_tokens_for_every_provider():
    ex = vk.TokenExplorer()
    ex.width_slider.value, ex.height_slider.value = 1500, 900
    table = ex.table
    assert list(table.index) == list(vk.providers)
    for name in vk.providers:
        assert table.loc[name, "tokens"] == vk.estimate_tokens(1500, 900, provider=name)
    assert "1500 × 900" in ex.output.value
    assert f"{vk.estimate_tokens(1500, 900, provider='inference.net'):,}" in ex.output.value


def test_updates_live_when_a_slider_moves():
    ex = vk.TokenExplorer(provider="inference.net", budget=10_000)
    ex.width_slider.value, ex.height_slider.value = 560, 560
    assert ex.table.loc["inference.net", "tokens"] == 1601
    before = ex.output.value
    ex.width_slider.value = 1120
    assert ex.table.loc["inference.net", "tokens"] == 3202
    assert ex.output.value != before and "3,202" in ex.output.value


@pytest.mark.parametrize("provider", ["inference.net", "openai", "anthropic"])
@pytest.mark.parametrize(
    ("w", "h", "budget"), [(4000, 3000, 1000), (1500, 900, 3202), (800, 2400, 500)]
)
def test_fit_budget_is_the_largest_same_aspect_size_under_the_budget(provider, w, h, budget):
    fit = fit_budget(w, h, budget, provider)
    cost = lambda side: vk.estimate_tokens(*fit_within(w, h, side), provider=provider)  # noqa: E731
    if fit is None:
        assert cost(1) > budget
        return
    side = max(fit)
    assert fit == fit_within(w, h, side)
    assert vk.estimate_tokens(*fit, provider=provider) <= budget
    if side < max(w, h):
        assert cost(side + 1) > budget  # one pixel more would not fit


def test_budget_slider_and_fit_columns():
    ex = vk.TokenExplorer(provider=["inference.net", "openai"], width=2240, height=1120)
    ex.budget_slider.value = 3202
    row = ex.table.loc["inference.net"]
    assert not row["fits"] and (row["fit_width"], row["fit_height"]) == (1120, 560)
    assert row["fit_tokens"] == 3202
    ex.budget_slider.value = 1000  # inference.net never charges less than 1,601
    assert pd.isna(ex.table.loc["inference.net", "fit_width"])
    assert "no size fits" in ex.output.value
    assert ex.table.loc["openai", "fit_tokens"] <= 1000


def test_pick_an_image_from_the_dataframe(tmp_path):
    df = image_frame(tmp_path, n=4)
    ex = vk.TokenExplorer(df)
    assert ex.image_picker is not None and len(ex.image_picker.options) == 5
    ex.image_picker.value = 2
    assert ex.size == (df["width"].iloc[2], df["height"].iloc[2])
    # Without width/height columns the size is read from the file's header.
    ex = vk.TokenExplorer(df[["path"]])
    ex.image_picker.value = 3
    assert ex.size == (df["width"].iloc[3], df["height"].iloc[3])
    assert ex.table.loc["openai", "tokens"] == vk.estimate_tokens(*ex.size, provider="openai")


def test_moving_a_slider_off_the_picked_image_stops_naming_it(tmp_path):
    # issue 13: the picker kept naming an image after the sliders had left its size
    from widget_images import image_frame

    df = image_frame(tmp_path / "imgs", n=3)
    te = vk.TokenExplorer(df)
    te.image_picker.value = 1
    assert te.size == (130, 85) and te.image_picker.value == 1
    te.width_slider.value = 500
    assert te.image_picker.value == -1 and te.size == (500, 85)
    te.image_picker.value = 2  # picking again sets both sliders and stays picked
    assert te.size == (140, 90) and te.image_picker.value == 2
