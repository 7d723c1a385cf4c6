from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import visionkit as vk
from visionkit import costs
from visionkit.tokens import fit_within, inference_net_tokens, openai_tokens


def test_tiers_of_inference_net_are_the_guides_560_and_1120():
    tiers = costs.token_tiers("inference.net")
    assert (tiers.floor_side, tiers.cap_side) == (560, 1120)
    assert (tiers.min_tokens, tiers.max_tokens) == (1601, 6404)
    assert tiers.boundaries == (560, 1120)
    assert tiers.default_resize_to == 560


def test_tiers_are_derived_from_the_token_function_for_any_provider():
    mine = vk.Provider(
        name="tiles-of-300",
        base_url=None,
        api_key_env=None,
        formats=("png",),
        max_body_bytes=None,
        max_images=None,
        tokens=lambda w, h: 100 * np.clip(np.asarray(w) / 300, 1, 3) * np.clip(h / 300, 1, 3),
        default_model=None,
    )
    tiers = costs.token_tiers(mine)
    assert (tiers.floor_side, tiers.cap_side) == (300, 900)
    assert (tiers.min_tokens, tiers.max_tokens) == (100, 900)


def test_flat_and_floorless_providers_have_no_resize_target():
    low = costs.token_tiers("openai-low")
    assert low.flat and low.boundaries == () and low.default_resize_to is None
    anthropic = costs.token_tiers("anthropic")
    assert anthropic.default_resize_to is None  # tokens grow from a few pixels
    assert anthropic.boundaries == (1568,)  # its max_side: past it, no more tokens


def test_fit_sides_matches_fit_within_and_never_upscales():
    rng = np.random.default_rng(1)
    w = rng.integers(1, 5000, 300)
    h = rng.integers(1, 5000, 300)
    fw, fh = costs.fit_sides(w, h, 560)
    for i in range(300):
        assert (fw[i], fh[i]) == fit_within(int(w[i]), int(h[i]), 560)
    assert (np.maximum(fw, fh) <= 560).all()


def test_token_summary_totals_and_saving_at_the_floor():
    df = pd.DataFrame(
        {"width": [512, 1120, 2400, 840, None], "height": [512, 1120, 300, 560, 10]},
        index=list("abcde"),
    )
    s = costs.token_summary(df)
    expected = sum(inference_net_tokens(w, h) for w, h in [(512, 512), (1120, 1120), (2400, 300)])
    expected += inference_net_tokens(840, 560)
    assert s.tokens == expected
    assert (s.images, s.sized, s.unsized) == (5, 4, 1)
    assert s.resize_to == 560
    assert s.tokens_resized == 4 * 1601  # every image at or under 560 px costs the minimum
    assert s.saved == expected - 4 * 1601
    assert s.over_cap == 1  # only the 2400 px strip is over 1120...
    assert s.tokens_at_cap == s.tokens  # ...and 1120 x 140 costs what 2400 x 300 did
    text = s.describe()
    assert f"{expected:,} tokens" in text and f"would save {s.saved:,} (" in text
    assert "1 without a known size" in text
    assert "1 over 1120 px: encode() shrinks them at no token cost" in text


def test_encodes_default_resize_to_the_cap_saves_tokens_on_non_square_images():
    # inference.net clamps each side: at 1120 px longest, a 3:2 photo's short side is 747 px
    df = pd.DataFrame({"width": [1800, 2000, 1680], "height": [1197, 2000, 1260]})
    s = costs.token_summary(df)
    assert s.tokens == 3 * 6404
    at_cap = sum(inference_net_tokens(*fit_within(w, h, 1120)) for w, h in df.to_numpy())
    assert at_cap == inference_net_tokens(1120, 745) + 6404 + inference_net_tokens(1120, 840)
    assert s.tokens_at_cap == at_cap
    assert s.saved_at_cap == 3 * 6404 - at_cap > 0
    assert f"encode()'s default resize to 1120 px saves {s.saved_at_cap:,}" in s.describe()


def test_token_summary_at_a_chosen_side_and_without_a_saving():
    df = pd.DataFrame({"width": [1120, 300], "height": [1120, 300]})
    s = costs.token_summary(df, resize_to=840)
    assert s.tokens_resized == inference_net_tokens(840, 840) + 1601
    none = costs.token_summary(df, resize_to=None)
    assert none.tokens_resized is None and none.saved == 0 and "save" not in none.describe()
    small = costs.token_summary(pd.DataFrame({"width": [300], "height": [200]}))
    assert small.saved == 0 and "nothing to save" in small.describe()
    with pytest.raises(ValueError, match="resize_to"):
        costs.token_summary(df, resize_to=-3)


def test_token_summary_of_other_providers_uses_their_formula():
    df = pd.DataFrame({"width": [2048, 300], "height": [4096, 300]})
    s = costs.token_summary(df, "openai")
    assert s.tokens == openai_tokens(2048, 4096) + openai_tokens(300, 300)
    assert s.resize_to == 512
    assert s.tokens_resized == 2 * 255


def test_token_summary_of_empty_and_all_error_frames():
    empty = costs.token_summary(pd.DataFrame({"width": [], "height": []}))
    assert (empty.images, empty.sized, empty.tokens, empty.saved) == (0, 0, 0, 0)
    errors = pd.DataFrame({"path": ["a", "b"], "width": [pd.NA] * 2, "height": [pd.NA] * 2})
    s = costs.token_summary(errors)
    assert (s.images, s.sized, s.tokens) == (2, 0, 0)
    assert "2 without a known size" in s.describe()


def test_token_surface_grid_holds_the_formula_and_the_tier_edges():
    xs, ys, z = costs.token_surface("inference.net", 2000, steps=50)
    assert 560 in xs and 1120 in xs and xs[0] == 1 and xs[-1] == 2000
    assert z.shape == (len(ys), len(xs))
    i, j = 7, 31
    assert z[i, j] == inference_net_tokens(xs[j], ys[i])  # rows are heights, columns widths
    assert z.min() == 1601 and z.max() == 6404


def test_token_curve_follows_the_longest_side_at_an_aspect():
    curve = costs.token_curve("inference.net", aspect=2.0, max_side=1500)
    assert list(curve["side"]) == list(range(1, 1501))
    row = curve.set_index("side").loc[1120]
    assert (row["width"], row["height"]) == (1120, 560)
    assert row["tokens"] == inference_net_tokens(1120, 560) == 3202
    portrait = costs.token_curve("openai", aspect=0.75, max_side=900).set_index("side").loc[900]
    assert (portrait["width"], portrait["height"]) == (675, 900)
    assert portrait["tokens"] == openai_tokens(675, 900)
    # exact aspect, no rounding flicker: openai's 4:3 curve only ever steps up
    steps = np.diff(costs.token_curve("openai", aspect=4 / 3, max_side=2400)["tokens"])
    assert (steps >= 0).all()
    with pytest.raises(ValueError, match="aspect"):
        costs.token_curve(aspect=0)


def test_estimate_accuracy_compares_estimates_with_reported_tokens():
    result = pd.DataFrame(
        {
            "estimated_tokens": pd.array([1000, 2000, 3000, None, 500], dtype="Int64"),
            "prompt_tokens": pd.array([1100, 2000, 2500, 900, None], dtype="Int64"),
        }
    )
    fit = costs.estimate_accuracy(result)
    assert fit.n == 3
    errors = [(1000 - 1100) / 1100, 0.0, (3000 - 2500) / 2500]
    assert fit.rows["relative_error"].tolist() == pytest.approx(errors)
    assert fit.median_relative_error == pytest.approx(0.0)
    assert fit.median_abs_relative_error == pytest.approx(100 / 1100)
    assert "9.1%" in fit.describe() and "3 rows" in fit.describe()


def test_estimate_accuracy_without_usable_rows_and_without_the_columns():
    fit = costs.estimate_accuracy(pd.DataFrame({"estimated_tokens": [1], "prompt_tokens": [None]}))
    assert fit.n == 0 and math.isnan(fit.median_relative_error)
    assert "no rows" in fit.describe()
    with pytest.raises(KeyError, match="prompt_tokens"):
        costs.estimate_accuracy(pd.DataFrame({"estimated_tokens": [1]}))


def test_max_tokens_is_the_most_any_image_costs_not_the_most_a_square_costs():
    """openai's profile said 765 while its own plot reached 1,445 (issue 8): one answer."""
    openai = vk.get_provider("openai")
    tiers = costs.token_tiers("openai")
    assert tiers.max_tokens == openai.estimate(2048, 768) == 1445  # 4 x 2 tiles + 85
    assert openai.estimate(1800, 1197) == 1105 <= tiers.max_tokens  # what TokenExplorer says
    rng = np.random.default_rng(0)
    for name in ["inference.net", "openai", "anthropic"]:
        profile = vk.get_provider(name)
        w, h = rng.integers(1, 8193, size=(2, 20_000))
        found = np.asarray(profile.estimate(w, h))
        t = costs.token_tiers(name)
        assert t.min_tokens <= found.min() and found.max() <= t.max_tokens, name
