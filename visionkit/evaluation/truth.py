"""Where an evaluation's truth comes from, and which rows it is measured on.

``resolve_truth`` turns ``truth=`` (a column of human labels), ``raters=`` (several rater
columns) or ``annotations=`` (the team annotators' long-form save file, or the frame
``vk.read_annotations`` gives) into one label per row and, when several people labelled, the
raters' labels side by side for the human ceiling. With several raters and no ``truth=`` column
the truth is their consensus: the label most of them gave; an item whose raters tie has no
consensus and is left out (counted in ``Evaluation.no_consensus``).

``stratified_sample`` draws ``sample=N`` of the labelled rows, each label in proportion to
how often it is the truth (largest remainders; every label at least once when ``N`` allows),
seeded, in the frame's order.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["Truth", "consensus", "resolve_truth", "stratified_sample"]


@dataclass(frozen=True)
class Truth:
    """One label per row of the frame (``None``: unlabelled), the raters' labels side by side
    (``None`` without several raters) and a phrase saying where the truth came from."""

    labels: pd.Series
    raters: pd.DataFrame | None
    source: str
    no_consensus: int = 0


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def consensus(raters: pd.DataFrame) -> tuple[pd.Series, int]:
    """The label most raters gave each row (``None`` for none or a tie), and how many tied."""
    out: list[Any] = []
    ties = 0
    for values in raters.itertuples(index=False):
        given = [v for v in values if not _missing(v)]
        if not given:
            out.append(None)
            continue
        counts = pd.Series(given, dtype=object).value_counts()
        if len(counts) > 1 and counts.iloc[0] == counts.iloc[1]:
            ties += 1
            out.append(None)
        else:
            out.append(counts.index[0])
    return pd.Series(out, index=raters.index, dtype=object), ties


def _from_annotations(
    data: pd.DataFrame,
    annotations: str | os.PathLike[str] | pd.DataFrame | Sequence[str | os.PathLike[str]],
    label_column: str,
) -> pd.DataFrame:
    """The save file's labels as one column per annotator, on ``data``'s rows (matched by the
    index label as text, as the annotators write it)."""
    if isinstance(annotations, pd.DataFrame):
        long = annotations
    else:
        from ..annotation import read_annotations

        long = read_annotations(annotations)
    needed = ["index", "annotator", label_column]
    absent = [c for c in needed if c not in long.columns]
    if absent:
        raise KeyError(
            f"annotations= has no column {absent} (a save file has index, annotator and the "
            f"label column; label_column={label_column!r}); its columns are {list(long.columns)}"
        )
    long = long[needed].copy()
    long["annotator"] = long["annotator"].map(lambda a: "" if _missing(a) else str(a))
    long = long[~long[label_column].map(_missing)]
    wide = long.pivot_table(index="index", columns="annotator", values=label_column, aggfunc="last")
    keys = pd.Index([str(v) for v in data.index])
    known = keys.isin(wide.index)
    if not known.any():
        raise ValueError(
            "annotations= labels none of this frame's rows (rows are matched by their index "
            f"label as text, e.g. {keys[0]!r}); was the file saved from another frame?"
        )
    wide = wide.reindex(keys).astype(object)
    wide = wide.where(wide.notna(), None)
    wide.index = data.index
    wide.columns = [str(c) or "(no name)" for c in wide.columns]
    return wide


def resolve_truth(
    data: pd.DataFrame,
    truth: str | None,
    *,
    raters: Sequence[str] | None = None,
    annotations: Any = None,
    label_column: str = "label",
) -> Truth:
    """The truth per row and the raters' labels (see the module docstring)."""
    if raters is not None and annotations is not None:
        raise TypeError("pass raters= (columns of this frame) or annotations= (a save file)")
    wide: pd.DataFrame | None = None
    where = ""
    if raters is not None:
        names = [raters] if isinstance(raters, str) else list(raters)
        absent = [c for c in names if c not in data.columns]
        if absent:
            raise KeyError(f"raters={absent} are not columns; columns are {list(data.columns)}")
        if len(names) < 2:
            raise ValueError(f"raters= needs at least two columns, not {names}")
        wide = data[names].astype(object)
        wide = wide.where(~wide.map(_missing), None)
        where = f"{len(names)} raters"
    elif annotations is not None:
        wide = _from_annotations(data, annotations, label_column)
        where = f"{wide.shape[1]} annotators"
    if truth is not None:
        if truth not in data.columns:
            raise KeyError(f"truth={truth!r} is not a column; columns are {list(data.columns)}")
        labels = data[truth].astype(object)
        labels = labels.where(~labels.map(_missing), None)
        return Truth(
            labels, wide if wide is not None and wide.shape[1] > 1 else None, f"column {truth!r}"
        )
    if wide is None:
        raise TypeError(
            "evaluate needs labels to compare with: truth='label' (a column of human labels), "
            "raters=[...] (several rater columns) or annotations='labels.csv' (the team "
            "annotators' save file)"
        )
    if wide.shape[1] == 1:
        return Truth(wide.iloc[:, 0], None, f"the labels of {wide.columns[0]!r}")
    labels, ties = consensus(wide)
    return Truth(labels, wide, f"the consensus of {where}", no_consensus=ties)


def stratified_sample(labels: pd.Series, n: int | None, seed: int = 0) -> pd.Index:
    """``n`` of the labelled rows' index labels, stratified by label and seeded (all when
    ``n`` is None or at least as many)."""
    labelled = labels[labels.notna()]
    if n is None or n >= len(labelled):
        return labelled.index
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"sample= must be a positive number of rows, not {n!r}")
    groups = {k: np.flatnonzero((labelled == k).to_numpy()) for k in pd.unique(labelled)}
    sizes = np.array([len(g) for g in groups.values()], dtype=float)
    quota = n * sizes / sizes.sum()
    take = np.floor(quota).astype(int)
    if n >= len(groups):
        take = np.maximum(take, 1)  # every label at least once
    while take.sum() > n:  # the minimum of one overshot: take back from the largest
        take[np.argmax(take - quota)] -= 1
    order = np.argsort(-(quota - take), kind="stable")
    for i in order[: n - take.sum()]:
        take[i] += 1
    rng = np.random.default_rng(seed)
    chosen = np.concatenate(
        [rng.choice(g, size=t, replace=False) for g, t in zip(groups.values(), take, strict=True)]
    )
    return labelled.index[np.sort(chosen)]
