"""Exports: COCO (loaded back with pycocotools), YOLO text, a Hugging Face Dataset with
ClassLabel (built locally), and the long form for CSV/Parquet."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from PIL import Image
from pycocotools.coco import COCO

import visionkit as vk

LABELS = ["cat", "dog", "bird"]


@pytest.fixture
def df(tmp_path):
    """Four images: one stored sideways (EXIF 6), one with nothing to box, one not done."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    stored = Image.new("RGB", (300, 200), (20, 120, 200))
    exif = stored.getexif()
    exif[0x0112] = 6
    stored.save(folder / "side.jpg", "JPEG", exif=exif)  # displayed 200 x 300
    Image.new("RGB", (400, 100), "red").save(folder / "wide.png")
    Image.new("RGB", (50, 50), "green").save(folder / "empty.png")
    Image.new("RGB", (60, 40), "blue").save(folder / "todo.png")
    paths = [str(folder / n) for n in ("side.jpg", "wide.png", "empty.png", "todo.png")]
    boxes = [
        [
            {"label": "cat", "x": 10.0, "y": 20.0, "w": 100.0, "h": 200.0},
            {"label": "bird", "x": 150.5, "y": 0.0, "w": 49.5, "h": 30.0},
        ],
        [{"label": "dog", "x": 0.0, "y": 0.0, "w": 400.0, "h": 100.0}],
        [],
        None,
    ]
    return pd.DataFrame(
        {"path": paths, "boxes": boxes, "label": ["cat", "dog", None, "cat"]},
        index=["a", "b", "c", "d"],
    )


def test_coco_loads_in_pycocotools_with_every_box(df, tmp_path):
    out = tmp_path / "coco" / "train.json"
    coco_dict = vk.to_coco(df, out, labels=LABELS, image_root=tmp_path / "imgs")
    coco = COCO(str(out))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == LABELS
    images = coco.loadImgs(coco.getImgIds())
    assert [(i["file_name"], i["width"], i["height"]) for i in images] == [
        ("side.jpg", 200, 300),  # the displayed size
        ("wide.png", 400, 100),
        ("empty.png", 50, 50),  # a negative: an image without boxes
    ]
    for image_id, (_, row) in zip(coco.getImgIds(), df.iloc[:3].iterrows(), strict=True):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        got = [(coco.loadCats(a["category_id"])[0]["name"], a["bbox"], a["area"]) for a in anns]
        want = [(b["label"], [b["x"], b["y"], b["w"], b["h"]], b["w"] * b["h"]) for b in row.boxes]
        assert got == want
    assert coco_dict["annotations"][0]["iscrowd"] == 0
    with pytest.raises(ValueError, match=r"\['bird'\] that are not in labels"):
        vk.to_coco(df, labels=["cat", "dog"])


def test_yolo_files(df, tmp_path):
    written = vk.to_yolo(df, tmp_path / "yolo", labels=LABELS)
    assert [p.name for p in written] == ["side.txt", "wide.txt", "empty.txt"]
    assert (tmp_path / "yolo" / "classes.txt").read_text() == "cat\ndog\nbird\n"
    side = [line.split() for line in (tmp_path / "yolo" / "side.txt").read_text().splitlines()]
    assert side[0] == ["0", "0.300000", "0.400000", "0.500000", "0.666667"]  # of 200 x 300
    assert side[1][0] == "2" and float(side[1][1]) == pytest.approx((150.5 + 49.5 / 2) / 200)
    assert (tmp_path / "yolo" / "empty.txt").read_text() == ""
    twin = pd.concat([df.iloc[:1], df.iloc[:1].rename(index={"a": "z"})])
    with pytest.raises(ValueError, match=r"rows .a. and .z. would both write side\.txt"):
        vk.to_yolo(twin, tmp_path / "y2", labels=LABELS)


def test_hugging_face_dataset_with_class_labels(df):
    import datasets

    ds = vk.to_hf_dataset(df, box_column="boxes", labels=LABELS)
    assert isinstance(ds, datasets.Dataset) and len(ds) == 3
    # datasets turns a Sequence of a dict into a dict of lists: objects.category is a list
    # of ClassLabel
    assert ds.features["objects"]["category"].feature.names == LABELS
    first = ds[0]
    assert first["image"].size == (200, 300)  # datasets applies the EXIF orientation
    assert (first["width"], first["height"]) == (200, 300)
    assert first["objects"]["category"] == [0, 2]
    assert first["objects"]["bbox"][1] == pytest.approx([150.5, 0.0, 49.5, 30.0])
    assert ds[2]["objects"]["bbox"] == []
    labels = vk.to_hf_dataset(df, label_column="label", labels=["cat", "dog"])
    assert labels.features["label"].names == ["cat", "dog"]
    assert labels["label"] == [0, 1, 0] and len(labels) == 3


def test_long_form_for_csv_and_parquet(df, tmp_path):
    long = vk.to_long(df, box_column="boxes")
    assert list(long.columns) == ["index", "path", "label", "x", "y", "w", "h"]
    assert long["index"].tolist() == ["a", "a", "b", "c"]
    assert long["label"].tolist()[:3] == ["cat", "bird", "dog"] and pd.isna(long["label"].iloc[3])
    long.to_parquet(tmp_path / "boxes.parquet")
    back = pd.read_parquet(tmp_path / "boxes.parquet")
    assert back["x"].tolist()[:3] == [10.0, 150.5, 0.0]
    labels = vk.to_long(df, label_column="label")
    assert labels[["index", "label"]].values.tolist() == [["a", "cat"], ["b", "dog"], ["d", "cat"]]


def test_long_form_of_a_save_file(df, tmp_path):
    save = tmp_path / "team.csv"
    ann = vk.BoxAnnotator(
        df.drop(columns="boxes"), box_column="boxes", labels=LABELS, save=save, annotator="ana"
    )
    ann.add_box(1, 2, 30, 40, label="dog")
    long = vk.to_long(vk.read_annotations(save), box_column="boxes")
    assert list(long.columns) == [
        "index",
        "path",
        "annotator",
        "boxes_at",
        "label",
        "x",
        "y",
        "w",
        "h",
    ]
    assert long[["index", "annotator", "label", "x"]].values.tolist() == [["a", "ana", "dog", 1.0]]
    assert json.loads(pd.read_csv(save)["boxes"].iloc[0])[0]["h"] == 40.0
