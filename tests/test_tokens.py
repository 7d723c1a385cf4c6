from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import visionkit as vk
from visionkit.tokens import anthropic_tokens, inference_net_tokens, openai_tokens


@pytest.mark.parametrize(
    ("height", "width", "expected"),
    [(32, 32, 1601), (560, 560, 1601), (1120, 1120, 6404), (4000, 3000, 6404)],
)
def test_inference_net_matches_the_guides_table(height, width, expected):
    assert vk.estimate_tokens(width, height) == expected
    assert isinstance(vk.estimate_tokens(width, height), int)


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [(560, 1120, 3202), (1120, 560, 3202), (840, 560, 2402), (840, 840, 3602), (100, 2400, 3202)],
)
def test_inference_net_non_square(width, height, expected):
    assert inference_net_tokens(width, height) == expected


def test_printed_formula_would_be_constant_and_we_do_not_implement_it():
    printed = [max(2, min(1, s / 560)) ** 2 * 1601 for s in (32, 560, 1120)]
    assert printed == [6404, 6404, 6404]
    assert [inference_net_tokens(s, s) for s in (32, 560, 1120)] == [1601, 1601, 6404]


def test_vectorised_keeps_shape_and_matches_scalar():
    rng = np.random.default_rng(0)
    w = rng.integers(1, 4000, size=(50, 3))
    h = rng.integers(1, 4000, size=(50, 3))
    out = vk.estimate_tokens(w, h)
    assert out.shape == (50, 3)
    assert out[7, 2] == vk.estimate_tokens(int(w[7, 2]), int(h[7, 2]))


def test_series_keeps_index_and_gives_na_for_unknown_sizes():
    w = pd.Series([560, None, 1120], index=["a", "b", "c"])
    h = pd.Series([560, 100, 1120], index=["a", "b", "c"])
    out = vk.estimate_tokens(w, h)
    assert list(out.index) == ["a", "b", "c"]
    assert out["a"] == 1601 and out["c"] == 6404 and pd.isna(out["b"])


def test_million_rows_vectorised():
    w = np.full(1_000_000, 800)
    out = vk.estimate_tokens(w, w)
    assert out.shape == (1_000_000,) and out[0] == round((800 / 560) ** 2 * 1601)


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [
        (1024, 1024, 765),  # OpenAI's worked example: 768x768 -> 4 tiles
        (2048, 4096, 1105),  # -> 1024x2048 -> 768x1536 -> 6 tiles
        (512, 512, 255),
    ],
)
def test_openai_tile_formula_examples(width, height, expected):
    assert openai_tokens(width, height) == expected
    assert openai_tokens(width, height, detail="low") == 85


def test_openai_rejects_unknown_detail():
    with pytest.raises(ValueError, match="detail"):
        openai_tokens(10, 10, detail="medium")


def test_anthropic_area_over_750_after_downscale():
    assert anthropic_tokens(200, 200) == round(200 * 200 / 750)
    assert anthropic_tokens(1000, 1000) == round(1000 * 1000 / 750)
    # a big image is scaled down to ~1.15 MP: about 1,533 tokens, never more than ~1,600
    assert 1500 <= anthropic_tokens(4000, 3000) <= 1600


def test_providers_registry_lists_profiles_and_accepts_new_ones():
    assert {"inference.net", "openai", "anthropic", "offline"} <= set(vk.providers)
    p = vk.providers["inference.net"]
    assert p.max_body_bytes == 1_000_000 and p.max_images == 2
    assert p.formats == ("png", "jpeg", "webp", "gif")
    assert p.default_model == "google/gemma-3-27b-instruct/bf-16"
    assert p.api_key_env == "INFERENCE_API_KEY"
    mine = vk.Provider(
        name="test-local",
        base_url="http://127.0.0.1:9/v1",
        api_key_env=None,
        formats=("png",),
        max_body_bytes=None,
        max_images=1,
        tokens=lambda w, h: np.asarray(w) * 0 + 7,
        default_model="m",
    )
    vk.register_provider(mine, replace=True)
    assert vk.estimate_tokens(10, 10, provider="test-local") == 7
    with pytest.raises(ValueError, match="exists"):
        vk.register_provider(mine)
    with pytest.raises(KeyError, match="unknown provider"):
        vk.get_provider("nope")
    frame = vk.providers.to_frame()
    assert frame.loc["inference.net", "tokens_1120"] == 6404


def test_image_budget_leaves_room_for_two_images_and_a_prompt():
    p = vk.providers["inference.net"]
    budget = p.image_budget()
    assert 2 * budget + 16_384 < 1_000_000
    assert budget > 480_000


def test_one_image_without_numpy_gives_what_the_vectorised_formula_gives():
    sizes = np.arange(0, 1400, 7)
    w, h = np.meshgrid(sizes, sizes[::-1])
    vectorised = inference_net_tokens(w.ravel(), h.ravel())
    pairs = zip(w.ravel(), h.ravel(), strict=True)
    scalar = [inference_net_tokens(int(a), int(b)) for a, b in pairs]
    assert all(type(t) is int for t in scalar)
    assert scalar == vectorised.tolist()
    assert inference_net_tokens(840, 700) == inference_net_tokens(np.int64(840), 700)  # rint's half
