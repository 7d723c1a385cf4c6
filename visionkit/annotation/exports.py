"""Exports: the annotations in the formats training code reads.

Usage:

    vk.to_coco(df, "train.json", labels=labels)     # COCO detection JSON of df["boxes"]
    vk.to_yolo(df, "labels/", labels=labels)        # one .txt per image + classes.txt
    ds = vk.to_hf_dataset(df, labels=labels)        # datasets.Dataset (visionkit[hf])
    vk.to_long(df).to_csv("boxes.csv")              # one row per box
    vk.to_long(df, label_column="label")            # one row per labelled image

``box_column`` names the column of boxes (default ``"boxes"``), ``label_column`` a column of
class labels (``to_long`` and ``to_hf_dataset`` take either), ``labels`` the classes in
order (default: those found, sorted).

Rows not annotated yet (NA) are left out; an image marked "nothing to box" (``[]``) is kept,
with no boxes, as COCO and YOLO expect negatives to be. Box coordinates are pixels of the
image *as displayed* (after EXIF rotation), so every export gives the displayed size too, and
a loader must apply the EXIF orientation before using the boxes. Hugging Face ``datasets``
does (its ``Image`` feature calls ``ImageOps.exif_transpose``), as do OpenCV's ``imread`` and
torchvision's ``decode_image(..., apply_exif_orientation=True)``; plain ``PIL.Image.open``
does not. YOLO's text format is normalised by the displayed size for the same reason.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from .boxes import parse_boxes

if TYPE_CHECKING:
    # The module, not the package: the repo's datasets/ folder (sample images) shadows the
    # package's top level for mypy, and datasets ships no type information anyway.
    from datasets.arrow_dataset import Dataset

__all__ = ["to_coco", "to_hf_dataset", "to_long", "to_yolo"]


def _rows(df: pd.DataFrame, column: str) -> list[tuple[int, Any, list[dict[str, Any]]]]:
    """(position, index label, boxes) of every annotated row."""
    if column not in df.columns:
        raise KeyError(f"no column {column!r}; columns are {list(df.columns)}")
    out = []
    for pos, (label, value) in enumerate(zip(df.index, df[column], strict=True)):
        boxes = parse_boxes(value, row=label)
        if boxes is not None:
            out.append((pos, label, boxes))
    return out


def _labels(
    rows: list[tuple[int, Any, list[dict[str, Any]]]], labels: Sequence[str] | None
) -> list[str]:
    found = sorted({b["label"] for _, _, boxes in rows for b in boxes})
    if labels is None:
        return found
    labels = [str(x) for x in labels]
    unknown = sorted(set(found) - set(labels))
    if unknown:
        raise ValueError(f"boxes have labels {unknown} that are not in labels={labels}")
    return labels


def _sizes(df: pd.DataFrame, image_column: str, positions: list[int]) -> list[tuple[int, int]]:
    """The displayed full size of each image (what the boxes are in); an error names the row."""
    from ..images.read import inspect_images

    cells = df[image_column].iloc[positions]
    info = inspect_images(cells)
    out = []
    for label, (_, row) in zip(cells.index, info.iterrows(), strict=True):
        if row["error"] is not None and not pd.isna(row["error"]):
            raise ValueError(f"row {label!r}: cannot read the image size: {row['error']}")
        out.append((int(row["width"]), int(row["height"])))
    return out


def _image_column(df: pd.DataFrame, column: str | None) -> str:
    from ..images.cells import find_image_column

    return find_image_column(df, column)


def _target(box_column: str | None, label_column: str | None) -> tuple[str, bool]:
    """The column to export and whether it holds boxes: ``box_column`` or ``label_column``
    (not both); neither means ``box_column="boxes"``."""
    if box_column is not None and label_column is not None:
        raise TypeError("pass box_column= or label_column=, not both")
    if label_column is not None:
        return label_column, False
    return box_column or "boxes", True


def to_coco(
    data: pd.DataFrame,
    path: str | os.PathLike[str] | None = None,
    *,
    box_column: str = "boxes",
    labels: Sequence[str] | None = None,
    image_column: str | None = None,
    image_root: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """A COCO detection dataset (``images``, ``annotations``, ``categories``) of the boxes in
    ``data[box_column]``.

    ``labels`` fixes the category ids (1, 2, ... in that order; default: the labels found,
    sorted). ``file_name`` is the image path, relative to ``image_root`` when given; image ids
    count from 1 in row order. With ``path`` the JSON is also written there. Returns the dict.
    """
    df, column = data, box_column
    rows = _rows(df, column)
    names = _labels(rows, labels)
    ids = {name: i for i, name in enumerate(names, start=1)}
    col = _image_column(df, image_column)
    sizes = _sizes(df, col, [pos for pos, _, _ in rows])
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, ((pos, _label, boxes), (w, h)) in enumerate(zip(rows, sizes, strict=True), 1):
        cell = df[col].iat[pos]
        name = str(cell)
        if image_root is not None and isinstance(cell, str | os.PathLike):
            name = os.path.relpath(os.fspath(cell), os.fspath(image_root))
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
        for b in boxes:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": ids[b["label"]],
                    "bbox": [b["x"], b["y"], b["w"], b["h"]],
                    "area": b["w"] * b["h"],
                    "iscrowd": 0,
                }
            )
    coco = {
        "info": {"description": f"visionkit export of {column!r}"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": n, "supercategory": ""} for n, i in ids.items()],
    }
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(coco, indent=1))
    return coco


def to_yolo(
    data: pd.DataFrame,
    path: str | os.PathLike[str],
    *,
    box_column: str = "boxes",
    labels: Sequence[str] | None = None,
    image_column: str | None = None,
) -> list[Path]:
    """YOLO label files in the folder ``path``: ``<image stem>.txt`` with ``class cx cy w h``
    per box of ``data[box_column]`` (class from 0 in ``labels`` order, the rest normalised to
    0-1 by the displayed size), and ``classes.txt``. Two images with the same stem are an
    error naming both rows. Returns the files written."""
    df, column = data, box_column
    rows = _rows(df, column)
    names = _labels(rows, labels)
    ids = {name: i for i, name in enumerate(names)}
    col = _image_column(df, image_column)
    sizes = _sizes(df, col, [pos for pos, _, _ in rows])
    out_dir = Path(path)
    out_dir.mkdir(parents=True, exist_ok=True)
    seen: dict[str, Any] = {}
    written = []
    for (pos, label, boxes), (w, h) in zip(rows, sizes, strict=True):
        stem = Path(str(df[col].iat[pos])).stem
        if stem in seen:
            raise ValueError(
                f"rows {seen[stem]!r} and {label!r} would both write {stem}.txt; give the "
                "images distinct file names"
            )
        seen[stem] = label
        lines = [
            f"{ids[b['label']]} {(b['x'] + b['w'] / 2) / w:.6f} {(b['y'] + b['h'] / 2) / h:.6f} "
            f"{b['w'] / w:.6f} {b['h'] / h:.6f}"
            for b in boxes
        ]
        target = out_dir / f"{stem}.txt"
        target.write_text("".join(line + "\n" for line in lines))
        written.append(target)
    (out_dir / "classes.txt").write_text("".join(n + "\n" for n in names))
    return written


def to_long(
    data: pd.DataFrame, *, box_column: str | None = None, label_column: str | None = None
) -> pd.DataFrame:
    """One row per box of ``box_column`` (``label, x, y, w, h``; default ``"boxes"``) or, for
    ``label_column``, per labelled row,
    with the DataFrame's index as the ``index`` column and ``path``/``annotator``/times when
    present: the shape for ``to_csv``/``to_parquet`` and for pandas' groupby.

    Works on an annotated DataFrame and on a save file's long frame (``vk.read_annotations``,
    where boxes are JSON text). A "nothing to box" row gives one row with NA coordinates.
    """
    df = data
    column, box_like = _target(box_column, label_column)
    if column not in df.columns:
        raise KeyError(f"no column {column!r}; columns are {list(df.columns)}")
    keep = [c for c in ("index", "path", "annotator", f"{column}_at") if c in df.columns]
    records = []
    for label, (_, row) in zip(df.index, df.iterrows(), strict=True):
        base = {"index": row["index"] if "index" in keep else label}
        base.update({c: row[c] for c in keep if c != "index"})
        if not box_like:
            value = row[column]
            if value is None or (not isinstance(value, list) and pd.isna(value)):
                continue
            records.append({**base, "label": value})
            continue
        boxes = parse_boxes(row[column], row=label)
        if boxes is None:
            continue
        if not boxes:
            records.append({**base, "label": None, "x": None, "y": None, "w": None, "h": None})
        for b in boxes:
            records.append({**base, **{k: b[k] for k in ("label", "x", "y", "w", "h")}})
    columns = ["index", *[c for c in keep if c != "index"], "label"]
    if box_like:
        columns += ["x", "y", "w", "h"]
    out = pd.DataFrame(records, columns=columns)
    if box_like:
        out = out.astype({k: "Float64" for k in ("x", "y", "w", "h")})
    return out


def to_hf_dataset(
    data: pd.DataFrame,
    *,
    box_column: str | None = None,
    label_column: str | None = None,
    labels: Sequence[str] | None = None,
    image_column: str | None = None,
) -> Dataset:
    """A Hugging Face ``datasets.Dataset``, built locally (nothing is uploaded).

    For ``box_column`` (default ``"boxes"``): features ``image`` (``datasets.Image``),
    ``width``, ``height`` and ``objects`` (``bbox`` as ``[x, y, w, h]`` in displayed pixels,
    ``category`` a ``ClassLabel``); for ``label_column``: ``image`` and ``label`` (a
    ``ClassLabel``). Needs
    ``pip install 'visionkit[hf]'``.
    """
    try:
        # Imported as Any: datasets' lazy top-level names are invisible to type checkers.
        datasets: Any = importlib.import_module("datasets")
    except ImportError:  # pragma: no cover - the dev extra installs it
        raise ImportError(
            "to_hf_dataset needs Hugging Face datasets: pip install 'visionkit[hf]'"
        ) from None
    df = data
    column, is_boxes = _target(box_column, label_column)
    col = _image_column(df, image_column)
    if column not in df.columns:
        raise KeyError(f"no column {column!r}; columns are {list(df.columns)}")
    images = [str(c) if isinstance(c, str | os.PathLike) else c for c in df[col]]
    if not is_boxes:
        present = df[column].notna().to_numpy()
        values = [str(v) for v in df[column][present]]
        names = sorted(set(values)) if labels is None else [str(x) for x in labels]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"labels {unknown} are not in labels={names}")
        features = datasets.Features(
            {"image": datasets.Image(), "label": datasets.ClassLabel(names=names)}
        )
        kept = [im for im, p in zip(images, present, strict=True) if p]
        table: Dataset = datasets.Dataset.from_dict(
            {"image": kept, "label": values}, features=features
        )
        return table
    rows = _rows(df, column)
    names = _labels(rows, labels)
    sizes = _sizes(df, col, [pos for pos, _, _ in rows])
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "width": datasets.Value("int32"),
            "height": datasets.Value("int32"),
            "objects": datasets.Sequence(
                {
                    "bbox": datasets.Sequence(datasets.Value("float32"), length=4),
                    "category": datasets.ClassLabel(names=names),
                }
            ),
        }
    )
    columns = {
        "image": [images[pos] for pos, _, _ in rows],
        "width": [w for w, _ in sizes],
        "height": [h for _, h in sizes],
        "objects": [
            {
                "bbox": [[b["x"], b["y"], b["w"], b["h"]] for b in boxes],
                "category": [b["label"] for b in boxes],
            }
            for _, _, boxes in rows
        ],
    }
    dataset: Dataset = datasets.Dataset.from_dict(columns, features=features)
    return dataset
