"""``BoxAnnotator``: draw, move, resize and label boxes on a DataFrame's images with the mouse.

Usage:

    ann = vk.BoxAnnotator(df, labels=["cat", "dog"], save="boxes.csv", annotator="ana",
                          suggestions="proposed")      # e.g. from vk.propose_boxes
    ann                       # click the image, then drag to draw; 1-9 pick the class (of the
                              # selected box, and of the next one drawn); drag a box to move
                              # it, a corner to resize it; Delete removes the selected box;
                              # Backspace undo; a accept the model's boxes, x hide them;
                              # e "no boxes here"; → ← next/previous, s skip; wheel or + - 0
                              # zoom, Space+drag (or the middle button) pans
    df["boxes"]               # [{"label": "cat", "x": 12.0, "y": 40.5, "w": 200.0, "h": 150.0}]

Coordinates are pixels of the image *as displayed* (after EXIF rotation) at its *full* size,
whatever the zoom and however small the preview: the front end draws a preview of at most
``zoom_size`` px and maps the mouse through the full size that ``vk.inspect_images``
reports. A cell is a list of ``{"label", "x", "y", "w", "h"}`` (``x``/``y`` the top-left
corner); ``[]`` means "looked, nothing to box" (the ``e`` key) and NA "not done yet". Every
change goes to ``df[box_column]`` and the save file at once (long form, one row per image and
annotator, the boxes as JSON text; see ``visionkit.annotation.savefile``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ipywidgets
import numpy as np
import pandas as pd

from ..annotation.boxes import check_boxes, match_boxes, parse_boxes
from ._controls import button_row, distinct
from ._frame import RowFilter, require_frame
from ._keymap import digit_help, key_help
from ._session import NO_ROWS, LabelSession
from .box_view import VIEW_ACTIONS, BoxView

__all__ = ["BoxAnnotator"]

DEFAULT_KEYS: dict[str, list[str]] = {
    "next": ["ArrowRight"],
    "previous": ["ArrowLeft"],
    "skip": ["s"],
    "undo": ["Backspace"],
    "delete": ["Delete"],
    "accept": ["a"],
    "reject": ["x"],
    "empty": ["e"],
    "zoom_in": ["+", "="],
    "zoom_out": ["-"],
    "zoom_reset": ["0"],
    "pan": [" "],
}


def _rounded(box: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in box.items() if k not in ("x", "y", "w", "h")}
    out.update({k: round(float(box[k]), 1) for k in ("x", "y", "w", "h")})
    return out


class BoxAnnotator(LabelSession, ipywidgets.VBox):
    """Box ``data[box_column]`` image by image; see the module docstring for the mouse and keys.

    ``labels`` are the classes (keys 1-9 pick the first nine). ``suggestions`` names a column
    of boxes proposed by a model (``vk.propose_boxes``), shown dashed: click one to take it,
    ``a`` takes them all, ``x`` hides them. ``annotator``, ``blind``, ``save``, ``filter``,
    ``order`` (``"disagreement"``: rows whose annotators' boxes agree least first) and
    ``keys`` (``{"delete": ["Delete", "d"], "zoom_in": "i"}``; actions: next, previous, skip,
    undo, delete, accept, reject, empty, zoom_in, zoom_out, zoom_reset, pan) work as in the
    ``Annotator``. ``view_size`` is the height of the drawing area in screen pixels,
    ``zoom_size`` the largest side of the image sent to the browser (zoom shows it sharp up
    to that).
    """

    _done_word = "done"
    _unit = "image"
    _repr_done = "images done"
    _restored = "boxes of {} images restored"
    _suggestion_actions = ("accept", "reject")
    _view_actions = VIEW_ACTIONS
    _column_param = "box_column"

    def __init__(
        self,
        data: pd.DataFrame,
        *,
        box_column: str = "boxes",
        labels: Sequence[str] = (),
        save: str | Path | None = None,
        annotator: str | None = None,
        suggestions: str | None = None,
        blind: bool = False,
        filter: RowFilter = "all",
        order: str = "index",
        keys: Mapping[str, str | Sequence[str]] | None = None,
        image_column: str | None = None,
        view_size: int = 560,
        zoom_size: int = 1600,
    ) -> None:
        require_frame(data, "BoxAnnotator")
        labels = distinct(labels, "labels")
        if not labels:
            raise ValueError("BoxAnnotator needs labels=[...], the classes of the boxes")
        self.labels = labels
        self._check_columns(data, box_column, suggestions, image_column)
        self._bind_keys(labels, "labels", DEFAULT_KEYS, keys)
        self._sizes: dict[int, tuple[int, int] | None] = {}
        self._rejected: set[int] = set()
        self._shown: int | None = None
        self._taken: dict[int, list[dict[str, Any]]] = {}
        # (history length after an accept, row, boxes taken): undo offers them again
        self._accepted: list[tuple[int, int, list[dict[str, Any]]]] = []
        self._start(data, box_column, annotator=annotator, save=save, blind=blind)
        self._parse_column()
        self._images = self._image_cache(zoom_size, kept=16)
        self.view = BoxView(
            view_size=view_size,
            labels=labels,
            current_label=labels[0],
            bindings=self._bindings,
            key_help=self._key_help(),
        )
        self.view.on_msg(self._on_msg)
        self.view.observe(self._on_select, names=["selected"])
        self.buttons = self._action_buttons(
            ("accept", "reject", "previous", "next", "skip", "empty", "delete", "undo"),
            {
                "accept": ("accept model's boxes", "take every proposed box"),
                "reject": ("hide model's boxes", "hide the proposed boxes"),
                "skip": ("skip", "go to the next image without boxes"),
                "empty": ("no boxes here", "mark this image as having nothing to box, go on"),
                "delete": ("delete box", "delete the selected box"),
            },
            keys_in_tooltip=False,
        )
        super().__init__(children=[self.view, button_row(self.buttons)])
        self.add_class("vk-box-annotator")
        self._begin(filter, order)

    @property
    def box_column(self) -> str:
        """The column the boxes are written to."""
        return self._column

    # -- cells -----------------------------------------------------------------------------
    def _parse_column(self) -> None:
        """Every cell as a list of boxes (JSON text from a file is parsed), or None."""
        values = [
            parse_boxes(v, row=i)
            for v, i in zip(self.data[self._column], self.data.index, strict=True)
        ]
        for pos, value in enumerate(values):
            self._put(pos, value)

    def _decode(self, text: str, pos: int) -> Any:
        return parse_boxes(text, row=self.data.index[pos])

    def _encode(self, value: Any) -> str | None:
        if value is None:
            return None
        return json.dumps([_rounded(b) for b in value], separators=(",", ":"))

    def _get(self, pos: int) -> list[dict[str, Any]] | None:
        value = self.data.iat[pos, self._col]
        if isinstance(value, list):
            return value
        if value is None or (np.ndim(value) == 0 and pd.isna(value)):
            return None
        return parse_boxes(value, row=self.data.index[pos])

    def _put(self, pos: int, value: Any) -> None:
        self.data.iat[pos, self._col] = None if value is None else copy.deepcopy(value)

    def _missing(self) -> np.ndarray:
        values = self.data.iloc[:, self._col]
        return np.fromiter(
            (
                not isinstance(v, list) and (v is None or bool(np.ndim(v) == 0 and pd.isna(v)))
                for v in values
            ),
            dtype=bool,
            count=len(values),
        )

    def _same(self, a: Any, b: Any) -> bool:
        return a == b

    def _describe(self, value: Any) -> str:
        if value is None:
            return "not done"
        return f"{len(value)} box{'es' if len(value) != 1 else ''}"

    def boxes(self, pos: int | None = None) -> list[dict[str, Any]]:
        """The boxes of row ``pos`` (default: the current row), a copy."""
        pos = self._require_row() if pos is None else pos
        return copy.deepcopy(self._get(pos) or [])

    # -- sizes and suggestions -------------------------------------------------------------
    def full_size(self, pos: int) -> tuple[int, int] | None:
        """(width, height) of row ``pos``'s image as displayed at full size (box units)."""
        if pos not in self._sizes:
            from ..images.read import inspect_images

            info = inspect_images([self._cell(pos, self._image_column)])
            w, h = info["width"].iat[0], info["height"].iat[0]
            self._sizes[pos] = None if pd.isna(w) or pd.isna(h) else (int(w), int(h))
        return self._sizes[pos]

    def _suggested(self, pos: int) -> list[dict[str, Any]]:
        if self.suggestions is None or pos in self._rejected:
            return []
        value = self._cell(pos, self.suggestions)
        taken = self._taken.get(pos, [])
        return [b for b in parse_boxes(value, row=self.data.index[pos]) or [] if b not in taken]

    def _disagreement(self, pos: int) -> float:
        """1 - the mean F1 (IoU 0.5, same label) over pairs of box sets of this row."""
        sets = [self._get(pos), *self.others(pos).values()]
        if self.suggestions is not None:
            sets.append(parse_boxes(self._cell(pos, self.suggestions)))
        sets = [s for s in sets if s is not None]
        if len(sets) < 2:
            return -1.0
        scores = []
        for i in range(len(sets)):
            for j in range(i + 1, len(sets)):
                a, b = sets[i], sets[j]
                if not a and not b:
                    scores.append(1.0)
                    continue
                matched = len(match_boxes(a, b))
                scores.append(2 * matched / (len(a) + len(b)))
        return 1.0 - float(np.mean(scores))

    # -- actions ---------------------------------------------------------------------------
    def _checked(self, box: Mapping[str, Any], pos: int) -> dict[str, Any]:
        box = check_boxes([dict(box)], row=self.data.index[pos])[0]
        if box["label"] not in self.labels:
            raise ValueError(f"{box['label']!r} is not one of the labels {self.labels}")
        size = self.full_size(pos)
        if size is not None:  # keep it on the image
            w, h = size
            x0, y0 = min(max(box["x"], 0.0), w), min(max(box["y"], 0.0), h)
            x1, y1 = min(box["x"] + box["w"], w), min(box["y"] + box["h"], h)
            if x1 - x0 <= 0 or y1 - y0 <= 0:
                raise ValueError(f"the box {box} lies outside the {w}x{h} image")
            box.update(x=x0, y=y0, w=x1 - x0, h=y1 - y0)
        return _rounded(box)

    def _set_boxes(self, pos: int, boxes: list[dict[str, Any]], message: str) -> None:
        self._write(pos, boxes)
        self._show(f"{self._row_name(pos)}: {message}")

    def add_box(self, x: float, y: float, w: float, h: float, *, label: str | None = None) -> None:
        """Add a box to the current row (``label`` defaults to the current class)."""
        pos = self._require_row()
        box = self._checked(
            {"label": label or self.view.current_label, "x": x, "y": y, "w": w, "h": h}, pos
        )
        boxes = [*self.boxes(pos), box]
        self.view.selected = len(boxes) - 1
        self._set_boxes(pos, boxes, f"added {box['label']!r} box {len(boxes)}")

    def set_box(self, i: int, **changes: Any) -> None:
        """Change box ``i`` of the current row: ``x``, ``y``, ``w``, ``h`` and/or ``label``."""
        pos = self._require_row()
        boxes = self.boxes(pos)
        if not 0 <= i < len(boxes):
            raise IndexError(f"row {self.data.index[pos]!r} has {len(boxes)} boxes, no box {i + 1}")
        unknown = set(changes) - {"label", "x", "y", "w", "h"}
        if unknown:
            raise TypeError(f"set_box: unknown fields {sorted(unknown)}")
        boxes[i] = self._checked({**boxes[i], **changes}, pos)
        what = "relabelled" if set(changes) == {"label"} else "changed"
        self._set_boxes(pos, boxes, f"{what} box {i + 1} ({boxes[i]['label']!r})")

    def delete(self, i: int | None = None) -> None:
        """Delete box ``i`` of the current row (default: the selected box)."""
        pos = self._require_row()
        boxes = self.boxes(pos)
        i = self.view.selected if i is None else i
        if not 0 <= i < len(boxes):
            raise ValueError("select a box first (click it), then delete it")
        gone = boxes.pop(i)
        self.view.selected = -1
        self._set_boxes(pos, boxes, f"deleted {gone['label']!r} box {i + 1}")

    def select_label(self, label: str) -> None:
        """Make ``label`` the class of the next box drawn, and of the selected box."""
        if label not in self.labels:
            raise ValueError(f"{label!r} is not one of the labels {self.labels}")
        self.view.current_label = label
        pos = self.position
        if pos is not None and 0 <= self.view.selected < len(self.boxes(pos)):
            self.set_box(self.view.selected, label=label)
        else:
            self._say(f"next box: {label!r}")

    def accept(self, i: int | None = None) -> None:
        """Take the model's proposed box ``i`` (default: all of them) into the row's boxes."""
        pos = self._require_row()
        proposed = self._suggested(pos)
        if not proposed:
            raise ValueError(f"row {self.data.index[pos]!r} has no proposed boxes to accept")
        chosen = proposed if i is None else [proposed[i]]
        taken = [self._checked(b, pos) for b in chosen]
        boxes = [*self.boxes(pos), *taken]
        self._taken.setdefault(pos, []).extend(chosen)  # shown once: as boxes now
        self._accepted.append((len(self._history) + 1, pos, chosen))
        self._set_boxes(pos, boxes, f"accepted {len(taken)} proposed box(es)")

    def undo(self) -> None:
        """Undo the last change; an undone accept offers the model's boxes again."""
        if self._accepted and self._accepted[-1][0] == len(self._history):
            _, pos, chosen = self._accepted.pop()
            taken = self._taken.get(pos, [])
            for box in chosen:
                if box in taken:
                    taken.remove(box)
        super().undo()

    def reject(self) -> None:
        """Hide the model's proposed boxes of the current row."""
        pos = self._require_row()
        self._rejected.add(pos)
        self._show(f"{self._row_name(pos)}: proposed boxes hidden")

    def empty(self) -> None:
        """Mark the current row "nothing to box" (an empty list) and go on."""
        pos = self._require_row()
        if self.boxes(pos):
            raise ValueError("this image has boxes; delete them first to mark it empty")
        self._write(pos, [])
        self._move(+1, f"{self._row_name(pos)}: no boxes")

    # -- front end -------------------------------------------------------------------------
    def _on_select(self, change: dict) -> None:
        pos = self.position
        i = change["new"]
        if pos is not None and 0 <= i < len(self.boxes(pos)):
            self.view.current_label = self.boxes(pos)[i]["label"]

    def _choose(self, choice: str) -> None:  # keys 1-9
        self.select_label(choice)

    def _on_view_msg(self, kind: Any, content: dict[str, Any]) -> None:
        box = content.get("box") or {}
        if kind == "draw":
            self.add_box(box["x"], box["y"], box["w"], box["h"])
        elif kind == "edit":
            coords = {k: box[k] for k in ("x", "y", "w", "h") if k in box}
            self.set_box(int(content.get("index", -1)), **coords)
        elif kind == "take":
            self.accept(int(content.get("index", -1)))

    def _key_help(self) -> str:
        names = {
            "delete": "delete box",
            "accept": "accept model",
            "reject": "hide model",
            "empty": "no boxes",
            "zoom_in": "zoom",
            "zoom_out": "out",
            "zoom_reset": "fit",
            "pan": "+drag pan",
        }
        return " · ".join(
            [
                "drag: draw · drag a box: move · corner: resize",
                *digit_help(min(len(self.labels), 9), "class"),
                *key_help(self._active_bindings(), DEFAULT_KEYS, names),
            ]
        )

    def _show(self, message: str = "") -> None:
        pos = self.position
        if pos is None:
            self._draw(message, **NO_ROWS, boxes=[], suggestions=[], others=[])
            return
        thumb = self._row_image(pos)
        size = self.full_size(pos)
        title = self._row_title(pos)
        if size is not None:
            title += f" · {size[0]}×{size[1]}"
        others = []
        if not self.blind:
            for name, boxes in self.others(pos).items():
                others += [{**b, "annotator": name or "(no name)"} for b in boxes or []]
        # A new image: nothing selected, the view's zoom reset.
        moved = {"selected": -1, "row_id": self.view.row_id + 1} if self._shown != pos else {}
        self._shown = pos
        width, height = size if size is not None else (0, 0)
        self._draw(
            message,
            **moved,
            image=thumb.data,
            mime=thumb.mime,
            image_error=thumb.error or ("" if size is not None else "size unknown"),
            natural_width=width,
            natural_height=height,
            boxes=self.boxes(pos),
            suggestions=self._suggested(pos),
            others=others,
            title=title,
        )
