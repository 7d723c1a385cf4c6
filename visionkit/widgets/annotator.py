"""``Annotator``: label a DataFrame's images one at a time, from the keyboard, never losing one.

Usage:

    ann = vk.Annotator(df, labels=["animal", "vehicle", "food"], save="labels.csv",
                       suggestions="answer", annotator="ana")
    ann                      # click it once, then: 1-9 label, Enter/a accept the model's
                             # answer, → next, ← previous, s skip to the next unlabelled row,
                             # Backspace undo, Delete clear (keys={...} changes them)
    ann.label("animal")      # what the buttons and keys call: label this row, move on
    df["label"]              # written at once, in place

Every change is written to ``df[label_column]`` and, with ``save=``, to the file at once
(atomically, long form: one row per image and annotator, with who and when; see
``visionkit.annotation.savefile``). An Annotator made later with the same file and annotator
resumes at the first unlabelled row with every label restored; another ``annotator=`` on the
same file adds their own labels beside the first one's (``blind=True`` hides the others'
labels while they work). With ``multi=True`` a row holds several labels, stored as one string
joined with ``sep`` (``"animal;food"``) in the order of ``labels``, which survives CSV and
parquet alike; split it with ``df[label_column].str.split(";")``.

The widget takes keys only after a click into it, and shows when it has them (a blue frame and
"keys: on"); keys with Ctrl, Alt, Cmd or Shift are never taken, so Shift+Enter and the
notebook's own shortcuts keep working around it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anywidget
import ipywidgets
import numpy as np
import pandas as pd
import traitlets

from ..annotation.agreement import match_label, normalise
from ._assets import css, esm
from ._controls import button, button_row, distinct
from ._frame import RowFilter, require_frame
from ._keymap import digit_help, key_help
from ._session import NO_ROWS, LabelSession

__all__ = ["Annotator"]

FILTERS = ("all", "unlabelled", "disagree")
DEFAULT_KEYS: dict[str, list[str]] = {
    "next": ["ArrowRight"],
    "previous": ["ArrowLeft"],
    "undo": ["Backspace"],
    "skip": ["s"],
    "clear": ["Delete"],
    "accept": ["a", "Enter"],
}


class AnnotatorView(anywidget.AnyWidget):
    """The Annotator's own front end: the large image, the model's answer, the progress line,
    the free-text box, and the keyboard (keys are sent to Python as ``{"type": "key"}``)."""

    _esm = esm("_keys.js", "annotator.js")
    _css = css("annotator.css")

    image = traitlets.Bytes(b"").tag(sync=True)
    mime = traitlets.Unicode("").tag(sync=True)
    image_error = traitlets.Unicode("").tag(sync=True)
    view_size = traitlets.Int(640).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    current = traitlets.Unicode("").tag(sync=True)
    suggestion = traitlets.Unicode("").tag(sync=True)
    others = traitlets.Unicode("").tag(sync=True)
    progress = traitlets.Unicode("").tag(sync=True)
    message = traitlets.Unicode("").tag(sync=True)
    message_kind = traitlets.Unicode("info").tag(sync=True)
    text_mode = traitlets.Bool(False).tag(sync=True)
    row_id = traitlets.Int(0).tag(sync=True)  # bumps on every move, so the text box refreshes
    shortcuts = traitlets.List(traitlets.Unicode()).tag(sync=True)
    key_help = traitlets.Unicode("").tag(sync=True)


class Annotator(LabelSession, ipywidgets.VBox):
    """Label ``data[label_column]`` row by row; see the module docstring for the keys.

    ``labels`` are the labels offered as buttons (keys 1-9 for the first nine); ``text=True``
    adds a free-text box (Enter submits). ``suggestions`` names a column of model answers to
    show and accept; ``filter`` picks the rows to walk: ``"all"``, ``"unlabelled"``,
    ``"disagree"`` (human label and model answer differ), a ``DataFrame.query`` string or a
    boolean mask; ``order="disagreement"`` walks first the rows where annotators (and the
    model) disagree most. ``annotator`` names who labels (recorded in the save file with the
    time); ``blind=True`` hides the other annotators' labels. ``keys`` changes key bindings:
    ``{"next": "j", "previous": "k", "accept": ["a"]}`` (actions: next, previous, undo, skip,
    clear, accept). ``image_column`` defaults to ``image`` or ``path``; ``view_size`` is the
    largest side of the image shown, in pixels.
    """

    def __init__(
        self,
        data: pd.DataFrame,
        *,
        label_column: str = "label",
        labels: Sequence[str] | None = None,
        multi: bool = False,
        text: bool = False,
        suggestions: str | None = None,
        save: str | Path | None = None,
        annotator: str | None = None,
        blind: bool = False,
        filter: RowFilter = "all",
        order: str = "index",
        keys: Mapping[str, str | Sequence[str]] | None = None,
        image_column: str | None = None,
        view_size: int = 640,
        sep: str = ";",
    ) -> None:
        require_frame(data, "Annotator")
        labels = distinct(labels or [], "labels")
        if not labels and not text:
            raise ValueError(
                "Annotator needs labels=[...] to label with, text=True for free text, or both"
            )
        if multi and any(sep in o for o in labels):
            raise ValueError(f"with multi=True no label may contain sep={sep!r}: {labels}")
        self.labels = labels
        self.multi = multi
        self.text = text
        self.sep = sep
        self._check_columns(data, label_column, suggestions, image_column)
        self._bind_keys(labels, "labels", DEFAULT_KEYS, keys)
        self._start(data, label_column, annotator=annotator, save=save, blind=blind)
        self._images = self._image_cache(view_size, kept=32)

        self.view = AnnotatorView(view_size=view_size, text_mode=text)
        self.view.on_msg(self._on_msg)
        self.label_buttons: dict[str, ipywidgets.Button] = {
            option: button(
                f"{option} [{i}]" if i <= 9 else option,
                f"label this row {option!r}" + (f" (key {i})" if i <= 9 else ""),
                self._safe(lambda o=option: self._press_label(o)),
            )
            for i, option in enumerate(labels, start=1)
        }
        self.nav_buttons = self._action_buttons(
            ("accept", "previous", "next", "skip", "undo"),
            {
                "accept": ("accept answer", "label with the model's answer"),
                "skip": ("skip", "leave this row, go to the next unlabelled one"),
            },
            keys_in_tooltip=True,
        )
        super().__init__(
            children=[self.view, button_row(self.label_buttons), button_row(self.nav_buttons)]
        )
        self.add_class("vk-annotator")
        self.view.shortcuts = self._shortcut_keys()
        self.view.key_help = self._key_help()
        if isinstance(filter, str) and filter == "disagree" and suggestions is None:
            raise ValueError("filter='disagree' needs suggestions= (the model's answers)")
        self._begin(filter, order)

    # -- cells -----------------------------------------------------------------------------
    def _keeps_dtype(self, values: pd.Series) -> bool:
        return pd.api.types.is_string_dtype(values)

    def _get(self, pos: int) -> str | None:
        value = super()._get(pos)
        return None if value is None else str(value)

    def _labels_of(self, pos: int) -> list[str]:
        value = self._get(pos)
        return [] if value is None else [v for v in value.split(self.sep) if v]

    def _join(self, labels: Sequence[str]) -> str | None:
        chosen = set(labels)
        ordered = [o for o in self.labels if o in chosen] + sorted(chosen - set(self.labels))
        return self.sep.join(ordered) or None

    # -- rows to walk ----------------------------------------------------------------------
    def _filter_mask(self, where: Any) -> np.ndarray:
        if isinstance(where, str) and where == "disagree":
            if self.suggestions is None:
                raise ValueError("filter='disagree' needs suggestions= (the model's answers)")
            return np.array([self._disagrees(p) for p in range(len(self.data))], dtype=bool)
        return super()._filter_mask(where)

    def _labels_for_disagreement(self, pos: int) -> list[Any]:
        labels = super()._labels_for_disagreement(pos)
        said = self._suggested_label(pos) if self.suggestions is not None else None
        if said is None and self.suggestions is not None:
            said = self._suggestion(pos)
        labels = [normalise(v) for v in labels]
        if said is not None:
            labels.append(normalise(said))
        return [v for v in labels if v is not None]

    def _disagrees(self, pos: int) -> bool:
        human, answer = self._get(pos), self._suggestion(pos)
        if human is None or answer is None:
            return False
        said = self._suggested_label(pos)
        if said is not None:
            return normalise(said) != normalise(human)
        return normalise(answer) != normalise(human)

    # -- actions (buttons and keys call these) ---------------------------------------------
    def label(self, value: str | Sequence[str]) -> None:
        """Give the current row ``value`` (a list, or a ``sep``-joined string, when multi) and
        move to the next row."""
        pos = self._require_row()
        checked = self._check(value)
        self._write(pos, checked)
        self._move(+1, f"{self._row_name(pos)} labelled {checked!r}")

    def toggle(self, label: str) -> None:
        """With ``multi=True``: add ``label`` to the current row's labels, or remove it."""
        if not self.multi:
            raise ValueError("toggle() is for multi=True; use label()")
        pos = self._require_row()
        current = self._labels_of(pos)
        adding = label not in current
        current = [*current, label] if adding else [x for x in current if x != label]
        self._write(pos, self._check(current))
        self._show(f"{self._row_name(pos)}: {'added' if adding else 'removed'} {label!r}")

    @property
    def label_column(self) -> str:
        """The column the labels are written to."""
        return self._column

    def accept(self) -> None:
        """Label the current row with the model's answer (``suggestions``) and move on."""
        pos = self._require_row()
        if self.suggestions is None:
            raise ValueError("accept() needs suggestions= (a column of model answers)")
        answer = self._suggestion(pos)
        if answer is None:
            raise ValueError(f"row {self.data.index[pos]!r} has no model answer to accept")
        said = self._suggested_label(pos)
        if said is None:
            raise ValueError(f"the model's answer {answer!r} is not one of {self.labels}")
        self.label(said)

    def clear(self) -> None:
        """Remove the current row's label (undo brings it back)."""
        pos = self._require_row()
        self._write(pos, None)
        self._show(f"{self._row_name(pos)}: label removed")

    # -- internals -------------------------------------------------------------------------
    def _check(self, value: str | Sequence[str] | None) -> str | None:
        if self.multi:
            parts = value.split(self.sep) if isinstance(value, str) else list(value or [])
            parts = [str(p).strip() for p in parts if str(p).strip()]
            if not self.text:
                wrong = [p for p in parts if p not in self.labels]
                if wrong:
                    raise ValueError(f"{wrong} not among the labels {self.labels}")
            if not parts:
                raise ValueError("give at least one label (clear() removes them)")
            return self._join(parts)
        if not isinstance(value, str):
            raise TypeError(f"label must be a string, not {type(value).__name__}")
        value = value.strip()
        if not value:
            raise ValueError("a label cannot be blank (clear() removes one)")
        if not self.text and value not in self.labels:
            raise ValueError(f"{value!r} is not one of the labels {self.labels}")
        return value

    def _suggestion(self, pos: int) -> str | None:
        if self.suggestions is None:
            return None
        value = self._cell(pos, self.suggestions)
        if value is None or (np.ndim(value) == 0 and pd.isna(value)) or not str(value).strip():
            return None
        return str(value).strip()

    def _suggested_label(self, pos: int) -> str | None:
        """The model's answer as a label: the option it names, or its text when free text."""
        answer = self._suggestion(pos)
        if answer is None:
            return None
        if self.multi and self.labels:
            parts = re.split(rf"{re.escape(self.sep)}|,|\band\b", answer)
            named = [match_label(p, self.labels) for p in parts]
            found = [f for f in named if f is not None]
            return self._join(found) if found else None
        if self.labels:
            option = match_label(answer, self.labels)
            if option is not None or not self.text:
                return option
        return answer

    def _shortcut_keys(self) -> list[str]:
        keys = [str(i) for i in range(1, min(len(self.labels), 9) + 1)]
        return keys + list(self._active_bindings())

    def _key_help(self) -> str:
        return " · ".join(
            [
                *digit_help(min(len(self.labels), 9), "label"),
                *key_help(
                    self._active_bindings(),
                    ("next", "previous", "skip", "undo", "clear", "accept"),
                    {"accept": "accept the model's answer"},
                ),
            ]
        )

    def _press_label(self, option: str) -> None:
        if self.multi:
            self.toggle(option)
        else:
            self.label(option)

    def _choose(self, choice: str) -> None:  # keys 1-9
        self._press_label(choice)

    def _on_view_msg(self, kind: Any, content: dict[str, Any]) -> None:
        if kind == "text":
            self.label(str(content.get("value", "")))

    def _others_text(self, pos: int) -> str:
        if self.blind or self._file is None:
            return ""
        others = self.others(pos)
        return " · ".join(f"{name or '(no name)'}: {value}" for name, value in others.items())

    def _show(self, message: str = "") -> None:
        pos = self.position
        if pos is None:
            self._draw(message, **NO_ROWS, current="", suggestion="", others="")
            return
        thumb = self._row_image(pos)
        answer = self._suggestion(pos)
        suggestion = ""
        if answer is not None:
            said = self._suggested_label(pos)
            suggestion = answer if said in (None, answer) else f"{answer}  →  {said}"
            if said is None:
                suggestion += "  (not one of the labels)"
        current = self._get(pos) or ""
        chosen = set(self._labels_of(pos)) if self.multi else {current}
        for option, widget in self.label_buttons.items():
            widget.button_style = "info" if option in chosen else ""
        self._draw(
            message,
            image=thumb.data,
            mime=thumb.mime,
            image_error=thumb.error or "",
            title=self._row_title(pos),
            current=current,
            suggestion=suggestion,
            others=self._others_text(pos),
            row_id=self.view.row_id + 1,
        )
