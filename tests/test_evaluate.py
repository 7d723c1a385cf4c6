"""df.vision.evaluate against the offline stand-in over real HTTP through the real openai SDK:
the stand-in counts small red marks from the pixels it receives, so image size and model
change what it can see and the frontier is real."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score

import visionkit as vk
from visionkit import offline
from visionkit.providers import providers
from visionkit.tokens import fit_within, text_tokens

matplotlib.use("Agg")

PROMPT = "How many red marks are in this image? Answer with a number."
SMALL = offline.SMALL_MODEL
BIG = offline.DEFAULT_MODEL
GRID = {"prompts": PROMPT, "models": [BIG, SMALL], "max_side": [560, 1120]}


@pytest.fixture(scope="module")
def marks(tmp_path_factory) -> pd.DataFrame:
    folder = tmp_path_factory.mktemp("marks")
    return offline.make_marks(folder, 24, annotators=3, save=folder / "labels.csv", seed=11)


@pytest.fixture(scope="module")
def stand_in():
    with offline.serve() as url:
        yield url


@pytest.fixture(scope="module")
def client(stand_in):
    return vk.connect("offline", base_url=stand_in)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache") / "answers.sqlite"


@pytest.fixture(scope="module")
def ev(marks, client, cache):
    return marks.vision.evaluate("count", **GRID, client=client, cache=cache, progress=False)


@pytest.fixture
def prices():
    """Prices for the stand-in's two models, put back afterwards."""
    saved = dict(providers._items)
    vk.set_price("offline", BIG, input=0.20, output=0.80, batch_discount=0.5, source="test")
    vk.set_price("offline", SMALL, input=0.05, output=0.20, batch_discount=0.5, source="test")
    try:
        yield
    finally:
        providers._items.clear()
        providers._items.update(saved)


def test_every_configuration_is_scored_as_scikit_learn_scores_it(ev, marks):
    assert list(ev.table.index) == [
        f"{BIG} · 560 px",
        f"{BIG} · 1120 px",
        f"{SMALL} · 560 px",
        f"{SMALL} · 1120 px",
    ]
    for label, row in ev.table.iterrows():
        part = ev.answers[ev.answers.index == label]
        assert row["rows"] == len(marks) == len(part)
        ok = part[part["error"].isna()]
        truth = ok["truth"].tolist()
        said = [vk.evaluation.scores.NO_LABEL if v is None else v for v in ok["label"]]
        assert row["accuracy"] == pytest.approx(accuracy_score(truth, said))
        assert row["kappa"] == pytest.approx(cohen_kappa_score(truth, said))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f1 = f1_score(truth, said, labels=ev.labels, average="macro")
        assert row["macro_f1"] == pytest.approx(f1)
        for metric in ("accuracy", "kappa", "macro_f1"):
            assert row[f"{metric}_low"] <= row[metric] <= row[f"{metric}_high"]
        assert row["latency_median_s"] > 0 and row["latency_p95_s"] >= row["latency_median_s"]
        assert math.isnan(row["usd_per_1000"])  # no price known for the stand-in: tokens only


def test_the_largest_images_agree_measurably_better_than_the_smallest(ev):
    small, large = ev.table.loc[f"{BIG} · 560 px"], ev.table.loc[f"{BIG} · 1120 px"]
    assert large["kappa_low"] > small["kappa_high"]  # the intervals do not even overlap
    test = ev.compare(f"{BIG} · 560 px", f"{BIG} · 1120 px")
    assert test.differ and test.pvalue < 0.01 and test.b_only > test.a_only
    assert "differ (McNemar's exact test" in test.describe()
    # the small model looks at 448 px whatever it is sent: size does not rescue it
    assert ev.table.loc[f"{SMALL} · 1120 px", "kappa"] < large["kappa_low"]


def test_tokens_per_row_follow_the_providers_formula_for_each_size(ev, marks):
    profile = vk.get_provider("offline")
    for _, row in ev.table.iterrows():
        w, h = fit_within(1120, 840, int(row["max_side"]))
        assert row["prompt_tokens_per_row"] == profile.estimate(w, h) + text_tokens(PROMPT)
    assert (
        ev.table.loc[f"{BIG} · 560 px", "prompt_tokens_per_row"]
        < ev.table.loc[f"{BIG} · 1120 px", "prompt_tokens_per_row"]
    )


def test_a_second_evaluate_with_the_same_arguments_sends_nothing(
    ev, marks, client, cache, stand_in
):
    before = stand_in.server.stats.chat_requests
    again = marks.vision.evaluate("count", **GRID, client=client, cache=cache, progress=False)
    assert stand_in.server.stats.chat_requests == before
    pd.testing.assert_frame_equal(again.table, ev.table)  # latencies too: kept with the answers
    assert again.answers["cached"].all()


def test_best_is_the_cheapest_that_clears_the_bar_as_ask_and_submit_options(
    ev, marks, client, cache, stand_in
):
    choice = ev.best("kappa", at_least=0.8)
    assert choice.label == f"{BIG} · 1120 px"
    assert dict(choice) == {"prompt": PROMPT, "client": client, "model": BIG, "max_side": 1120}
    loose = ev.best("accuracy", at_least=0.2)
    assert loose.label == f"{BIG} · 560 px"  # as cheap as any, and the better of those
    before = stand_in.server.stats.chat_requests
    answers = marks.vision.ask(**choice, cache=cache, progress=False)
    assert answers["cached"].all() and stand_in.server.stats.chat_requests == before
    dry = marks.vision.submit(**choice, cache=cache, dry_run=True, progress=False)
    assert dry.attrs["usage"]["cache_hits"] == len(marks)
    with pytest.raises(
        ValueError,
        match=r"no configuration's kappa clears at_least=1\.01 .*"
        r"highest lower bound is 1\.000",
    ):
        ev.best("kappa", at_least=1.01)
    with pytest.raises(ValueError, match=r"metric must be one of \['accuracy', 'kappa'"):
        ev.best("f1")


def test_money_where_prices_are_known_decides_cheapest_and_the_projection(
    ev, marks, client, cache, prices
):
    priced = marks.vision.evaluate("count", **GRID, client=client, cache=cache, progress=False)
    row = priced.table.loc[f"{SMALL} · 560 px"]
    expected = row["prompt_tokens_per_row"] * 0.05 + row["completion_tokens_per_row"] * 0.20
    assert row["usd_per_1000"] == pytest.approx(expected / 1000)
    assert priced.cost_column == "usd_per_1000"
    assert priced.best("accuracy", at_least=0.2).label == f"{SMALL} · 560 px"  # cheaper model

    choice = priced.best("kappa", at_least=0.8)
    full = pd.DataFrame({"width": [1120] * 120_000, "height": [840] * 120_000})
    plan = priced.project(full, choice, requests_per_minute=250)
    per_row = priced.table.loc[choice.label]
    assert plan.rows == 120_000 and plan.unsized == 0
    assert plan.prompt_tokens == 120_000 * per_row["prompt_tokens_per_row"]
    assert plan.completion_tokens == round(120_000 * per_row["completion_tokens_per_row"])
    assert plan.usd == pytest.approx(
        (plan.prompt_tokens * 0.20 + plan.completion_tokens * 0.80) / 1e6
    )
    assert plan.batch_usd == pytest.approx(plan.usd / 2)
    assert plan.hours_at_rate_limit == pytest.approx(120_000 / 250 / 60)
    limits = vk.get_provider("offline").batch
    assert plan.files >= math.ceil(120_000 / limits.max_requests_per_file)
    assert plan.upload_hours == pytest.approx((plan.files - 1) * limits.upload_interval / 3600)
    assert plan.hours == max(plan.hours_at_rate_limit, plan.hours_at_measured_pace)
    assert "through the Batch API" in plan.describe()
    assert (
        str(plan) == plan.describe() and repr(plan).splitlines()[1:] == str(plan).splitlines()[1:]
    )
    assert plan.to_frame().loc[choice.label, "tokens"] == plan.tokens
    # images without a size are read from their headers, as ask's budget check does
    assert (
        priced.project(marks, choice).prompt_tokens == len(marks) * per_row["prompt_tokens_per_row"]
    )


def test_the_human_ceiling_comes_from_the_annotators_save_file(marks, client, cache):
    labels = Path(marks["path"].iloc[0]).parent / "labels.csv"
    ev = marks.vision.evaluate(
        annotations=labels,
        prompts=PROMPT,
        max_side=[560, 1120],
        client=client,
        cache=cache,
        progress=False,
    )
    wide = marks[["annotator_1", "annotator_2", "annotator_3"]]
    raters = vk.rater_agreement(wide.loc[ev.truth.index])
    assert ev.ceiling.loc["fleiss_kappa", "estimate"] == pytest.approx(raters.fleiss_kappa)
    assert ev.ceiling.loc["alpha", "estimate"] == pytest.approx(raters.alpha)
    for _, c in ev.ceiling.iterrows():
        assert c["low"] <= c["estimate"] <= c["high"] and c["raters"] == 3
    majority = wide.mode(axis=1)
    agreed = majority[0].where(majority[1].isna()) if 1 in majority else majority[0]
    assert ev.truth.tolist() == agreed.dropna().loc[ev.truth.index].tolist()
    assert ev.no_consensus == int(agreed.isna().sum())
    assert "consensus of 3 annotators" in ev.source and "human ceiling" in repr(ev)
    # the same from the rater columns themselves
    same = marks.vision.evaluate(
        raters=list(wide.columns),
        prompts=PROMPT,
        max_side=[560, 1120],
        client=client,
        cache=cache,
        progress=False,
    )
    pd.testing.assert_frame_equal(same.ceiling, ev.ceiling)


def test_structured_answers_a_normaliser_and_a_stratified_sample(marks, client, cache):
    schema = {
        "type": "object",
        "properties": {"count": {"type": "integer"}},
        "required": ["count"],
    }
    common = {
        "prompts": PROMPT,
        "max_side": 1120,
        "client": client,
        "cache": cache,
        "progress": False,
    }
    by_field = marks.vision.evaluate("count", schema=schema, field="count", **common)
    assert by_field.table["accuracy"].iloc[0] == 1.0  # the integer 4 is the label "4"
    first_word = marks.vision.evaluate("count", normalise=lambda a: a.split()[0], **common)
    assert first_word.table["accuracy"].iloc[0] == 1.0
    sampled = marks.vision.evaluate("count", sample=10, seed=5, **common)
    assert sampled.table["rows"].iloc[0] == 10
    shares = marks["count"].value_counts(normalize=True)
    got = sampled.truth.value_counts()
    assert set(got.index) == set(shares.index)  # every label at least once
    again = marks.vision.evaluate("count", sample=10, seed=5, **common)
    assert again.truth.index.equals(sampled.truth.index)


def test_a_row_that_fails_is_counted_and_left_out_of_the_scores(marks, client, tmp_path):
    broken = marks.copy()
    broken.loc[broken.index[0], "path"] = str(tmp_path / "missing.png")
    ev = broken.vision.evaluate(
        "count",
        prompts=PROMPT,
        max_side=1120,
        client=client,
        cache=tmp_path / "c.sqlite",
        progress=False,
    )
    row = ev.table.iloc[0]
    assert (row["failed"], row["answered"], row["rows"]) == (1, len(marks) - 1, len(marks))
    assert row["accuracy"] == 1.0  # the failure is not a wrong answer
    errors = ev.answers["error"].tolist()
    assert errors == ["ImageError: file not found"] + [None] * (len(marks) - 1)


def test_an_evaluation_replays_in_ci_without_sending(marks, tmp_path):
    with offline.serve() as url:
        recorder = vk.connect("offline", base_url=url, record=tmp_path / "answers")
        recorded = marks.vision.evaluate(
            "count",
            prompts=PROMPT,
            max_side=[560, 1120],
            client=recorder,
            cache=False,
            progress=False,
        )
    player = vk.connect("offline", replay=tmp_path / "answers", strict=True)
    with offline.serve() as url:
        replayed = marks.vision.evaluate(
            "count", prompts=PROMPT, max_side=[560, 1120], client=player, progress=False
        )
        assert url.server.stats.chat_requests == 0
    pd.testing.assert_frame_equal(replayed.table, recorded.table)


def test_the_frontier_plot(ev, marks, client, cache):
    import matplotlib.pyplot as plt

    ax = ev.plot()
    assert isinstance(ax, matplotlib.axes.Axes)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "Pareto front" in legend and "95% bootstrap interval" in legend
    assert {t.get_text() for t in ax.texts} == set(ev.table.index)
    front = ev.pareto()
    assert front[f"{BIG} · 560 px"] and front[f"{BIG} · 1120 px"]
    assert not front[f"{SMALL} · 1120 px"]  # more tokens, less agreement than BIG at 560
    _, mine = plt.subplots()
    assert ev.plot(ax=mine, x="latency_median_s", y="accuracy") is mine
    assert mine.get_xlabel() == "median latency (s)"
    nothing = ev.plot(x="usd_per_1000")  # no prices: nothing to place, said in the axes
    assert "no configuration has both values" in nothing.texts[0].get_text()
    with pytest.raises(ValueError, match=r"The value for `y` must be one of \[.*'kappa'"):
        ev.plot(y="kapa")
    labels = Path(marks["path"].iloc[0]).parent / "labels.csv"
    with_ceiling = marks.vision.evaluate(
        annotations=labels,
        prompts=PROMPT,
        max_side=[560, 1120],
        client=client,
        cache=cache,
        progress=False,
    )
    band = with_ceiling.plot()
    assert any("human ceiling" in t.get_text() for t in band.get_legend().get_texts())
    plt.close("all")


def test_bad_arguments_say_what_to_do_before_anything_is_sent(marks, client, stand_in):
    before = stand_in.server.stats.chat_requests
    kw = {"prompts": PROMPT, "client": client, "progress": False}
    with pytest.raises(TypeError, match="evaluate needs labels to compare with"):
        marks.vision.evaluate(**kw)
    with pytest.raises(KeyError, match="truth='label' is not a column"):
        marks.vision.evaluate("label", **kw)
    with pytest.raises(TypeError, match="field= names a schema field"):
        marks.vision.evaluate("count", field="count", **kw)
    with pytest.raises(TypeError, match=r"evaluate decides \['dry_run'\] itself"):
        marks.vision.evaluate("count", configs=[{"dry_run": True}], **kw)
    with pytest.raises(ValueError, match="confidence must be between 0 and 1"):
        marks.vision.evaluate("count", confidence=95, **kw)
    assert stand_in.server.stats.chat_requests == before


def test_compare_names_the_configurations_it_knows(ev):
    with pytest.raises(KeyError, match="no configuration 'nope'; the table's index is"):
        ev.compare("nope", f"{BIG} · 560 px")
    same = ev.compare(f"{BIG} · 1120 px", f"{BIG} · 1120 px")
    assert same.pvalue == 1.0 and not same.differ
    assert np.isfinite(ev.table["kappa"]).all()
