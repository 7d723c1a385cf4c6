"""Boxes: the cell format, IoU, greedy one-to-one matching, precision/recall and its plot."""

from __future__ import annotations

import math

import matplotlib
import pandas as pd
import pytest

import visionkit as vk
from visionkit.annotation.boxes import iou_matrix, match_boxes, parse_boxes

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def box(label, x, y, w, h):
    return {"label": label, "x": x, "y": y, "w": w, "h": h}


def test_iou_by_hand():
    a = box("cat", 0, 0, 10, 10)
    assert vk.annotation.iou(a, a) == 1
    assert vk.annotation.iou(a, box("cat", 5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert vk.annotation.iou(a, box("cat", 10, 0, 5, 5)) == 0  # touching edges
    assert vk.annotation.iou(a, box("cat", 2, 2, 5, 5)) == pytest.approx(25 / 100)
    m = iou_matrix([a, box("x", 20, 20, 4, 4)], [box("y", 20, 20, 4, 2)])
    assert m.shape == (2, 1) and m[1, 0] == pytest.approx(0.5) and m[0, 0] == 0


def test_matching_is_greedy_one_to_one_and_by_label():
    a = [box("cat", 0, 0, 10, 10), box("dog", 50, 50, 10, 10)]
    b = [box("cat", 1, 0, 10, 10), box("cat", 0, 0, 10, 10), box("cat", 50, 50, 10, 10)]
    pairs = match_boxes(a, b)
    assert pairs == [(0, 1, 1.0)]  # the best cat match wins; the dog box is not a cat
    pairs = match_boxes(a, b, by_label=False)
    assert [(i, j) for i, j, _ in pairs] == [(0, 1), (1, 2)]
    assert match_boxes(a, [], iou_threshold=0.1) == []


def test_box_agreement_precision_recall_per_class():
    df = pd.DataFrame(
        {
            "ann": [
                [box("cat", 0, 0, 100, 100), box("dog", 200, 200, 50, 50)],
                [box("cat", 10, 10, 20, 20)],
                [],
                None,  # not annotated by ann: the row is left out
            ],
            "bob": [
                [box("cat", 10, 0, 100, 100), box("dog", 300, 300, 50, 50)],
                '[{"label": "cat", "x": 10, "y": 10, "w": 20, "h": 40}]',  # JSON text
                [box("cat", 5, 5, 5, 5)],
                [box("cat", 0, 0, 1, 1)],
            ],
        },
        index=["a", "b", "c", "d"],
    )
    r = vk.box_agreement(df, truth="ann", answer="bob", iou=0.5)
    # row a: cat IoU 90*100/(2*10000-9000)=0.818 matched, dog 0; row b: IoU 0.5 matched
    assert (r.images, r.truth_boxes, r.answer_boxes, r.matched) == (3, 3, 4, 2)
    assert r.precision == pytest.approx(2 / 4) and r.recall == pytest.approx(2 / 3)
    assert r.f1 == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert r.mean_iou == pytest.approx((9000 / 11000 + 0.5) / 2)
    assert r.per_class.loc["cat", ["truth_boxes", "answer_boxes", "matched"]].tolist() == [2, 3, 2]
    assert r.per_class.loc["dog", "recall"] == 0
    strict = vk.box_agreement(df, truth="ann", answer="bob", iou=0.6)
    assert strict.matched == 1
    at = r.curve.set_index("iou")
    assert at.loc[0.5, "precision"] == r.precision and at.loc[0.85, "recall"] == 0
    assert "precision=0.500" in repr(r)
    ax = vk.plot_box_agreement(r)
    assert len(ax.lines) == 3 and "IoU 0.5" in ax.get_title()
    plt.close("all")


def test_bad_cells_name_the_row():
    with pytest.raises(ValueError, match=r"row 'r7'.*lacks \['h'\]"):
        parse_boxes([{"label": "a", "x": 1, "y": 1, "w": 1}], row="r7")
    with pytest.raises(ValueError, match=r"row 3: .*positive"):
        parse_boxes([box("a", 0, 0, 0, 5)], row=3)
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_boxes("[{", row=1)
    assert parse_boxes(float("nan")) is None and parse_boxes("[]") == []
    df = pd.DataFrame({"a": [[box("x", 0, 0, 1, 1)]], "b": [None]})
    r = vk.box_agreement(df, truth="a", answer="b")
    assert r.images == 0 and math.isnan(r.precision)
    with pytest.raises(KeyError, match="'c'"):
        vk.box_agreement(df, truth="a", answer="c")
    with pytest.raises(ValueError, match="iou"):
        vk.box_agreement(df, truth="a", answer="b", iou=0)
