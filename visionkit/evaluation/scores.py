"""The numbers an evaluation reports, computed without a figure (numpy only).

**Agreement with the truth**, over the rows a configuration answered: accuracy, Cohen's kappa
and macro-F1, as scikit-learn computes them (``accuracy_score``, ``cohen_kappa_score``,
``f1_score(labels=<the truth's labels>, average="macro")``; the tests hold them equal). Labels
are integer codes: the truth's labels first (``0 .. n_labels - 1``), then one code per other
answer, so an answer naming no label is a wrong answer of its own class, and macro-F1 averages
over the truth's labels only (a label nobody gave nor said scores 0, as in scikit-learn).

**Intervals** are percentile bootstrap intervals: the rows are resampled with replacement
``resamples`` times and each statistic's ``(1 - confidence) / 2`` and ``(1 + confidence) / 2``
quantiles over the resamples are its bounds. It is vectorised: every statistic here is a sum
over rows (a confusion matrix; per-item counts for the raters), so a resample is a vector of
weights (how often each row was drawn) and all resamples at once are one matrix product. The
same ``seed`` gives the same intervals.

**Paired comparison**: McNemar's exact test on the rows two configurations both answered, as
``statsmodels.stats.contingency_tables.mcnemar(table, exact=True)``: the statistic is the
smaller of the two discordant counts, the p-value twice its binomial tail at 1/2 (at most 1).

**The human ceiling**: Fleiss' kappa (over the items every rater labelled), Krippendorff's
alpha (nominal, over items with at least two labels) and the raters' observed pairwise
agreement, equal to [`rater_agreement`][visionkit.rater_agreement]'s, with intervals from
resampling items.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "CONFIDENCE",
    "METRICS",
    "NO_LABEL",
    "RESAMPLES",
    "McNemar",
    "agreement_scores",
    "bootstrap_scores",
    "ceiling_scores",
    "label_codes",
    "mcnemar_exact",
    "pareto_mask",
    "resample_weights",
]

CONFIDENCE = 0.95
RESAMPLES = 2000
METRICS = ("accuracy", "kappa", "macro_f1")
NO_LABEL = "<no label>"  # what an answer that names none of the truth's labels is counted as
_CELLS_PER_BLOCK = 2_000_000  # resample weights held at once: (resamples in a block) x rows


def label_codes(
    truth: Sequence[Any], answers: Sequence[Any], labels: Sequence[Any]
) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer codes for the truth and the answers, and how many classes there are in all.

    ``labels`` (the truth's labels, in order) get ``0 .. len(labels) - 1``; any other answer
    gets a code of its own after them, in order of first appearance. Every truth value must be
    one of ``labels``.
    """
    where = {label: i for i, label in enumerate(labels)}
    y = np.array([where[t] for t in truth], dtype=np.intp)
    codes = []
    for a in answers:
        if a not in where:
            where[a] = len(where)
        codes.append(where[a])
    return y, np.array(codes, dtype=np.intp), len(where)


def _from_confusion(conf: np.ndarray, n_labels: int) -> dict[str, np.ndarray]:
    """Accuracy, Cohen's kappa and macro-F1 from confusion matrices ``(..., k, k)`` (truth
    down, answer across). Undefined values (no rows; a kappa whose chance agreement is 1) are
    NaN."""
    n = conf.sum(axis=(-2, -1)).astype(float)
    diag = np.diagonal(conf, axis1=-2, axis2=-1).astype(float)
    rows = conf.sum(axis=-1).astype(float)  # truth counts
    cols = conf.sum(axis=-2).astype(float)  # answer counts
    with np.errstate(divide="ignore", invalid="ignore"):
        accuracy = diag.sum(-1) / n
        expected = (rows * cols).sum(-1) / (n * n)
        kappa = np.where(expected < 1, (accuracy - expected) / (1 - expected), np.nan)
        tp, both = diag[..., :n_labels], rows[..., :n_labels] + cols[..., :n_labels]
        f1 = np.where(both > 0, 2 * tp / np.where(both > 0, both, 1), 0.0)
    macro_f1 = np.where(n > 0, f1.mean(-1), np.nan)
    return {"accuracy": accuracy, "kappa": kappa, "macro_f1": macro_f1}


def agreement_scores(y: np.ndarray, p: np.ndarray, n_labels: int, k: int) -> dict[str, float]:
    """Accuracy, Cohen's kappa and macro-F1 of answers ``p`` against truth ``y`` (codes)."""
    conf = np.bincount(y * k + p, minlength=k * k).reshape(k, k)
    return {name: float(v) for name, v in _from_confusion(conf, n_labels).items()}


def _blocks(n: int, resamples: int, seed: int | None) -> Iterator[np.ndarray]:
    """Bootstrap resamples of ``n`` rows, as blocks of drawn row numbers ``(block, n)``
    (each resample draws ``n`` rows with replacement). Blocks bound the memory."""
    rng = np.random.default_rng(seed)
    block = max(1, min(resamples, _CELLS_PER_BLOCK // max(n, 1)))
    done = 0
    while done < resamples:
        size = min(block, resamples - done)
        yield rng.integers(0, n, size=(size, n))
        done += size


def resample_weights(n: int, resamples: int, seed: int | None) -> Iterator[np.ndarray]:
    """The same resamples as weights ``(block, n)``: how often each row was drawn."""
    for drawn in _blocks(n, resamples, seed):
        size = len(drawn)
        offsets = (np.arange(size) * n)[:, None]
        yield np.bincount((drawn + offsets).ravel(), minlength=size * n).reshape(size, n)


def _bounds(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """The percentile interval of bootstrap values (NaN resamples left out)."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return float("nan"), float("nan")
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_scores(
    y: np.ndarray,
    p: np.ndarray,
    n_labels: int,
    k: int,
    *,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int | None = 0,
) -> dict[str, tuple[float, float]]:
    """Each metric's bootstrap interval ``(low, high)`` over the rows (see the module doc)."""
    n = len(y)
    if n == 0:
        return {name: (float("nan"), float("nan")) for name in METRICS}
    cells = y * k + p  # each row's place in the confusion matrix
    parts: dict[str, list[np.ndarray]] = {name: [] for name in METRICS}
    for drawn in _blocks(n, resamples, seed):
        size = len(drawn)
        offsets = (np.arange(size) * (k * k))[:, None]
        conf = np.bincount((cells[drawn] + offsets).ravel(), minlength=size * k * k)
        for name, values in _from_confusion(conf.reshape(size, k, k), n_labels).items():
            parts[name].append(values)
    return {name: _bounds(np.concatenate(v), confidence) for name, v in parts.items()}


@dataclass(frozen=True)
class McNemar:
    """McNemar's exact test of two configurations on the rows both answered.

    ``a_only``: rows ``a`` got right and ``b`` wrong; ``b_only`` the reverse; ``statistic``
    the smaller of the two; ``pvalue`` the two-sided exact binomial p-value.
    """

    a: str
    b: str
    n: int
    a_only: int
    b_only: int
    statistic: int
    pvalue: float
    alpha: float = 0.05

    @property
    def differ(self) -> bool:
        """Whether the difference is significant at ``alpha``."""
        return self.pvalue < self.alpha

    def describe(self) -> str:
        """One line: whether the two configurations differ, and on how many rows."""
        if not self.a_only + self.b_only:
            return f"{self.a!r} and {self.b!r} were right and wrong on the same {self.n} rows"
        verdict = "differ" if self.differ else "do not differ measurably"
        return (
            f"{self.a!r} and {self.b!r} {verdict} (McNemar's exact test, p = "
            f"{self.pvalue:.3g}, {self.n} rows both answered): only {self.a!r} was right on "
            f"{self.a_only}, only {self.b!r} on {self.b_only}"
        )

    def __repr__(self) -> str:
        return (
            f"McNemar(a={self.a!r}, b={self.b!r}, n={self.n}, a_only={self.a_only}, "
            f"b_only={self.b_only}, pvalue={self.pvalue:.4g})"
        )


def mcnemar_exact(
    a_right: np.ndarray, b_right: np.ndarray, *, a: str = "a", b: str = "b", alpha: float = 0.05
) -> McNemar:
    """McNemar's exact test from two boolean vectors: row by row, was each configuration right."""
    a_right, b_right = np.asarray(a_right, dtype=bool), np.asarray(b_right, dtype=bool)
    a_only = int((a_right & ~b_right).sum())
    b_only = int((~a_right & b_right).sum())
    low, total = min(a_only, b_only), a_only + b_only
    tail = sum(math.comb(total, i) for i in range(low + 1))  # P(X <= low), X ~ Bin(total, 1/2)
    pvalue = min(1.0, 2 * tail / 2**total)
    return McNemar(a, b, len(a_right), a_only, b_only, low, pvalue, alpha)


def _rater_parts(table: np.ndarray, raters: int) -> dict[str, np.ndarray]:
    """Per-item terms whose weighted sums give Fleiss' kappa, alpha and observed agreement."""
    table = table.astype(float)
    m = table.sum(1)
    complete = m == raters
    pairable = m >= 2
    with np.errstate(divide="ignore", invalid="ignore"):
        same = (table * (table - 1)).sum(1)  # ordered pairs of raters agreeing on the item
        agree = np.where(pairable, same / (m * (m - 1)), 0.0)
        o = np.where(pairable, same / (m - 1), 0.0)  # the item's sum_c o_cc (alpha)
    return {
        "complete": complete.astype(float),
        "fleiss_agree": np.where(complete, agree, 0.0),
        "fleiss_counts": table * complete[:, None],
        "pairable": pairable.astype(float),
        "agree": agree,
        "alpha_counts": table * pairable[:, None],
        "alpha_o": o,
    }


def _rater_stats(weights: np.ndarray, parts: dict[str, np.ndarray], raters: int) -> dict[str, Any]:
    """Fleiss' kappa, alpha and observed agreement for weight vectors ``(B, items)``."""
    w = np.atleast_2d(weights).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        n_complete = w @ parts["complete"]
        p = (w @ parts["fleiss_counts"]) / (n_complete * raters)[:, None]
        p_bar = (w @ parts["fleiss_agree"]) / n_complete
        p_e = (p * p).sum(1)
        fleiss = np.where((n_complete > 0) & (p_e < 1), (p_bar - p_e) / (1 - p_e), np.nan)
        n_c = w @ parts["alpha_counts"]
        n = n_c.sum(1)
        expected_diff = n * n - (n_c * n_c).sum(1)
        observed_same = w @ parts["alpha_o"]
        alpha = np.where(
            expected_diff > 0, 1 - (n - 1) * (n - observed_same) / expected_diff, np.nan
        )
        agreement = (w @ parts["agree"]) / (w @ parts["pairable"])
    return {"fleiss_kappa": fleiss, "alpha": alpha, "agreement": agreement}


def ceiling_scores(
    table: np.ndarray,
    raters: int,
    *,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int | None = 0,
) -> dict[str, tuple[float, float, float]]:
    """The raters' agreement from an items x labels count table: for Fleiss' kappa, alpha and
    observed agreement, ``(estimate, low, high)`` (see the module docstring)."""
    parts = _rater_parts(table, raters)
    items = table.shape[0]
    point = _rater_stats(np.ones(items), parts, raters)
    out: dict[str, tuple[float, float, float]] = {}
    if items == 0:
        nan = float("nan")
        return {name: (nan, nan, nan) for name in point}
    blocks: dict[str, list[np.ndarray]] = {name: [] for name in point}
    for weights in resample_weights(items, resamples, seed):
        for name, values in _rater_stats(weights, parts, raters).items():
            blocks[name].append(values)
    for name, values in point.items():
        low, high = _bounds(np.concatenate(blocks[name]), confidence)
        out[name] = (float(values[0]), low, high)
    return out


def pareto_mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Which points are on the Pareto front of lower ``x`` and higher ``y``: no other point is
    at least as good on both and better on one. NaN points are never on it."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    front = np.zeros(len(x), dtype=bool)
    for i in np.flatnonzero(ok):
        better = ok & (x <= x[i]) & (y >= y[i]) & ((x < x[i]) | (y > y[i]))
        front[i] = not better.any()
    return front
