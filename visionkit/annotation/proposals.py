"""Model-proposed regions: ask a vision model for boxes and map them onto the full-size image.

Usage::

    df["proposed"] = vk.propose_boxes(df, ["cat", "dog"], client=client)
    vk.BoxAnnotator(df, "boxes", ["cat", "dog"], suggestions="proposed")   # accept / adjust

The model answers with :data:`BOX_SCHEMA` (through ``vk.ask(..., schema=BOX_SCHEMA)``): boxes
as corners ``x_min, y_min, x_max, y_max`` and the ``units`` it used, one of:

- ``"pixels"``: pixels of the image it was *sent* (visionkit encodes it first, usually
  smaller than the original: 1120 px on the longest side for inference.net),
- ``"0-1"``: fractions of the width and height,
- ``"0-1000"``: thousandths (what Qwen-VL-style models emit).

:func:`boxes_from_answer` turns that into the box cell format (``{"label", "x", "y", "w",
"h"}``) in pixels of the image *as displayed at full size* (after EXIF rotation), the
coordinates every visionkit annotation tool uses. The size of the image sent is measured from
the encoded bytes, not taken from the model: models misreport it. Boxes are clipped to the
image; empty or inverted ones and labels outside ``labels`` are dropped (the model's text is
matched to a label as the Annotator matches answers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from .agreement import match_option

__all__ = ["BOX_SCHEMA", "UNITS", "box_schema", "boxes_from_answer", "propose_boxes"]

UNITS = ("pixels", "0-1", "0-1000")

DEFAULT_PROMPT = (
    "Find every {labels} in this image. For each one give a tight bounding box as x_min, "
    "y_min, x_max, y_max and its label. Say which units you use: 'pixels' of this image, "
    "'0-1' fractions or '0-1000' thousandths of its width and height. If there are none, "
    "return an empty list."
)


def box_schema(labels: Sequence[str] | None = None) -> dict[str, Any]:
    """The JSON schema of a box answer; with ``labels`` the label is one of them (an enum)."""
    label: dict[str, Any] = {"type": "string"}
    if labels:
        label["enum"] = [str(x) for x in labels]
    corner = {"type": "number"}
    return {
        "title": "boxes",
        "type": "object",
        "properties": {
            "units": {"type": "string", "enum": list(UNITS)},
            "boxes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "label": label,
                        "x_min": corner,
                        "y_min": corner,
                        "x_max": corner,
                        "y_max": corner,
                    },
                    "required": ["label", "x_min", "y_min", "x_max", "y_max"],
                },
            },
        },
        "required": ["units", "boxes"],
    }


BOX_SCHEMA = box_schema()


def boxes_from_answer(
    answer: dict[str, Any] | None,
    *,
    sent_size: tuple[int, int],
    full_size: tuple[int, int],
    labels: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """The boxes of one answer in full-size displayed pixels (see the module docstring).

    ``sent_size`` is the (width, height) of the image the model saw, ``full_size`` that of the
    image as displayed at full size. Raises ``ValueError`` for units it does not know.
    """
    if not answer:
        return []
    units = str(answer.get("units") or "pixels").strip().lower()
    if units not in UNITS:
        raise ValueError(f"the model gave units {units!r}; the schema allows {list(UNITS)}")
    fw, fh = full_size
    sw, sh = sent_size
    if units == "pixels":
        sx, sy = fw / sw, fh / sh
    elif units == "0-1":
        sx, sy = fw, fh
    else:
        sx, sy = fw / 1000, fh / 1000
    out = []
    for raw in answer.get("boxes") or []:
        if not isinstance(raw, dict):
            continue
        label = str(raw.get("label", "")).strip()
        if labels:
            named = match_option(label, labels)
            if named is None:
                continue
            label = named
        try:
            x0, y0, x1, y1 = (float(raw[k]) for k in ("x_min", "y_min", "x_max", "y_max"))
        except (KeyError, TypeError, ValueError):
            continue
        x0, x1 = sorted((min(max(x0 * sx, 0.0), fw), min(max(x1 * sx, 0.0), fw)))
        y0, y1 = sorted((min(max(y0 * sy, 0.0), fh), min(max(y1 * sy, 0.0), fh)))
        if x1 - x0 < 1 or y1 - y0 < 1:
            continue
        out.append(
            {
                "label": label,
                "x": round(x0, 1),
                "y": round(y0, 1),
                "w": round(x1 - x0, 1),
                "h": round(y1 - y0, 1),
            }
        )
    return out


def propose_boxes(
    df: pd.DataFrame,
    labels: Sequence[str],
    *,
    prompt: str | None = None,
    column: str | None = None,
    client: Any = None,
    **ask_kwargs: Any,
) -> pd.Series:
    """Ask a vision model for boxes of ``labels`` in every image of ``df``.

    Returns one cell per row (a list of boxes in full-size displayed pixels, or NA where the
    image or the answer failed; ``attrs["errors"]`` says why, by row). Each image is encoded
    for the client's provider first (``vk.encode_image``) so the size the model saw is known
    exactly; ``client`` is a ``vk.connect()`` result or a provider name (default: as
    ``vk.connect()``), and the rest of ``ask_kwargs`` (``cache=``, ``concurrency=``...) go to
    ``vk.ask``.
    """
    from ..images.cells import image_column
    from ..images.encode import encode_image
    from ..images.read import inspect_images
    from ..query.ask import ask
    from ..query.client import Client, connect

    if not isinstance(client, Client):
        client = connect(client or "auto")
    provider = client.provider

    labels = [str(x) for x in labels]
    if not labels:
        raise ValueError("propose_boxes needs the labels to look for")
    cells = df[image_column(df, column)]
    full = inspect_images(cells)
    sent_uris: list[str | None] = []
    errors: dict[Any, str] = {}
    for label, cell, ok in zip(df.index, cells, full["error"].isna(), strict=True):
        if not ok:
            sent_uris.append(None)
            continue
        try:
            sent_uris.append(encode_image(cell, provider=provider, row=label))
        except Exception as exc:  # a bad image is that row's error, never the batch's
            sent_uris.append(None)
            errors[label] = f"{type(exc).__name__}: {exc}"
    sent = inspect_images([u if u is not None else b"" for u in sent_uris])
    frame = pd.DataFrame({"image": sent_uris}, index=df.index)
    text = prompt or DEFAULT_PROMPT.format(labels=", ".join(repr(x) for x in labels))
    todo = frame["image"].notna()
    result = ask(
        frame.loc[todo],
        text,
        column="image",
        schema=box_schema(labels),
        client=client,
        **ask_kwargs,
    )
    out = pd.Series([None] * len(df), index=df.index, dtype=object)
    for label, err in zip(df.index, full["error"], strict=True):
        if err is not None and not pd.isna(err):
            errors[label] = str(err)
    positions = {label: i for i, label in enumerate(df.index)}
    for label, row in result.iterrows():
        if row.get("error") is not None and not pd.isna(row.get("error")):
            errors[label] = str(row["error"])
            continue
        i = positions[label]
        answer = {"units": row.get("units"), "boxes": row.get("boxes")}
        try:
            out.iat[i] = boxes_from_answer(
                answer,
                sent_size=(int(sent["width"].iat[i]), int(sent["height"].iat[i])),
                full_size=(int(full["width"].iat[i]), int(full["height"].iat[i])),
                labels=labels,
            )
        except ValueError as exc:
            errors[label] = str(exc)
    out.attrs["errors"] = errors
    return out
