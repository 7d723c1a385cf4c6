"""Boxes: the cell format, IoU, and how well two sets of boxes agree.

A box cell is a list of dicts ``{"label", "x", "y", "w", "h"}``: ``x``/``y`` the top-left
corner, in pixels of the image *as displayed* (after EXIF rotation) at its full size, never a
thumbnail's or an encoded copy's. An empty list means "looked at, nothing to box"; NA means
"not annotated yet". Cells read back from a file as JSON text are accepted everywhere.

Usage:

    r = vk.box_agreement(df, truth="boxes_ann", answer="boxes_bob", iou=0.5)
    r.precision, r.recall, r.f1    # bob's boxes matched in ann's, ann's matched by bob's
    r.per_class                    # the same per label
    vk.plot_box_agreement(r)       # precision and recall against the IoU threshold

Matching is greedy by IoU, highest first, one-to-one, within an image and (by default) within a
label, as COCO's evaluation does for boxes of equal score.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "BoxAgreement",
    "box_agreement",
    "check_boxes",
    "iou",
    "iou_matrix",
    "match_boxes",
    "parse_boxes",
]

KEYS = ("label", "x", "y", "w", "h")
THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.05, 1.0, 0.05))


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if isinstance(value, str) and not value.strip():
        return True
    return value is pd.NA


def parse_boxes(value: Any, *, row: Any = None) -> list[dict[str, Any]] | None:
    """A cell as a list of box dicts (``None`` when not annotated); JSON text is parsed.

    Raises ``ValueError`` naming ``row`` for anything that is not a list of boxes.
    """
    if _missing(value):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"row {row!r}: boxes are not valid JSON ({exc})") from None
    if isinstance(value, np.ndarray):
        value = value.tolist()
    return check_boxes(value, row=row)


def check_boxes(boxes: Any, *, row: Any = None) -> list[dict[str, Any]]:
    """``boxes`` checked and normalised: label as text, x/y/w/h as floats, w and h positive."""
    where = f"row {row!r}: " if row is not None else ""
    if not isinstance(boxes, list | tuple):
        raise ValueError(f"{where}boxes must be a list of dicts, not {type(boxes).__name__}")
    out = []
    for i, box in enumerate(boxes):
        if not isinstance(box, dict):
            raise ValueError(f"{where}box {i} must be a dict, not {type(box).__name__}")
        missing = [k for k in KEYS if k not in box]
        if missing:
            raise ValueError(f"{where}box {i} lacks {missing} (a box is {list(KEYS)})")
        try:
            x, y, w, h = (float(box[k]) for k in "xywh")
        except (TypeError, ValueError):
            raise ValueError(f"{where}box {i}: x, y, w, h must be numbers: {box}") from None
        if not all(map(math.isfinite, (x, y, w, h))) or w <= 0 or h <= 0:
            raise ValueError(f"{where}box {i}: w and h must be positive and finite: {box}")
        clean = {**box, "label": str(box["label"]), "x": x, "y": y, "w": w, "h": h}
        out.append(clean)
    return out


def iou(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Intersection over union of two boxes."""
    return float(iou_matrix([a], [b])[0, 0])


def _xyxy(boxes: Sequence[dict[str, Any]]) -> np.ndarray:
    arr = np.array([[b["x"], b["y"], b["w"], b["h"]] for b in boxes], dtype=float).reshape(-1, 4)
    arr[:, 2:] += arr[:, :2]
    return arr


def iou_matrix(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]]) -> np.ndarray:
    """IoU of every box of ``a`` (rows) with every box of ``b`` (columns)."""
    pa, pb = _xyxy(a), _xyxy(b)
    lo = np.maximum(pa[:, None, :2], pb[None, :, :2])
    hi = np.minimum(pa[:, None, 2:], pb[None, :, 2:])
    inter = np.clip(hi - lo, 0, None).prod(-1)
    area_a = (pa[:, 2:] - pa[:, :2]).prod(-1)
    area_b = (pb[:, 2:] - pb[:, :2]).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def match_boxes(
    a: Sequence[dict[str, Any]],
    b: Sequence[dict[str, Any]],
    *,
    iou_threshold: float = 0.5,
    by_label: bool = True,
) -> list[tuple[int, int, float]]:
    """Pairs ``(i, j, iou)`` of ``a[i]`` matched with ``b[j]``: greedy, highest IoU first,
    one-to-one, at least ``iou_threshold``, and with the same label when ``by_label``."""
    if not len(a) or not len(b):
        return []
    m = iou_matrix(a, b)
    if by_label:
        same = np.array([[x["label"] == y["label"] for y in b] for x in a], dtype=bool)
        m = np.where(same, m, -1.0)
    order = np.argsort(-m, axis=None, kind="stable")
    used_a, used_b, pairs = set(), set(), []
    for flat in order:
        i, j = divmod(int(flat), m.shape[1])
        value = float(m[i, j])
        if value < iou_threshold or value <= 0:
            break
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        pairs.append((i, j, value))
    return pairs


@dataclass(frozen=True)
class BoxAgreement:
    """The result of [`box_agreement`][visionkit.box_agreement].

    ``truth`` and ``answer`` name the two box columns compared. ``precision`` is the share of
    the answer's boxes matched in the truth's, ``recall`` the share of the truth's boxes
    matched by the answer's (NaN when there are none), ``mean_iou`` over the matches;
    ``per_class`` the same per label; ``curve`` precision and recall at IoU thresholds
    0.05-0.95, for [`plot_box_agreement`][visionkit.plot_box_agreement]; ``images`` the rows
    both annotated.
    """

    truth: str
    answer: str
    iou: float
    images: int
    truth_boxes: int
    answer_boxes: int
    matched: int
    precision: float
    recall: float
    f1: float
    mean_iou: float
    per_class: pd.DataFrame
    curve: pd.DataFrame = field(repr=False)

    def __repr__(self) -> str:
        return (
            f"BoxAgreement({self.answer!r} vs {self.truth!r} at IoU {self.iou}: precision="
            f"{self.precision:.3f}, recall={self.recall:.3f}, f1={self.f1:.3f}, "
            f"matched={self.matched}, images={self.images})"
        )


def _ratio(n: float, d: float) -> float:
    return n / d if d else float("nan")


def _f1(p: float, r: float) -> float:
    if math.isnan(p) or math.isnan(r):
        return float("nan")
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def box_agreement(
    data: pd.DataFrame,
    *,
    truth: str,
    answer: str,
    iou: float = 0.5,
    by_label: bool = True,
) -> BoxAgreement:
    """How well the boxes in ``data[answer]`` agree with those in ``data[truth]`` (rows either
    side has not annotated are left out). See the module docstring."""
    df, a, b = data, truth, answer
    for name in (a, b):
        if name not in df.columns:
            raise KeyError(f"box_agreement: no column {name!r}; columns are {list(df.columns)}")
    if not 0 < iou <= 1:
        raise ValueError(f"iou must be in (0, 1], not {iou}")
    pairs: list[tuple[list[dict], list[dict]]] = []
    for label, x, y in zip(df.index, df[a], df[b], strict=True):
        bx, by = parse_boxes(x, row=label), parse_boxes(y, row=label)
        if bx is not None and by is not None:
            pairs.append((bx, by))
    labels = sorted({box["label"] for x, y in pairs for box in (*x, *y)})
    count_a = pd.Series(0, index=labels, dtype=int)
    count_b = pd.Series(0, index=labels, dtype=int)
    for x, y in pairs:
        for box in x:
            count_a[box["label"]] += 1
        for box in y:
            count_b[box["label"]] += 1
    # Greedy matching at a lower threshold may pair boxes differently, so each threshold of
    # the curve is matched on its own (cheap: an image holds few boxes).
    thresholds = sorted({*THRESHOLDS, float(iou)})
    hits = {t: pd.Series(0, index=labels, dtype=int) for t in thresholds}
    ious: dict[str, list[float]] = {lab: [] for lab in labels}
    for x, y in pairs:
        for t in thresholds:
            for i, _j, value in match_boxes(x, y, iou_threshold=t, by_label=by_label):
                hits[t][x[i]["label"]] += 1
                if t == iou:
                    ious[x[i]["label"]].append(value)
    at = hits[float(iou)]
    per_class = pd.DataFrame(
        {
            "truth_boxes": count_a,
            "answer_boxes": count_b,
            "matched": at,
            "precision": [_ratio(at[k], count_b[k]) for k in labels],
            "recall": [_ratio(at[k], count_a[k]) for k in labels],
            "mean_iou": [float(np.mean(ious[k])) if ious[k] else float("nan") for k in labels],
        },
        index=pd.Index(labels, name="label", dtype=object),
    )
    per_class["f1"] = [
        _f1(p, r) for p, r in zip(per_class["precision"], per_class["recall"], strict=True)
    ]
    total_a, total_b = int(count_a.sum()), int(count_b.sum())
    curve = pd.DataFrame(
        {
            "iou": thresholds,
            "precision": [_ratio(hits[t].sum(), total_b) for t in thresholds],
            "recall": [_ratio(hits[t].sum(), total_a) for t in thresholds],
        }
    )
    matched = int(at.sum())
    precision, recall = _ratio(matched, total_b), _ratio(matched, total_a)
    all_ious = [v for vs in ious.values() for v in vs]
    return BoxAgreement(
        truth=a,
        answer=b,
        iou=float(iou),
        images=len(pairs),
        truth_boxes=total_a,
        answer_boxes=total_b,
        matched=matched,
        precision=precision,
        recall=recall,
        f1=_f1(precision, recall),
        mean_iou=float(np.mean(all_ious)) if all_ious else float("nan"),
        per_class=per_class,
        curve=curve,
    )


def boxes_of(values: Iterable[Any], index: Iterable[Any]) -> list[list[dict[str, Any]] | None]:
    """Every cell of a column parsed (``None`` where not annotated)."""
    return [parse_boxes(v, row=i) for v, i in zip(values, index, strict=True)]
