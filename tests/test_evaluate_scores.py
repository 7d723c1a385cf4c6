"""The evaluation's statistics, without a figure or a server: scikit-learn, statsmodels and
vk.rater_agreement are the oracles; the bootstrap's coverage is checked by simulation."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score
from statsmodels.stats.contingency_tables import mcnemar

import visionkit as vk
from visionkit.annotation.reliability import count_table
from visionkit.evaluation import scores
from visionkit.evaluation.grid import make_grid
from visionkit.evaluation.truth import consensus, stratified_sample

LABELS = ["cat", "dog", "fox", "owl"]


def answers_for(rng, n: int, right: float):
    truth = rng.choice(LABELS, n)
    wrong = rng.choice([*LABELS, "a badger", "unsure"], n)
    return truth, np.where(rng.random(n) < right, truth, wrong)


def codes(truth, answers):
    y, p, k = scores.label_codes(list(truth), list(answers), LABELS)
    return y, p, k


@pytest.mark.parametrize("seed", range(25))
def test_accuracy_kappa_and_macro_f1_equal_scikit_learns(seed):
    rng = np.random.default_rng(seed)
    truth, said = answers_for(rng, int(rng.integers(3, 300)), float(rng.random()))
    got = scores.agreement_scores(*codes(truth, said)[:2], len(LABELS), codes(truth, said)[2])
    assert got["accuracy"] == pytest.approx(accuracy_score(truth, said), abs=1e-12)
    expected_kappa = cohen_kappa_score(truth, said)
    if np.isnan(expected_kappa):
        assert np.isnan(got["kappa"])
    else:
        assert got["kappa"] == pytest.approx(expected_kappa, abs=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn warns about labels nobody gave
        f1 = f1_score(truth, said, labels=LABELS, average="macro")
    assert got["macro_f1"] == pytest.approx(f1, abs=1e-12)


def test_kappa_is_undefined_when_everyone_gives_one_label():
    y, p, k = codes(["cat"] * 5, ["cat"] * 5)
    assert np.isnan(scores.agreement_scores(y, p, len(LABELS), k)["kappa"])


@pytest.mark.parametrize("seed", range(25))
def test_mcnemar_equals_statsmodels_exact_test(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 120))
    a, b = rng.random(n) < 0.7, rng.random(n) < rng.random()
    got = scores.mcnemar_exact(a, b, a="A", b="B")
    table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
    expected = mcnemar(table, exact=True)
    assert got.statistic == expected.statistic
    assert got.pvalue == pytest.approx(expected.pvalue, rel=1e-12)
    assert got.differ == (expected.pvalue < 0.05)
    assert (got.a_only, got.b_only) == (table[0][1], table[1][0])


@pytest.mark.parametrize("seed", range(10))
def test_the_human_ceiling_equals_rater_agreement(seed):
    rng = np.random.default_rng(seed)
    n = 120
    truth = rng.choice(LABELS, n)
    wide = pd.DataFrame(
        {f"r{i}": np.where(rng.random(n) < 0.8, truth, rng.choice(LABELS, n)) for i in range(4)}
    )
    wide = wide.mask(rng.random(wide.shape) < 0.15)  # some labels missing
    expected = vk.rater_agreement(wide)
    table, _ = count_table(wide)
    got = scores.ceiling_scores(table, 4, resamples=300, seed=seed)
    assert got["fleiss_kappa"][0] == pytest.approx(expected.fleiss_kappa, abs=1e-12)
    assert got["alpha"][0] == pytest.approx(expected.alpha, abs=1e-12)
    for estimate, low, high in got.values():
        assert low <= estimate <= high
    # observed agreement: with nobody missing, the mean of the pairwise agreements
    full = wide.fillna("cat")
    table, _ = count_table(full)
    pairwise = vk.rater_agreement(full).pairwise["agreement"].mean()
    assert scores.ceiling_scores(table, 4, resamples=100)["agreement"][0] == pytest.approx(pairwise)


def test_intervals_cover_the_estimate_narrow_with_more_rows_and_repeat_with_a_seed():
    rng = np.random.default_rng(7)
    widths = []
    for n in (60, 240, 960):
        truth, said = answers_for(rng, n, 0.75)
        y, p, k = codes(truth, said)
        point = scores.agreement_scores(y, p, len(LABELS), k)
        bounds = scores.bootstrap_scores(y, p, len(LABELS), k, resamples=1000, seed=1)
        for name in scores.METRICS:
            low, high = bounds[name]
            assert low <= point[name] <= high, (n, name, low, point[name], high)
        widths.append(bounds["kappa"][1] - bounds["kappa"][0])
        again = scores.bootstrap_scores(y, p, len(LABELS), k, resamples=1000, seed=1)
        assert again == bounds
        other = scores.bootstrap_scores(y, p, len(LABELS), k, resamples=1000, seed=2)
        assert other != bounds
    assert widths[0] > widths[1] > widths[2]
    assert widths[0] / widths[2] == pytest.approx(4, rel=0.35)  # ~ 1 / sqrt(n)


@pytest.mark.parametrize("metric", ["accuracy", "kappa"])
def test_the_intervals_cover_the_true_value_about_95_percent_of_the_time(metric):
    """A population where each answer is right with probability 0.8, else another label at
    random, and both sides' labels are uniform: accuracy 0.8, kappa (0.8 - 1/4) / (3/4)."""
    true = {"accuracy": 0.8, "kappa": (0.8 - 0.25) / 0.75}[metric]
    rng = np.random.default_rng(2024)
    hits, runs, n = 0, 240, 150
    for run in range(runs):
        y = rng.integers(0, 4, n)
        wrong = (y + rng.integers(1, 4, n)) % 4
        p = np.where(rng.random(n) < 0.8, y, wrong)
        low, high = scores.bootstrap_scores(y, p, 4, 4, resamples=600, seed=run)[metric]
        hits += low <= true <= high
    assert 0.90 <= hits / runs <= 0.99  # 95 % +- about 3 standard errors


def test_resampling_blocks_bound_memory_and_draw_n_rows_each():
    blocks = list(scores.resample_weights(300_000, 50, seed=0))
    assert sum(len(b) for b in blocks) == 50 and len(blocks) > 1
    assert all((b.sum(axis=1) == 300_000).all() for b in blocks)


def test_pareto_front_is_what_nothing_beats():
    x = np.array([1600, 1600, 2700, 4800, 6400, np.nan])
    y = np.array([0.50, 0.40, 0.70, 0.95, 0.95, 0.99])
    assert scores.pareto_mask(x, y).tolist() == [True, False, True, True, False, False]


def test_a_stratified_sample_keeps_the_labels_shares_and_repeats_with_a_seed():
    labels = pd.Series(["a"] * 60 + ["b"] * 30 + ["c"] * 9 + ["d"] + [None] * 5)
    picked = stratified_sample(labels, 20, seed=3)
    counts = labels[picked].value_counts()
    assert counts.to_dict() == {"a": 12, "b": 6, "c": 1, "d": 1}  # d at least once
    assert list(picked) == sorted(picked)  # in the frame's order
    assert picked.equals(stratified_sample(labels, 20, seed=3))
    assert not picked.equals(stratified_sample(labels, 20, seed=4))
    assert stratified_sample(labels, None).equals(labels.dropna().index)
    assert len(stratified_sample(labels, 1000)) == 100
    with pytest.raises(ValueError, match="sample= must be a positive number of rows"):
        stratified_sample(labels, 0)


def test_consensus_is_the_majority_and_a_tie_has_none():
    raters = pd.DataFrame(
        {
            "ana": ["cat", "cat", "dog", None],
            "ben": ["cat", "dog", "fox", None],
            "cy": ["dog", "dog", None, None],
        }
    )
    labels, ties = consensus(raters)
    assert labels.tolist() == ["cat", "dog", None, None] and ties == 1


def test_the_grid_labels_what_varies_and_refuses_what_evaluate_decides():
    grid = make_grid(
        prompts={"short": "How many marks?", "long": "Count the red marks."},
        models=["m1", "m2"],
        max_side=[560, None],
        configs=None,
        options={"temperature": 0, "concurrency": 4},
    )
    assert len(grid) == 8
    assert grid[0].label == "short · m1 · 560 px" and grid[1].label == "short · m1 · full size"
    assert grid[0].ask_options() == {
        "prompt": "How many marks?",
        "temperature": 0,
        "model": "m1",
        "max_side": 560,
    }
    assert grid[0].run == {"concurrency": 4}  # how it runs, not what it asks
    named = make_grid(
        prompts="Count the marks.",
        models=None,
        max_side=None,
        options={},
        configs=[{"name": "cold", "temperature": 0}, {"name": "warm", "temperature": 1}],
    )
    assert [c.label for c in named] == ["cold", "warm"]
    with pytest.raises(TypeError, match=r"evaluate decides \['dry_run'\] itself"):
        make_grid(prompts="x", models=None, max_side=None, configs=[{"dry_run": True}], options={})
    with pytest.raises(ValueError, match="both labelled"):
        make_grid(
            prompts="x", models=None, max_side=None, configs=[{}, {"name": "config 1"}], options={}
        )
    with pytest.raises(ValueError, match="no prompt"):
        make_grid(prompts=None, models=None, max_side=None, configs=None, options={})
