"""agreement / plot_agreement: rates, confusion tables, missing rows, matching rules."""

from __future__ import annotations

import math

import matplotlib
import pandas as pd
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import visionkit as vk
from visionkit.annotation.agreement import match_label, normalise


@pytest.fixture
def df():
    return pd.DataFrame(
        {
            "label": ["cat", "cat", "Dog", "dog", "bird", None, "cat", ""],
            "answer": ["Cat.", " cat ", "dog", "a dog", "cat", "cat", None, "dog"],
        }
    )


def test_rate_confusion_and_missing(df):
    result = vk.agreement(df)
    assert (result.n, result.missing, result.matches) == (5, 3, 3)
    assert result.rate == pytest.approx(3 / 5)
    c = result.confusion
    assert list(c.index) == ["bird", "cat", "dog"]
    assert list(c.columns) == ["bird", "cat", "dog", "a dog"]
    assert c.loc["cat", "cat"] == 2 and c.loc["dog", "dog"] == 1
    assert c.loc["dog", "a dog"] == 1 and c.loc["bird", "cat"] == 1
    assert c.to_numpy().sum() == result.n
    assert "60.0%" in result._repr_html_()


def test_word_match_and_callable(df):
    word = vk.agreement(df, match="word")
    assert word.matches == 4 and list(word.confusion.columns) == ["bird", "cat", "dog"]
    first_letter = vk.agreement(df, match=lambda label, answer: label[0] == answer[0])
    assert first_letter.matches == 3  # "dog" vs "a dog" differs at the first letter
    with pytest.raises(ValueError, match="match must be one of"):
        vk.agreement(df, match="fuzzy")


def test_nothing_to_compare_and_missing_columns():
    empty = vk.agreement(pd.DataFrame({"label": [None], "answer": ["x"]}))
    assert empty.n == 0 and empty.missing == 1 and math.isnan(empty.rate)
    with pytest.raises(KeyError, match="'answer'"):
        vk.agreement(pd.DataFrame({"label": ["a"]}))


def test_normalise_and_match_label():
    assert normalise("  The   Cat. ") == "the cat"
    assert normalise("  ") is None and normalise(float("nan")) is None
    assert match_label("It looks like a Cat.", ["cat", "dog"]) == "cat"
    assert match_label("a cat and a dog", ["cat", "dog"]) is None  # names two
    assert match_label("catalogue", ["cat"]) is None  # whole words only
    assert match_label("DOG", ["cat", "dog"]) == "dog"


def test_plot_agreement_draws_counts_and_returns_the_axes(df):
    _fig, ax = plt.subplots()
    out = vk.plot_agreement(df, ax=ax)
    assert out is ax
    texts = [t.get_text() for t in ax.texts]
    assert texts.count("2") == 1 and len(texts) == 3 * 4
    assert ax.get_title().startswith("agreement 60%")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["bird", "cat", "dog"]
    assert len(ax.images) == 1
    # An Agreement can be passed directly; empty data still returns the axes.
    _fig2, ax2 = plt.subplots()
    assert vk.plot_agreement(vk.agreement(df), ax=ax2) is ax2
    _fig3, ax3 = plt.subplots()
    assert vk.plot_agreement(df.iloc[:0], ax=ax3) is ax3 and not ax3.images
    plt.close("all")
