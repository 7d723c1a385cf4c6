"""Cohen's kappa, Fleiss' kappa and Krippendorff's alpha against scikit-learn, statsmodels and
the ``krippendorff`` package (test oracles, dev dependencies), to 1e-9."""

from __future__ import annotations

import math

import krippendorff
import matplotlib
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import aggregate_raters
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss

import visionkit as vk
from visionkit.annotation.reliability import count_table

matplotlib.use("Agg")
import matplotlib.pyplot as plt

LABELS = ["bird", "cat", "dog", "fish"]


def ratings(seed: int, items: int = 300, raters: int = 3, missing: float = 0.0) -> pd.DataFrame:
    """Raters who mostly agree with a hidden truth, each with their own error rate."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(LABELS, size=items, p=[0.4, 0.3, 0.2, 0.1])
    cols = {}
    for r in range(raters):
        wrong = rng.random(items) < 0.15 + 0.1 * r
        col = np.where(wrong, rng.choice(LABELS, size=items), truth).astype(object)
        col[rng.random(items) < missing] = None
        cols[f"rater{r}"] = col
    return pd.DataFrame(cols, index=[f"img{i}" for i in range(items)])


def codes(frame: pd.DataFrame) -> np.ndarray:
    """Label codes as floats with NaN for missing: what statsmodels and krippendorff take."""
    mapping = {lab: float(i) for i, lab in enumerate(LABELS)}
    return frame.apply(lambda c: c.map(lambda v: mapping.get(v, np.nan))).to_numpy(dtype=float)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("raters", [2, 3, 5])
def test_complete_ratings_match_all_three_libraries(seed, raters):
    frame = ratings(seed, raters=raters)
    r = vk.rater_agreement(frame)
    data = codes(frame)
    table, _ = aggregate_raters(data.astype(int))
    assert r.fleiss_kappa == pytest.approx(sm_fleiss(table), abs=1e-9)
    assert vk.fleiss_kappa(frame) == pytest.approx(sm_fleiss(table), abs=1e-9)
    expected = krippendorff.alpha(reliability_data=data.T, level_of_measurement="nominal")
    assert r.alpha == pytest.approx(expected, abs=1e-9)
    assert vk.krippendorff_alpha(frame) == pytest.approx(expected, abs=1e-9)
    assert r.n_complete == r.items == len(frame)
    for row in r.pairwise.itertuples():
        a, b = frame[row.rater_a], frame[row.rater_b]
        assert row.kappa == pytest.approx(cohen_kappa_score(a, b), abs=1e-9)
        assert row.agreement == pytest.approx((a == b).mean(), abs=1e-12)
        assert vk.cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b), abs=1e-9)
        assert row.n == len(frame)


@pytest.mark.parametrize("seed", [3, 4])
def test_missing_labels(seed):
    frame = ratings(seed, items=400, raters=4, missing=0.25)
    r = vk.rater_agreement(frame)
    data = codes(frame)
    # alpha uses every item with two or more labels, whoever gave them
    expected = krippendorff.alpha(reliability_data=data.T, level_of_measurement="nominal")
    assert r.alpha == pytest.approx(expected, abs=1e-9)
    assert r.items == int(((~np.isnan(data)).sum(1) >= 2).sum())
    # Fleiss' kappa: the complete items only (statsmodels refuses incomplete ones)
    complete = data[~np.isnan(data).any(axis=1)]
    assert r.n_complete == len(complete) < len(frame)
    assert r.fleiss_kappa == pytest.approx(
        sm_fleiss(aggregate_raters(complete.astype(int))[0]), abs=1e-9
    )
    with pytest.raises(AssertionError):  # what statsmodels does with missing ratings
        sm_fleiss(count_table(frame)[0])
    # Cohen's kappa per pair: the items both raters labelled
    for row in r.pairwise.itertuples():
        both = frame[[row.rater_a, row.rater_b]].dropna()
        assert row.n == len(both)
        expected = cohen_kappa_score(both[row.rater_a], both[row.rater_b])
        assert row.kappa == pytest.approx(expected, abs=1e-9)


def test_per_class_statistics():
    frame = ratings(5, items=500, raters=3, missing=0.1)
    r = vk.rater_agreement(frame)
    assert list(r.per_class.index) == LABELS
    table, labels = count_table(frame)
    complete = table[table.sum(1) == 3]
    for j, label in enumerate(labels):
        assert r.per_class.loc[label, "count"] == (frame == label).to_numpy().sum()
        # kappa_j is Fleiss' kappa of "label j or not" (complete items)
        binary = np.column_stack([complete[:, j], 3 - complete[:, j]])
        assert r.per_class.loc[label, "fleiss_kappa"] == pytest.approx(sm_fleiss(binary), abs=1e-9)
        # alpha of "label j or not", missing allowed
        data = codes(frame)
        yes = np.where(np.isnan(data), np.nan, (data == j).astype(float))
        expected = krippendorff.alpha(reliability_data=yes.T, level_of_measurement="nominal")
        assert r.per_class.loc[label, "alpha"] == pytest.approx(expected, abs=1e-9)


def test_krippendorff_default_is_interval_not_nominal():
    # Why we always pass level_of_measurement="nominal" to the oracle: its default differs.
    frame = ratings(6, raters=3)
    data = codes(frame).T
    nominal = krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")
    assert krippendorff.alpha(reliability_data=data) != pytest.approx(nominal, abs=1e-3)
    assert vk.krippendorff_alpha(frame) == pytest.approx(nominal, abs=1e-9)


def test_edge_cases():
    same = pd.DataFrame({"a": ["x", "y", "x"], "b": ["x", "y", "x"], "c": ["x", "y", "x"]})
    r = vk.rater_agreement(same)
    assert r.alpha == pytest.approx(1) and r.fleiss_kappa == pytest.approx(1)
    assert (r.pairwise["kappa"] == 1).all()
    one_label = pd.DataFrame({"a": ["x", "x"], "b": ["x", "x"]})
    assert math.isnan(vk.rater_agreement(one_label).alpha)
    assert math.isnan(vk.cohen_kappa(["x", "x"], ["x", "x"]))
    blank = pd.DataFrame({"a": ["x", " ", None, np.nan], "b": ["x", "y", "y", pd.NA]})
    r = vk.rater_agreement(blank)
    assert r.items == 1 and r.pairwise["n"].iloc[0] == 1  # blank, None, NaN, NA are missing
    with pytest.raises(ValueError, match="at least two raters"):
        vk.rater_agreement(same, raters=["a"])
    with pytest.raises(KeyError, match="nope"):
        vk.rater_agreement(same, raters=["a", "nope"])
    with pytest.raises(ValueError, match="equally long"):
        vk.cohen_kappa(["x"], ["x", "y"])
    r = vk.rater_agreement(ratings(8))
    assert r.kappa("rater1", "rater0") == r.kappa("rater0", "rater1")
    with pytest.raises(KeyError, match="no pair"):
        r.kappa("rater0", "nobody")
    assert "alpha" in repr(r) and "Fleiss" in r._repr_html_()


def test_human_vs_model_kappa_matches_sklearn():
    df = pd.DataFrame(
        {
            "label": ["cat", "cat", "dog", "dog", "bird", "cat", "dog", "bird", None],
            "answer": ["Cat.", "a dog", "dog", "Dog", "bird", "cat", "cat", "a bird", "cat"],
        }
    )
    r = vk.agreement(df, match="word")
    mapped = ["cat", "dog", "dog", "dog", "bird", "cat", "cat", "bird"]
    human = ["cat", "cat", "dog", "dog", "bird", "cat", "dog", "bird"]
    assert r.kappa == pytest.approx(cohen_kappa_score(human, mapped), abs=1e-9)
    assert r.per_class.loc["cat", ["truth", "answer", "both"]].tolist() == [3, 3, 2]
    assert "kappa" in repr(r)


def test_rater_plots_draw_and_return_axes():
    frame = ratings(7, raters=3, missing=0.1)
    r = vk.rater_agreement(frame)
    ax = vk.plot_rater_agreement(r)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["rater0", "rater1", "rater2"]
    shown = {t.get_text() for t in ax.texts}
    assert f"{r.kappa('rater0', 'rater1'):.2f}" in shown and "1.00" in shown
    assert "alpha" in ax.get_title()
    ax2 = vk.plot_class_agreement(frame)
    assert ax2.figure is not ax.figure  # a new figure each time
    assert len(ax2.patches) == 2 * len(LABELS)
    ax3 = vk.plot_rater_agreement(frame, statistic="agreement")
    assert ax3.get_title().startswith("agreement")
    with pytest.raises(ValueError, match="statistic"):
        vk.plot_rater_agreement(r, statistic="nope")
    plt.close("all")


def test_plot_agreement_draws_on_a_new_figure_not_the_current_one():
    # issue 8 item 13: called after another plot, it must not draw over that figure
    df = pd.DataFrame({"label": ["cat", "dog"], "answer": ["cat", "cat"]})
    usage_ax = vk.plot_token_curve()
    before = len(usage_ax.get_children())
    ax = vk.plot_agreement(df)
    assert ax is not usage_ax and ax.figure is not usage_ax.figure
    assert len(usage_ax.get_children()) == before
    assert ax.get_title().startswith("agreement 50%")
    assert vk.plot_agreement(None).figure is not ax.figure
    plt.close("all")
