"""How often a model's answers agree with human labels, and where they differ.

Usage:

    result = vk.agreement(df, truth="label", answer="answer")
    result.rate            # 0.87
    result.confusion       # true labels down, answers across, counts
    vk.plot_agreement(result)

Both sides are compared after ``normalise``: case folded, whitespace collapsed, and quotes and
trailing punctuation stripped, so ``"Cat."`` matches ``"cat"``. A model answer is free text, so
``match=`` decides when an answer counts as a label: ``"exact"`` (the default: equal after
normalising), ``"word"`` (the label appears as a whole word or phrase in the answer, so
``"It is a cat"`` matches ``"cat"``), or any ``callable(label, answer) -> bool``. An answer that
matches exactly one of the labels seen in ``truth`` is counted as that label in the confusion
table; any other answer keeps its normalised text as its own column.

Rows where either side is missing (NA, None or blank) are left out and counted in ``missing``.
Multi-label rows (``"a;b"``) compare as whole strings. ``kappa`` is Cohen's kappa of the same
pairs (the model's answer counted as the label it names, as in the confusion table), and
``per_class`` has, per label, how often each side gave it and Fleiss' kappa_j (see
``visionkit.annotation.reliability``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .reliability import rater_agreement

__all__ = ["Agreement", "agreement", "match_label", "normalise"]

Match = str | Callable[[str, str], bool]

_SPACE = re.compile(r"\s+")
_EDGES = " \t\n\"'`“”‘’.,;:!?()[]{}"


def normalise(value: Any) -> str | None:
    """``value`` as comparable text: case folded, whitespace collapsed, edges stripped.

    Missing values (None, NA, NaN, blank text) give ``None``.

    >>> normalise("  The Cat. ")
    'the cat'
    """
    if value is None or (np.ndim(value) == 0 and pd.isna(value)):
        return None
    text = _SPACE.sub(" ", str(value)).strip(_EDGES).casefold()
    return text or None


def _word_match(label: str, answer: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(label)}(?!\w)", answer) is not None


def _matcher(match: Match) -> Callable[[str, str], bool]:
    if callable(match):
        return match
    if match == "exact":
        return str.__eq__
    if match == "word":
        return _word_match
    raise ValueError(
        f"match must be one of ['exact', 'word'] or a callable, but {match!r} was passed"
    )


def match_label(answer: Any, labels: Iterable[str], match: Match = "word") -> str | None:
    """The one label ``answer`` names, or ``None`` (no label, or several).

    An exact match (after ``normalise``) wins; otherwise ``match`` decides (by default a
    label that appears as a whole word in the answer).

    >>> match_label("It looks like a Cat.", ["cat", "dog"])
    'cat'
    """
    said = normalise(answer)
    if said is None:
        return None
    labels = list(labels)
    for label in labels:
        if normalise(label) == said:
            return label
    test = _matcher(match)
    found = [o for o in labels if (n := normalise(o)) is not None and test(n, said)]
    return found[0] if len(found) == 1 else None


@dataclass(frozen=True, kw_only=True)
class Agreement:
    """The result of [`agreement`][visionkit.agreement].

    ``rate`` is ``matches / n`` (NaN when nothing could be compared), ``n`` the rows compared,
    ``missing`` the rows left out because a side was missing, ``confusion`` a DataFrame of
    counts with the true labels as rows and the answers as columns; ``truth`` and ``answer``
    name the two columns compared.
    """

    rate: float
    n: int
    matches: int
    missing: int
    confusion: pd.DataFrame
    truth: str = "label"
    answer: str = "answer"
    kappa: float = float("nan")
    per_class: pd.DataFrame | None = None

    def __repr__(self) -> str:
        return (
            f"Agreement(rate={self.rate:.3f}, kappa={self.kappa:.3f}, n={self.n}, "
            f"matches={self.matches}, missing={self.missing})"
        )

    def _repr_html_(self) -> str:
        head = (
            f"<p><b>agreement {self.rate:.1%}</b>, Cohen's kappa {self.kappa:.3f} "
            f"({self.matches} of {self.n} rows; {self.missing} left out with a side missing)</p>"
        )
        return head + self.confusion.to_html()


def agreement(
    data: pd.DataFrame,
    *,
    truth: str = "label",
    answer: str = "answer",
    match: Match = "exact",
) -> Agreement:
    """The agreement rate between ``data[truth]`` (the true labels) and ``data[answer]`` (a
    model's answers, or another annotator's labels), and a confusion table.

    See the module docstring for how text is normalised and what ``match`` does.
    """
    for name in (truth, answer):
        if name not in data.columns:
            raise KeyError(f"agreement: no column {name!r}; columns are {list(data.columns)}")
    test = _matcher(match)
    truths = [normalise(v) for v in data[truth]]
    answers = [normalise(v) for v in data[answer]]
    pairs = [
        (h, a) for h, a in zip(truths, answers, strict=True) if h is not None and a is not None
    ]
    missing = len(truths) - len(pairs)
    labels = sorted({h for h, _ in pairs})
    matches = 0
    rows, cols = [], []
    for h, a in pairs:
        if test(h, a):
            matches += 1
            said = h
        else:
            named = [lab for lab in labels if test(lab, a)]
            said = named[0] if len(named) == 1 else a
        rows.append(h)
        cols.append(said)
    n = len(pairs)
    others = sorted(set(cols) - set(labels))
    confusion = pd.crosstab(
        pd.Categorical(rows, categories=labels),
        pd.Categorical(cols, categories=labels + others),
        dropna=False,
    )
    confusion.index.name = truth
    confusion.columns.name = answer
    confusion.index = pd.Index(list(confusion.index), name=truth, dtype=object)
    confusion.columns = pd.Index(list(confusion.columns), name=answer, dtype=object)
    rate = matches / n if n else float("nan")
    kappa, per_class = float("nan"), None
    if n:
        stats = rater_agreement(pd.DataFrame({"truth": rows, "answer": cols}))
        kappa = stats.kappa("truth", "answer")
        per_class = _per_class(rows, cols, stats.per_class)
    return Agreement(
        rate=rate,
        n=n,
        matches=matches,
        missing=missing,
        confusion=confusion,
        truth=truth,
        answer=answer,
        kappa=kappa,
        per_class=per_class,
    )


def _per_class(rows: list[str], cols: list[str], stats: pd.DataFrame) -> pd.DataFrame:
    """Per label: how often the truth and the answer gave it, both at once, and Fleiss' kappa_j
    (for two raters: Scott's pi of "this label or not")."""
    given = pd.Series(rows).value_counts()
    said = pd.Series(cols).value_counts()
    both = pd.Series([h for h, c in zip(rows, cols, strict=True) if h == c]).value_counts()
    labels = list(stats.index)
    table = pd.DataFrame(
        {
            "truth": given.reindex(labels, fill_value=0).to_numpy(),
            "answer": said.reindex(labels, fill_value=0).to_numpy(),
            "both": both.reindex(labels, fill_value=0).to_numpy(),
            "fleiss_kappa": stats["fleiss_kappa"].to_numpy(),
        },
        index=pd.Index(labels, name="label", dtype=object),
    )
    return table
