"""Chance-corrected agreement between raters (people or a model) on nominal labels.

Usage:

    wide = ann.by_annotator()            # one column per annotator, NA where one gave no label
    r = vk.rater_agreement(wide)         # or pass raters=["ann", "bob", "model"]
    r.alpha, r.fleiss_kappa              # Krippendorff's alpha (missing allowed), Fleiss' kappa
    r.pairwise                           # Cohen's kappa and raw agreement for each pair
    r.per_class                          # per label: Fleiss' kappa_j and one-vs-rest alpha
    vk.plot_rater_agreement(r)           # pairwise kappa as a heatmap

The three statistics, computed here from one table of counts (items x labels), vectorised:

- **Cohen's kappa** (two raters): ``(p_o - p_e) / (1 - p_e)`` over the items both rated, with
  ``p_e`` from each rater's own label frequencies (as ``sklearn.metrics.cohen_kappa_score``).
- **Fleiss' kappa** (any number of raters): over the items *every* rater labelled (it is not
  defined with missing labels; ``n_complete`` says how many items that left), with chance from
  the pooled label frequencies (as ``statsmodels.stats.inter_rater.fleiss_kappa``). Per class,
  Fleiss' (1971) ``kappa_j = 1 - sum_i n_ij (m - n_ij) / (N m (m - 1) p_j q_j)``.
- **Krippendorff's alpha**, nominal: every item with at least two labels counts, whoever gave
  them (``1 - D_o / D_e`` from the coincidence matrix, as the ``krippendorff`` package). Per
  class, alpha of "this label or not".

The tests check all of them against scikit-learn, statsmodels and ``krippendorff`` to 1e-9.
Two things about those libraries surprised us: ``krippendorff.alpha`` defaults to
``level_of_measurement="interval"`` (label codes treated as numbers: pass ``"nominal"``), and
``statsmodels``' ``fleiss_kappa`` fails with a bare ``AssertionError`` when any item misses a
rating; here Fleiss' kappa is computed on the complete items and says how many there were.

Labels are compared as they are (no case folding); a value that is NA, None or blank text is a
missing label. A statistic that is undefined (a single label used by everyone, fewer than two
items) is NaN.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "RaterAgreement",
    "cohen_kappa",
    "count_table",
    "fleiss_kappa",
    "krippendorff_alpha",
    "rater_agreement",
]


def _codes(frame: pd.DataFrame) -> tuple[np.ndarray, list[Any]]:
    """Integer codes (-1 for missing) of every cell, and the labels they stand for, sorted.

    Each column is factorised on its own (no copy to one object array: pandas' string columns
    hash fast where they are), then the few distinct labels are merged.
    """
    per_column = [pd.factorize(frame.iloc[:, j]) for j in range(frame.shape[1])]
    seen: dict[Any, None] = {}
    for _, uniques in per_column:
        for value in uniques:
            if not (isinstance(value, str) and not value.strip()):  # blank text is missing
                seen.setdefault(value, None)
    try:
        labels = sorted(seen)
    except TypeError:  # mixed types (e.g. 1 and "1") that do not sort: order as they came
        labels = list(seen)
    where = {value: i for i, value in enumerate(labels)}
    codes = np.empty(frame.shape, dtype=np.intp)
    for j, (col_codes, uniques) in enumerate(per_column):
        remap = np.array([where.get(v, -1) for v in uniques] + [-1], dtype=np.intp)
        codes[:, j] = remap[col_codes]  # code -1 (missing) picks the trailing -1
    return codes, labels


def count_table(data: pd.DataFrame | np.ndarray) -> tuple[np.ndarray, list[Any]]:
    """Items x labels counts: how many raters gave each item each label (missing ones skipped).

    ``data`` has one row per item and one column per rater. Returns the table and the labels
    (its columns), sorted.
    """
    frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(np.asarray(data, dtype=object))
    codes, labels = _codes(frame)
    n_items, k = codes.shape[0], len(labels)
    rows = np.repeat(np.arange(n_items), codes.shape[1])
    flat = codes.ravel()
    keep = flat >= 0
    table = np.bincount(rows[keep] * k + flat[keep], minlength=n_items * k)
    return table.reshape(n_items, k), labels


def _kappa_from_table(table: np.ndarray) -> float:
    """Cohen's kappa from a square contingency table (rater 1 down, rater 2 across)."""
    n = table.sum()
    if n == 0:
        return float("nan")
    p_o = np.trace(table) / n
    p_e = float(table.sum(0) @ table.sum(1)) / (n * n)
    return float((p_o - p_e) / (1 - p_e)) if p_e != 1 else float("nan")


def cohen_kappa(rater_a: Sequence[Any] | pd.Series, rater_b: Sequence[Any] | pd.Series) -> float:
    """Cohen's kappa of two raters' labels for the same items (items either left out skipped)."""
    if len(rater_a) != len(rater_b):
        raise ValueError(
            f"cohen_kappa needs two equally long label lists, not {len(rater_a)} and {len(rater_b)}"
        )
    frame = pd.DataFrame({"a": list(rater_a), "b": list(rater_b)})
    codes, labels = _codes(frame)
    both = (codes >= 0).all(axis=1)
    k = len(labels)
    pair = codes[both]
    table = np.bincount(pair[:, 0] * k + pair[:, 1], minlength=k * k).reshape(k, k)
    return _kappa_from_table(table)


def fleiss_kappa(data: pd.DataFrame | np.ndarray) -> float:
    """Fleiss' kappa of the items every rater labelled (rows: items, columns: raters)."""
    table, _ = count_table(data)
    return _fleiss(table, np.asarray(data).shape[1])[0]


def _fleiss(table: np.ndarray, raters: int) -> tuple[float, np.ndarray, int]:
    """Overall and per-class Fleiss' kappa over the complete rows of ``table``."""
    complete = table[table.sum(1) == raters]
    n_items, k = complete.shape
    if n_items == 0 or raters < 2:
        return float("nan"), np.full(k, np.nan), n_items
    m = float(raters)
    p = complete.sum(0) / (n_items * m)
    agree = ((complete * complete).sum(1) - m) / (m * (m - 1))
    p_e = float(p @ p)
    overall = (agree.mean() - p_e) / (1 - p_e) if p_e != 1 else float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        per = 1 - (complete * (m - complete)).sum(0) / (n_items * m * (m - 1) * p * (1 - p))
    return float(overall), per, n_items


def krippendorff_alpha(data: pd.DataFrame | np.ndarray) -> float:
    """Krippendorff's alpha for nominal labels (rows: items, columns: raters; NA = missing)."""
    table, _ = count_table(data)
    return _alpha(table)


def _alpha(table: np.ndarray) -> float:
    """Nominal alpha from an items x labels count table (items with fewer than 2 labels drop)."""
    m = table.sum(1)
    pairable = table[m >= 2].astype(float)
    if not len(pairable):
        return float("nan")
    mu = pairable.sum(1)
    n_c = pairable.sum(0)
    n = n_c.sum()
    observed_same = ((pairable * (pairable - 1)).sum(1) / (mu - 1)).sum()  # sum_c o_cc
    expected_diff = n * n - float(n_c @ n_c)  # sum_{c != k} n_c n_k
    if expected_diff == 0:
        return float("nan")
    return float(1 - (n - 1) * (n - observed_same) / expected_diff)


def _alpha_per_class(table: np.ndarray) -> np.ndarray:
    """Alpha of "label j or not" for each label j, all at once (the 2-label case of _alpha)."""
    m = table.sum(1)
    keep = m >= 2
    yes = table[keep].astype(float)
    if not len(yes):
        return np.full(table.shape[1], np.nan)
    mu = m[keep].astype(float)[:, None]
    no = mu - yes
    n = float(mu.sum())
    observed_same = ((yes * (yes - 1) + no * (no - 1)) / (mu - 1)).sum(0)
    total_yes = yes.sum(0)
    expected_diff = n * n - total_yes**2 - (n - total_yes) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(
            expected_diff > 0, 1 - (n - 1) * (n - observed_same) / expected_diff, np.nan
        )


@dataclass(frozen=True, kw_only=True)
class RaterAgreement:
    """The result of [`rater_agreement`][visionkit.rater_agreement] (see the module docstring
    for the statistics).

    ``raters`` the columns compared; ``items`` the rows with at least two labels (what alpha
    uses); ``n_complete`` the rows every rater labelled (what Fleiss' kappa uses);
    ``pairwise`` one row per pair of raters: ``n`` items both labelled, ``agreement`` the share
    on which they agree, ``kappa`` Cohen's kappa; ``per_class`` one row per label: ``count`` of
    labels given, ``fleiss_kappa`` (kappa_j) and ``alpha`` (one-vs-rest); ``confusions`` a
    contingency table per pair (first rater down).
    """

    raters: list[str]
    alpha: float
    fleiss_kappa: float
    items: int
    n_complete: int
    pairwise: pd.DataFrame
    per_class: pd.DataFrame
    confusions: dict[tuple[str, str], pd.DataFrame] = field(repr=False, default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"RaterAgreement(raters={self.raters}, alpha={self.alpha:.3f}, "
            f"fleiss_kappa={self.fleiss_kappa:.3f}, items={self.items}, "
            f"n_complete={self.n_complete})"
        )

    def _repr_html_(self) -> str:
        head = (
            f"<p><b>Krippendorff's alpha {self.alpha:.3f}</b> over {self.items:,} items; "
            f"<b>Fleiss' kappa {self.fleiss_kappa:.3f}</b> over the {self.n_complete:,} items "
            f"all {len(self.raters)} raters labelled</p>"
        )
        return head + self.pairwise.to_html(float_format="{:.3f}".format)

    def kappa(self, rater_a: str, rater_b: str) -> float:
        """Cohen's kappa of raters ``rater_a`` and ``rater_b``."""
        a, b = rater_a, rater_b
        row = self.pairwise[
            ((self.pairwise["rater_a"] == a) & (self.pairwise["rater_b"] == b))
            | ((self.pairwise["rater_a"] == b) & (self.pairwise["rater_b"] == a))
        ]
        if row.empty:
            raise KeyError(f"no pair ({a!r}, {b!r}) among the raters {self.raters}")
        return float(row["kappa"].iloc[0])


def rater_agreement(data: pd.DataFrame, *, raters: Sequence[str] | None = None) -> RaterAgreement:
    """Agreement of two or more raters' labels: one column per rater, one row per item.

    ``raters`` picks the rater columns (default: every column). Missing labels are allowed; see the
    module docstring for what each statistic does with them.
    """
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"rater_agreement needs a DataFrame, not {type(data).__name__}")
    raters = list(data.columns if raters is None else raters)
    absent = [c for c in raters if c not in data.columns]
    if absent:
        raise KeyError(f"rater_agreement: no column {absent}; columns are {list(data.columns)}")
    if len(raters) < 2:
        raise ValueError(f"rater_agreement needs at least two raters, not {raters}")
    frame = data[raters]
    codes, labels = _codes(frame)
    k, n_items = len(labels), len(frame)
    rows = np.repeat(np.arange(n_items), len(raters))
    flat = codes.ravel()
    keep = flat >= 0
    table = np.bincount(rows[keep] * k + flat[keep], minlength=n_items * k).reshape(n_items, k)
    fleiss, fleiss_per, n_complete = _fleiss(table, len(raters))
    pairs, confusions = [], {}
    for i, j in itertools.combinations(range(len(raters)), 2):
        both = (codes[:, i] >= 0) & (codes[:, j] >= 0)
        cont = np.bincount(codes[both, i] * k + codes[both, j], minlength=k * k).reshape(k, k)
        n = int(both.sum())
        pairs.append(
            {
                "rater_a": str(raters[i]),
                "rater_b": str(raters[j]),
                "n": n,
                "agreement": np.trace(cont) / n if n else float("nan"),
                "kappa": _kappa_from_table(cont),
            }
        )
        confusions[(str(raters[i]), str(raters[j]))] = pd.DataFrame(
            cont,
            index=pd.Index(labels, name=str(raters[i]), dtype=object),
            columns=pd.Index(labels, name=str(raters[j]), dtype=object),
        )
    per_class = pd.DataFrame(
        {
            "count": table.sum(0),
            "fleiss_kappa": fleiss_per,
            "alpha": _alpha_per_class(table),
        },
        index=pd.Index(labels, name="label", dtype=object),
    )
    return RaterAgreement(
        raters=[str(r) for r in raters],
        alpha=_alpha(table),
        fleiss_kappa=fleiss,
        items=int((table.sum(1) >= 2).sum()),
        n_complete=n_complete,
        pairwise=pd.DataFrame(pairs, columns=["rater_a", "rater_b", "n", "agreement", "kappa"]),
        per_class=per_class,
        confusions=confusions,
    )
