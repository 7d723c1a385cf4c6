"""How often a model's answers agree with human labels, and where they differ.

Usage::

    result = vk.agreement(df, human="label", model="answer")
    result.rate            # 0.87
    result.confusion       # human labels down, model answers across, counts
    vk.plot_agreement(result)

Both sides are compared after ``normalise``: case folded, whitespace collapsed, and quotes and
trailing punctuation stripped, so ``"Cat."`` matches ``"cat"``. A model answer is free text, so
``match=`` decides when an answer counts as a label: ``"exact"`` (the default: equal after
normalising), ``"word"`` (the label appears as a whole word or phrase in the answer, so
``"It is a cat"`` matches ``"cat"``), or any ``callable(label, answer) -> bool``. An answer that
matches exactly one of the labels seen in ``human`` is counted as that label in the confusion
table; any other answer keeps its normalised text as its own column.

Rows where either side is missing (NA, None or blank) are left out and counted in ``missing``.
Multi-label rows (``"a;b"``) compare as whole strings.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["Agreement", "agreement", "match_option", "normalise", "plot_agreement"]

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


def match_option(answer: Any, options: Iterable[str], match: Match = "word") -> str | None:
    """The one option ``answer`` names, or ``None`` (no option, or several).

    An exact match (after ``normalise``) wins; otherwise ``match`` decides (by default an
    option that appears as a whole word in the answer).

    >>> match_option("It looks like a Cat.", ["cat", "dog"])
    'cat'
    """
    said = normalise(answer)
    if said is None:
        return None
    options = list(options)
    for option in options:
        if normalise(option) == said:
            return option
    test = _matcher(match)
    found = [o for o in options if normalise(o) is not None and test(normalise(o), said)]
    return found[0] if len(found) == 1 else None


@dataclass(frozen=True)
class Agreement:
    """The result of :func:`agreement`.

    ``rate`` is ``matches / n`` (NaN when nothing could be compared), ``n`` the rows compared,
    ``missing`` the rows left out because a side was missing, ``confusion`` a DataFrame of
    counts with human labels as rows and model answers as columns.
    """

    rate: float
    n: int
    matches: int
    missing: int
    confusion: pd.DataFrame
    human: str = "label"
    model: str = "answer"

    def __repr__(self) -> str:
        return (
            f"Agreement(rate={self.rate:.3f}, n={self.n}, matches={self.matches}, "
            f"missing={self.missing})"
        )

    def _repr_html_(self) -> str:
        head = (
            f"<p><b>agreement {self.rate:.1%}</b> ({self.matches} of {self.n} rows; "
            f"{self.missing} left out with a side missing)</p>"
        )
        return head + self.confusion.to_html()


def agreement(
    df: pd.DataFrame,
    human: str = "label",
    model: str = "answer",
    *,
    match: Match = "exact",
) -> Agreement:
    """The agreement rate between ``df[human]`` and ``df[model]``, and a confusion table.

    See the module docstring for how text is normalised and what ``match`` does.
    """
    for name in (human, model):
        if name not in df.columns:
            raise KeyError(f"agreement: no column {name!r}; columns are {list(df.columns)}")
    test = _matcher(match)
    humans = [normalise(v) for v in df[human]]
    answers = [normalise(v) for v in df[model]]
    pairs = [
        (h, a) for h, a in zip(humans, answers, strict=True) if h is not None and a is not None
    ]
    missing = len(humans) - len(pairs)
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
    confusion.index.name = human
    confusion.columns.name = model
    confusion.index = pd.Index(list(confusion.index), name=human, dtype=object)
    confusion.columns = pd.Index(list(confusion.columns), name=model, dtype=object)
    rate = matches / n if n else float("nan")
    return Agreement(
        rate=rate,
        n=n,
        matches=matches,
        missing=missing,
        confusion=confusion,
        human=human,
        model=model,
    )


def plot_agreement(
    data: pd.DataFrame | Agreement | None = None,
    *,
    human: str = "label",
    model: str = "answer",
    match: Match = "exact",
    ax: Axes | None = None,
    cmap: str = "Blues",
    **kwargs: Any,
) -> Axes:
    """Draw the confusion table of :func:`agreement` with the counts written in each cell.

    ``data`` is a DataFrame (``human``/``model``/``match`` as for ``agreement``) or an
    ``Agreement``. Extra keyword arguments go to ``ax.imshow``. Returns the Axes.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        ax = plt.gca()
    if data is None:
        return ax
    result = data if isinstance(data, Agreement) else agreement(data, human, model, match=match)
    table = result.confusion
    if table.empty:
        ax.set_title("agreement: nothing to compare")
        return ax
    counts = table.to_numpy()
    kwargs.setdefault("aspect", "auto")
    ax.imshow(counts, cmap=cmap, **kwargs)
    ax.set_xticks(range(counts.shape[1]), [str(c) for c in table.columns], rotation=45, ha="right")
    ax.set_yticks(range(counts.shape[0]), [str(r) for r in table.index])
    ax.set_xlabel("model" if result.model == "model" else f"model ({result.model})")
    ax.set_ylabel("human" if result.human == "human" else f"human ({result.human})")
    limit = counts.max() if counts.size else 0
    for (i, j), value in np.ndenumerate(counts):
        dark = limit and value > limit / 2
        ax.text(
            j,
            i,
            f"{value:d}",
            ha="center",
            va="center",
            color="white" if dark else "black",
            fontsize=9,
        )
    for k in range(min(counts.shape)):  # outline the diagonal: where they agree
        ax.add_patch(
            plt.Rectangle((k - 0.5, k - 0.5), 1, 1, fill=False, lw=1.2, edgecolor="#e07b00")
        )
    ax.set_title(
        f"agreement {result.rate:.0%} (n={result.n}"
        + (f", {result.missing} missing)" if result.missing else ")")
    )
    return ax
