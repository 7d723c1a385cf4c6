"""Model-proposed regions: ask a vision model for boxes and map them onto the full-size image.

Usage:

    df["proposed"] = vk.propose_boxes(df, ["cat", "dog"], client=client)
    vk.BoxAnnotator(df, labels=["cat", "dog"], suggestions="proposed")   # accept / adjust

The model answers with [`BOX_SCHEMA`][visionkit.BOX_SCHEMA] (through
``vk.ask(..., schema=BOX_SCHEMA)``): boxes as corners ``x_min, y_min, x_max, y_max`` and the
``units`` it used, one of:

- ``"pixels"``: pixels of the image it was *sent* (``ask`` encodes it first, usually
  smaller than the original: 1120 px on the longest side for inference.net, less with
  ``max_side=``, and less again when a long prompt leaves the image less of the 1 MB body),
- ``"0-1"``: fractions of the width and height,
- ``"0-1000"``: thousandths (what Qwen-VL-style models emit).

``boxes_from_answer`` turns that into the box cell format (``{"label", "x", "y", "w",
"h"}``) in pixels of the image *as displayed at full size* (after EXIF rotation), the
coordinates every visionkit annotation tool uses. The size of the image sent is not taken from
the model (models misreport it) nor from an encoding of our own: it is the size ``ask``'s
planner encodes that row's image to (``PreparedRequest.image_sizes``), so whatever ``ask``
does to fit the provider's limits, the boxes are scaled from the image the model saw. Boxes are
clipped to the image; empty or inverted ones and labels outside ``labels`` are dropped (the
model's text is matched to a label as the Annotator matches answers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from .agreement import match_label

if TYPE_CHECKING:
    from ..query.client import Client

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
            named = match_label(label, labels)
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
    data: pd.DataFrame,
    labels: Sequence[str],
    *,
    prompt: str | None = None,
    image_column: str | None = None,
    client: Client | str | None = None,
    **ask_kwargs: Any,
) -> pd.Series:
    """Ask a vision model for boxes of ``labels`` in every image of ``data``.

    Returns one cell per row (a list of boxes in full-size displayed pixels, or NA where the
    image or the answer failed; ``attrs["errors"]`` says why, by row). ``client`` is a
    ``vk.connect()`` result or a provider name (default: as ``vk.connect()``), and the rest of
    ``ask_kwargs`` (``cache=``, ``concurrency=``, ``max_side=``...) go to ``vk.ask``.

    The size the model saw is the one ``ask`` encodes each image to -- after ``max_side`` and
    any shrinking to fit the provider's body limit, which a long ``prompt`` forces -- so it
    is read from ``ask``'s own planner (``_sent_sizes``), not guessed from the image.
    """
    from ..images.cells import find_image_column
    from ..images.read import inspect_images
    from ..query.ask import ask
    from ..query.client import Client, connect

    df = data
    if ask_kwargs.get("dry_run"):
        raise ValueError(
            "propose_boxes sends the requests; to price them, call vk.ask(..., dry_run=True) "
            "with schema=vk.annotation.box_schema(labels)"
        )
    if not isinstance(client, Client):
        client = connect(client or "auto")
    labels = [str(x) for x in labels]
    if not labels:
        raise ValueError("propose_boxes needs the labels to look for")
    cells = df[find_image_column(df, image_column)]
    full = inspect_images(cells)
    errors: dict[Any, str] = {
        label: str(err)
        for label, err in zip(df.index, full["error"], strict=True)
        if err is not None and not pd.isna(err)
    }
    frame = pd.DataFrame({"image": cells.to_numpy(dtype=object)}, index=df.index)
    frame = frame.loc[full["error"].isna().to_numpy()]
    text = prompt or DEFAULT_PROMPT.format(labels=", ".join(repr(x) for x in labels))
    options = {
        "image_column": "image",
        "schema": box_schema(labels),
        "client": client,
        **ask_kwargs,
    }
    sent = _sent_sizes(frame, text, **options)
    result = ask(frame, text, **options)
    out = pd.Series([None] * len(df), index=df.index, dtype=object)
    positions = {label: i for i, label in enumerate(df.index)}
    for label, row in result.iterrows():
        if row.get("error") is not None and not pd.isna(row.get("error")):
            errors[label] = str(row["error"])
            continue
        i = positions[label]
        if label not in sent:  # answered, yet the planner could not encode it: never expected
            errors[label] = "the size of the image sent is unknown, so its boxes cannot be placed"
            continue
        answer = {"units": row.get("units"), "boxes": row.get("boxes")}
        try:
            out.iat[i] = boxes_from_answer(
                answer,
                sent_size=sent[label],
                full_size=(int(full["width"].iat[i]), int(full["height"].iat[i])),
                labels=labels,
            )
        except ValueError as exc:
            errors[label] = str(exc)
    out.attrs["errors"] = errors
    return out


def _sent_sizes(df: pd.DataFrame, prompt: str, **ask_kwargs: Any) -> dict[Any, tuple[int, int]]:
    """(width, height) of the image ``vk.ask(df, prompt, **ask_kwargs)`` sends for each row,
    by index label (one image column; rows that would fail are left out).

    Planned with ``ask``'s own planner and options (``visionkit.query.plan``), without the
    cache or the network: encoding is deterministic, so this is the size the request carries,
    and the size a cached answer was given for (the cache key holds the image, the prompt and
    the encoding options).
    """
    import inspect

    from ..query.ask import ask
    from ..query.options import AskOptions
    from ..query.plan import make_plan, plan_rows

    arguments = inspect.signature(ask).bind(df, prompt, **ask_kwargs)
    arguments.apply_defaults()
    options = AskOptions.from_arguments(arguments.arguments).replace(cache=False, progress=False)
    sizes: dict[Any, tuple[int, int]] = {}
    with make_plan(df, prompt, options) as plan:
        for row in plan_rows(plan):
            if row.request is not None and row.request.image_sizes:
                sizes[row.label] = row.request.image_sizes[0]
    return sizes
