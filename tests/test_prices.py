"""Per-model prices in the provider profiles: money beside tokens wherever a price is known
(ask's usage, dry runs, budgets, batch results, the token summary), tokens only otherwise."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pandas as pd
import pytest
from image_factory import photo, save

import visionkit as vk
from visionkit import costs
from visionkit.providers import money, price_of, providers

PROMPT = "Describe this image."


@pytest.fixture(autouse=True)
def registry() -> Iterator[None]:
    """Each test may set prices: the registry is put back as it was afterwards."""
    saved = dict(providers._items)
    try:
        yield
    finally:
        providers._items.clear()
        providers._items.update(saved)


@pytest.fixture
def images(tmp_path) -> pd.DataFrame:
    paths = [save(photo(300 + 20 * i, 200, seed=i), tmp_path / f"p{i}.jpg") for i in range(4)]
    return pd.DataFrame({"path": [str(p) for p in paths]}, index=[f"r{i}" for i in range(4)])


def test_every_default_price_names_its_source_and_date():
    table = vk.providers.price_table()
    assert {("openai", "gpt-4o-mini"), ("anthropic", "claude-sonnet-4-5")} <= set(table.index)
    for (provider, model), row in table.iterrows():
        assert re.search(r"\d{4}-\d\d-\d\d", row["source"]), (provider, model, row["source"])
        assert row["input_per_million"] > 0 and row["output_per_million"] > 0
        assert 0 <= row["batch_discount"] < 1
    # openai-low is openai at detail=low: the same models, the same prices
    assert price_of("openai-low", "gpt-4o") == price_of("openai", "gpt-4o")
    # no price is known for inference.net's models (none is published in its guide)
    assert price_of("inference.net") is None
    assert price_of("openai-compatible", "anything") is None  # any server: unknown


def test_price_arithmetic_and_the_batch_discount():
    p = vk.Price(input=0.15, output=0.60, batch_discount=0.5)
    assert p.cost(1_000_000) == pytest.approx(0.15)
    assert p.cost(2_000_000, 1_000_000) == pytest.approx(0.90)
    assert p.cost(2_000_000, 1_000_000, batch=True) == pytest.approx(0.45)
    assert money("openai", "gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.75)
    assert money("inference.net", None, 1_000_000) is None


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"input": -1, "output": 1}, "Price.input must be a number >= 0"),
        ({"input": 1, "output": "2"}, "Price.output must be a number >= 0"),
        ({"input": 1, "output": 1, "batch_discount": 1.0}, "batch_discount must be a fraction"),
        ({"input": 1, "output": 1, "batch_discount": 50}, "batch_discount must be a fraction"),
    ],
)
def test_a_bad_price_is_refused_naming_the_field(kw, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        vk.Price(**kw)
    with pytest.raises(ValueError, match=re.escape(message)):
        vk.set_price("offline", "visionkit-offline", **kw)
    assert price_of("offline", "visionkit-offline") is None  # nothing was set


def test_ask_usage_shows_money_where_the_price_is_known_and_tokens_otherwise(images, client, cache):
    plain = images.vision.ask(PROMPT, client=client, cache=cache, progress=False)
    assert "cost_usd" not in plain.attrs["usage"]  # no price: tokens only

    # set after the client connected: the registry is asked at the time of use
    vk.set_price("offline", "visionkit-offline", input=2.0, output=8.0, source="test")
    priced = images.vision.ask(
        "Describe this image in a word.", client=client, cache=cache, progress=False
    )
    usage = priced.attrs["usage"]
    expected = (usage["prompt_tokens"] * 2.0 + usage["completion_tokens"] * 8.0) / 1e6
    assert usage["prompt_tokens"] > 0
    assert usage["cost_usd"] == pytest.approx(expected, abs=1e-6)

    again = images.vision.ask(
        "Describe this image in a word.", client=client, cache=cache, progress=False
    )
    assert again.attrs["usage"]["cost_usd"] == 0  # all from the cache: nothing bought


def test_a_dry_run_prices_its_prompts_and_a_budget_says_the_money(images, client, cache):
    vk.set_price("offline", "visionkit-offline", input=3.0, output=9.0)
    dry = images.vision.ask(PROMPT, client=client, cache=cache, dry_run=True, progress=False)
    usage = dry.attrs["usage"]
    assert usage["estimated_cost_usd"] == pytest.approx(usage["estimated_tokens"] * 3.0 / 1e6)
    with pytest.raises(vk.BudgetExceeded, match=r"tokens \(about \$0\.0\d for the prompts"):
        images.vision.ask(PROMPT, client=client, cache=cache, budget_tokens=10, progress=False)


def test_batch_results_and_batch_dry_runs_are_priced_at_the_batch_discount(
    images, server, client, tmp_path
):
    vk.set_price("offline", "visionkit-offline", input=2.0, output=4.0, batch_discount=0.5)
    cache = tmp_path / "batch" / "answers.sqlite"
    kw = {"client": client, "cache": cache, "progress": False, "upload_interval": 0}
    dry = images.vision.submit(PROMPT, dry_run=True, **kw)
    tokens = dry.attrs["usage"]["estimated_tokens"]
    assert dry.attrs["usage"]["estimated_cost_usd"] == pytest.approx(tokens * 1.0 / 1e6)
    result = images.vision.submit(PROMPT, **kw).wait(progress=False).result()
    usage = result.attrs["usage"]
    full = (usage["prompt_tokens"] * 2.0 + usage["completion_tokens"] * 4.0) / 1e6
    assert usage["cost_usd"] == pytest.approx(full / 2, abs=1e-6)


def test_the_token_summary_and_its_plot_title_show_money_where_known(images):
    sized = images.join(images.vision.inspect()[["width", "height"]])
    openai = costs.token_summary(sized, "openai")
    assert openai.model == "gpt-4o-mini"
    assert openai.cost_usd == pytest.approx(openai.tokens * 0.15 / 1e6)
    assert f"${openai.cost_usd:,.2f} at gpt-4o-mini's input price" in openai.describe()
    unknown = costs.token_summary(sized, "inference.net")
    assert unknown.cost_usd is None and "$" not in unknown.describe()
    ax = sized.vision.plot_tokens("openai")
    assert "gpt-4o-mini's input price" in ax.get_title(loc="left") + ax.get_title()
