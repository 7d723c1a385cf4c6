"""``Annotator``: label a DataFrame's images one at a time, from the keyboard, never losing one.

Usage::

    ann = vk.Annotator(df, "label", ["animal", "vehicle", "food"], save="labels.csv",
                       suggestions="answer")
    ann                      # keys: 1-9 label, Enter/a accept the model's answer, → next,
                             # ← previous, s skip to the next unlabelled row, Backspace undo
    ann.label("animal")      # what the buttons and keys call: label this row, move on
    df["label"]              # written at once, in place

Every change is written to ``df[column]`` and, with ``save=``, to the file at once (atomically);
an Annotator made later with the same file resumes at the first unlabelled row with every label
restored. With ``multi=True`` a row holds several labels, stored as one string joined with
``sep`` (``"animal;food"``) in the order of ``options``, which survives CSV and parquet alike;
split it with ``df[column].str.split(";")``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anywidget
import ipywidgets
import numpy as np
import pandas as pd
import traitlets

from ..annotation.agreement import match_option, normalise
from ..annotation.savefile import file_format, read_labels, row_keys, write_labels
from ._frame import format_value, row_mask
from ._frame import image_column as find_image_column
from ._thumbs import ThumbnailCache

__all__ = ["Annotator"]

_HERE = Path(__file__).parent
FILTERS = ("all", "unlabelled", "disagree")
NAV_KEYS = {
    "ArrowRight": "next",
    "ArrowLeft": "previous",
    "Backspace": "undo",
    "s": "skip",
    "Delete": "clear",
}


class AnnotatorView(anywidget.AnyWidget):
    """The Annotator's own front end: the large image, the model's answer, the progress line,
    the free-text box, and the keyboard (keys are sent to Python as ``{"type": "key"}``)."""

    _esm = _HERE / "annotator.js"
    _css = _HERE / "annotator.css"

    image = traitlets.Bytes(b"").tag(sync=True)
    mime = traitlets.Unicode("").tag(sync=True)
    image_error = traitlets.Unicode("").tag(sync=True)
    image_size = traitlets.Int(640).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    current = traitlets.Unicode("").tag(sync=True)
    suggestion = traitlets.Unicode("").tag(sync=True)
    progress = traitlets.Unicode("").tag(sync=True)
    message = traitlets.Unicode("").tag(sync=True)
    message_kind = traitlets.Unicode("info").tag(sync=True)
    text_mode = traitlets.Bool(False).tag(sync=True)
    row_id = traitlets.Int(0).tag(sync=True)  # bumps on every move, so the text box refreshes
    shortcuts = traitlets.List(traitlets.Unicode()).tag(sync=True)


@dataclass(frozen=True)
class _Change:
    pos: int
    old: str | None
    new: str | None


class Annotator(ipywidgets.VBox):
    """Label ``df[column]`` row by row; see the module docstring for the keys.

    ``options`` are the labels offered as buttons (keys 1-9 for the first nine); ``text=True``
    adds a free-text box (Enter submits). ``suggestions`` names a column of model answers to
    show and accept; ``filter`` picks the rows to walk: ``"all"``, ``"unlabelled"``,
    ``"disagree"`` (human label and model answer differ), a ``DataFrame.query`` string or a
    boolean mask. ``image_column`` defaults to ``image`` or ``path``.
    """

    def __init__(
        self,
        df: pd.DataFrame,
        column: str = "label",
        options: Sequence[str] | None = None,
        *,
        multi: bool = False,
        text: bool = False,
        suggestions: str | None = None,
        save: str | Path | None = None,
        filter: Any = "all",
        image_column: str | None = None,
        image_size: int = 640,
        sep: str = ";",
    ) -> None:
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"Annotator needs a DataFrame, not {type(df).__name__}")
        options = [str(o) for o in (options or [])]
        if not options and not text:
            raise ValueError(
                "Annotator needs options=[...] to label with, text=True for free text, or both"
            )
        if len(set(options)) != len(options):
            raise ValueError(f"options must be distinct: {options}")
        if multi and any(sep in o for o in options):
            raise ValueError(f"with multi=True no option may contain sep={sep!r}: {options}")
        if suggestions is not None and suggestions not in df.columns:
            raise KeyError(f"suggestions={suggestions!r} is not a column: {list(df.columns)}")
        self.df = df
        self.column = column
        self.options = options
        self.multi = multi
        self.text = text
        self.sep = sep
        self.suggestions = suggestions
        self.save_path = Path(save) if save is not None else None
        if self.save_path is not None:
            file_format(self.save_path)  # .csv or .parquet, checked before any labelling
        self._image_column = image_column_name = find_image_column(df, image_column)
        if column in (image_column_name, suggestions):
            raise ValueError(f"column={column!r} would overwrite the images or the suggestions")
        self._prepare_column()
        self._history: list[_Change] = []
        self._extra = pd.DataFrame()
        self._keys: pd.DataFrame | None = None  # the save file's key columns, made once
        self.restored = 0
        if self.save_path is not None and self.save_path.exists():
            self.restored = self._restore()
        self._images = ThumbnailCache(
            df[image_column_name].to_numpy(dtype=object), image_size, rows=df.index, maxsize=32
        )

        self.view = AnnotatorView(image_size=image_size, text_mode=text)
        self.view.on_msg(self._on_msg)
        self.option_buttons: dict[str, ipywidgets.Button] = {}
        for i, option in enumerate(options, start=1):
            hint = f" [{i}]" if i <= 9 else ""
            button = ipywidgets.Button(
                description=f"{option}{hint}",
                tooltip=f"label this row {option!r}" + (f" (key {i})" if i <= 9 else ""),
                layout=ipywidgets.Layout(width="auto"),
            )
            button.on_click(self._safe(lambda _b, o=option: self._press_option(o)))
            self.option_buttons[option] = button
        nav = [
            ("previous", "← previous", "go back one row (←)"),
            ("next", "next →", "go on one row (→)"),
            ("skip", "skip [s]", "leave this row, go to the next unlabelled one (s)"),
            ("undo", "undo [⌫]", "undo the last change (Backspace)"),
        ]
        if suggestions is not None:
            nav.insert(0, ("accept", "accept answer [a]", "label with the model's answer"))
        self.nav_buttons: dict[str, ipywidgets.Button] = {}
        for name, description, tooltip in nav:
            button = ipywidgets.Button(
                description=description, tooltip=tooltip, layout=ipywidgets.Layout(width="auto")
            )
            button.on_click(self._safe(lambda _b, n=name: getattr(self, n)()))
            self.nav_buttons[name] = button
        box = ipywidgets.Layout(flex_flow="row wrap")
        super().__init__(
            children=[
                self.view,
                ipywidgets.HBox(list(self.option_buttons.values()), layout=box),
                ipywidgets.HBox(list(self.nav_buttons.values()), layout=box),
            ]
        )
        self.add_class("vk-annotator")
        self.view.shortcuts = self._shortcut_keys()
        self._order = np.arange(len(df))
        self._i = 0
        self._filter: Any = "all"
        self.filter = filter
        if self.restored:
            name = self.save_path.name if self.save_path else ""
            self._say(f"resumed from {name}: {self.restored} labels restored")

    # -- the label column ------------------------------------------------------------------
    def _prepare_column(self) -> None:
        df, column = self.df, self.column
        if column not in df.columns:
            df[column] = pd.Series([None] * len(df), index=df.index, dtype=object)
        elif not (
            pd.api.types.is_object_dtype(df[column]) or pd.api.types.is_string_dtype(df[column])
        ):
            # e.g. an all-NaN float column read back from CSV: text must fit in it.
            values = df[column].astype(object)
            df[column] = values.where(values.notna(), None)
        self._col = df.columns.get_loc(column)
        if not isinstance(self._col, int):
            raise ValueError(f"the DataFrame has more than one column named {column!r}")

    def _get(self, pos: int) -> str | None:
        value = self.df.iat[pos, self._col]
        if value is None or (np.ndim(value) == 0 and pd.isna(value)):
            return None
        text = str(value)
        return text if text.strip() else None

    def _missing(self) -> np.ndarray:
        """True for each row without a label (NA, None or blank), vectorised."""
        values = self.df.iloc[:, self._col]
        missing = values.isna().to_numpy(dtype=bool, copy=True)
        text = values[~missing].astype(str).str.strip()
        missing[np.flatnonzero(~missing)[(text == "").to_numpy(dtype=bool)]] = True
        return missing

    def _values(self) -> list[str | None]:
        missing = self._missing()
        return [
            None if m else str(v) for v, m in zip(self.df.iloc[:, self._col], missing, strict=True)
        ]

    def _put(self, pos: int, value: str | None) -> None:
        self.df.iat[pos, self._col] = value

    def _labels_of(self, pos: int) -> list[str]:
        value = self._get(pos)
        return [] if value is None else [v for v in value.split(self.sep) if v]

    def _join(self, labels: Sequence[str]) -> str | None:
        chosen = set(labels)
        ordered = [o for o in self.options if o in chosen] + sorted(chosen - set(self.options))
        return self.sep.join(ordered) or None

    # -- the save file ---------------------------------------------------------------------
    def _keyed(self) -> bool:
        return "path" in self.df.columns and self.column != "path"

    def _restore(self) -> int:
        assert self.save_path is not None
        saved = read_labels(self.save_path, self.column)
        with_path = self._keyed() and "path" in saved.columns
        key_cols = ["index", "path"] if with_path else ["index"]
        saved_keys = [tuple(str(v) for v in row) for row in saved[key_cols].itertuples(index=False)]
        labels = dict(zip(saved_keys, saved[self.column], strict=True))
        restored = 0
        matched: set[tuple[str, ...]] = set()
        for pos, key in enumerate(row_keys(self.df, with_path)):
            if key in labels:
                matched.add(key)
                if labels[key] is not None:
                    self._put(pos, labels[key])
                    restored += 1
        # Rows of the file this DataFrame does not have are kept and written back unchanged.
        keep = [k not in matched for k in saved_keys]
        self._extra = saved.loc[keep].reset_index(drop=True)
        return restored

    def _save(self) -> None:
        if self.save_path is None:
            return
        if self._keys is None or len(self._keys) != len(self.df):
            keys = pd.DataFrame({"index": [str(v) for v in self.df.index]})
            if self._keyed():
                keys["path"] = [str(p) for p in self.df["path"]]
            self._keys = keys
        frame = self._keys.copy()
        frame[self.column] = self._values()
        if len(self._extra):
            frame = pd.concat(
                [frame, self._extra.reindex(columns=frame.columns)], ignore_index=True
            )
        write_labels(self.save_path, frame)

    # -- rows to walk ----------------------------------------------------------------------
    @property
    def filter(self) -> Any:
        """The rows walked: ``"all"``, ``"unlabelled"``, ``"disagree"``, a query or a mask."""
        return self._filter

    @filter.setter
    def filter(self, where: Any) -> None:
        if where is None:
            where = "all"
        if isinstance(where, str) and where in FILTERS:
            if where == "all":
                mask = np.ones(len(self.df), dtype=bool)
            elif where == "unlabelled":
                mask = self._missing()
            else:
                if self.suggestions is None:
                    raise ValueError("filter='disagree' needs suggestions= (the model's answers)")
                mask = np.array([self._disagrees(p) for p in range(len(self.df))], dtype=bool)
        else:
            mask = row_mask(self.df, where)
        self._filter = where
        self._order = np.flatnonzero(mask)
        first = self._first_unlabelled(0)
        self._i = 0 if first is None else first
        self._show()

    def _disagrees(self, pos: int) -> bool:
        human, answer = self._get(pos), self._suggestion(pos)
        if human is None or answer is None:
            return False
        said = self._suggested_label(pos)
        if said is not None:
            return normalise(said) != normalise(human)
        return normalise(answer) != normalise(human)

    def _first_unlabelled(self, start: int) -> int | None:
        missing = self._missing()[self._order[start:]]
        return start + int(np.argmax(missing)) if missing.any() else None

    @property
    def position(self) -> int | None:
        """The current row's position in the DataFrame (``df.iloc``); None if no rows match."""
        return int(self._order[self._i]) if len(self._order) else None

    @position.setter
    def position(self, pos: int) -> None:
        where = np.flatnonzero(self._order == pos)
        if not len(where):
            raise IndexError(f"row {pos} is not among the {len(self._order)} rows being annotated")
        self._i = int(where[0])
        self._show()

    @property
    def rows(self) -> pd.DataFrame:
        """The rows being walked (all, or those the filter picked), in order."""
        return self.df.iloc[self._order]

    @property
    def current(self) -> Any:
        """The current row's index label."""
        pos = self.position
        return None if pos is None else self.df.index[pos]

    @property
    def labelled(self) -> int:
        """How many rows of the DataFrame have a label."""
        return int((~self._missing()).sum())

    @property
    def done(self) -> bool:
        """True when every row being walked has a label."""
        return self._first_unlabelled(0) is None

    # -- actions (buttons and keys call these) ---------------------------------------------
    def label(self, value: str | Sequence[str]) -> None:
        """Give the current row ``value`` (a list, or a ``sep``-joined string, when multi) and
        move to the next row."""
        pos = self._require_row()
        self._write(pos, self._check(value))
        self._move(+1)

    def toggle(self, option: str) -> None:
        """With ``multi=True``: add ``option`` to the current row's labels, or remove it."""
        if not self.multi:
            raise ValueError("toggle() is for multi=True; use label()")
        pos = self._require_row()
        labels = self._labels_of(pos)
        labels = [x for x in labels if x != option] if option in labels else [*labels, option]
        self._write(pos, self._check(labels))
        self._show()

    def accept(self) -> None:
        """Label the current row with the model's answer (``suggestions``) and move on."""
        pos = self._require_row()
        if self.suggestions is None:
            raise ValueError("accept() needs suggestions= (a column of model answers)")
        answer = self._suggestion(pos)
        if answer is None:
            raise ValueError(f"row {self.df.index[pos]!r} has no model answer to accept")
        said = self._suggested_label(pos)
        if said is None:
            raise ValueError(f"the model's answer {answer!r} is not one of {self.options}")
        self.label(said)

    def clear(self) -> None:
        """Remove the current row's label (undo brings it back)."""
        pos = self._require_row()
        self._write(pos, None)
        self._show()

    def next(self) -> None:
        """Go on one row."""
        self._move(+1)

    def previous(self) -> None:
        """Go back one row."""
        self._move(-1)

    def skip(self) -> None:
        """Leave the current row as it is and go to the next row still without a label
        (wrapping round to the start)."""
        self._require_row()
        after = self._first_unlabelled(self._i + 1)
        if after is None:
            after = self._first_unlabelled(0)
        if after is None or after == self._i:
            self._i = min(self._i + 1, len(self._order) - 1)
        else:
            self._i = after
        self._show()

    def undo(self) -> None:
        """Undo the last change (label, toggle or clear) and go back to its row."""
        if not self._history:
            self._say("nothing to undo")
            return
        change = self._history.pop()
        self._put(change.pos, change.old)
        self._save()
        where = np.flatnonzero(self._order == change.pos)
        if len(where):
            self._i = int(where[0])
        self._show(f"undone: row {format_value(self.df.index[change.pos])}")

    # -- internals -------------------------------------------------------------------------
    def _require_row(self) -> int:
        pos = self.position
        if pos is None:
            raise IndexError("no rows to annotate (the filter matches none)")
        return pos

    def _check(self, value: str | Sequence[str] | None) -> str | None:
        if self.multi:
            parts = value.split(self.sep) if isinstance(value, str) else list(value or [])
            parts = [str(p).strip() for p in parts if str(p).strip()]
            if not self.text:
                wrong = [p for p in parts if p not in self.options]
                if wrong:
                    raise ValueError(f"{wrong} not among the options {self.options}")
            if not parts:
                raise ValueError("give at least one label (clear() removes them)")
            return self._join(parts)
        if not isinstance(value, str):
            raise TypeError(f"label must be a string, not {type(value).__name__}")
        value = value.strip()
        if not value:
            raise ValueError("a label cannot be blank (clear() removes one)")
        if not self.text and value not in self.options:
            raise ValueError(f"{value!r} is not one of the options {self.options}")
        return value

    def _write(self, pos: int, value: str | None) -> None:
        old = self._get(pos)
        if old == value:
            return
        self._put(pos, value)
        self._history.append(_Change(pos, old, value))
        try:
            self._save()
        except Exception as exc:
            # The label stays in the DataFrame; say loudly that the file did not get it.
            raise OSError(f"labelled row {self.df.index[pos]!r}, but saving failed: {exc}") from exc

    def _move(self, step: int) -> None:
        self._require_row()
        target = self._i + step
        if target >= len(self._order):
            left = int(self._missing()[self._order].sum())
            self._show(
                "end of the rows" + (f"; {left} still unlabelled (s jumps there)" if left else "")
            )
            return
        self._i = max(target, 0)
        self._show()

    def _suggestion(self, pos: int) -> str | None:
        if self.suggestions is None:
            return None
        value = self.df.iat[pos, self.df.columns.get_loc(self.suggestions)]
        if value is None or (np.ndim(value) == 0 and pd.isna(value)) or not str(value).strip():
            return None
        return str(value).strip()

    def _suggested_label(self, pos: int) -> str | None:
        """The model's answer as a label: the option it names, or its text when free text."""
        answer = self._suggestion(pos)
        if answer is None:
            return None
        if self.multi and self.options:
            parts = re.split(rf"{re.escape(self.sep)}|,|\band\b", answer)
            named = [match_option(p, self.options) for p in parts]
            found = [f for f in named if f is not None]
            return self._join(found) if found else None
        if self.options:
            option = match_option(answer, self.options)
            if option is not None or not self.text:
                return option
        return answer

    def _shortcut_keys(self) -> list[str]:
        keys = [str(i) for i in range(1, min(len(self.options), 9) + 1)]
        keys += list(NAV_KEYS)
        if self.suggestions is not None:
            keys += ["a", "Enter"]
        return keys

    def _press_option(self, option: str) -> None:
        if self.multi:
            self.toggle(option)
        else:
            self.label(option)

    def _on_key(self, key: str) -> None:
        if key.isdigit() and key != "0":
            i = int(key) - 1
            if i < len(self.options):
                self._press_option(self.options[i])
            return
        if key in NAV_KEYS:
            getattr(self, NAV_KEYS[key])()
        elif key in ("a", "A", "Enter") and self.suggestions is not None:
            self.accept()

    def _on_msg(self, _widget: Any, content: dict, _buffers: Any) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "key":
            self._safe(lambda: self._on_key(str(content.get("key", ""))))()
        elif kind == "text":
            self._safe(lambda: self.label(str(content.get("value", ""))))()

    def _safe(self, action: Callable[..., None]) -> Callable[..., None]:
        """Run ``action`` for a button or key; show its error in the widget instead of losing it
        in the kernel's log."""

        def run(*args: Any) -> None:
            try:
                action(*args)
            except Exception as exc:
                self._say(str(exc), error=True)

        return run

    def _say(self, message: str, *, error: bool = False) -> None:
        self.view.message = message
        self.view.message_kind = "error" if error else "info"

    def _show(self, message: str = "") -> None:
        view = self.view
        pos = self.position
        total, labelled = len(self.df), self.labelled
        progress = f"{labelled} / {total} labelled"
        if pos is None:
            with view.hold_sync():
                view.image, view.mime, view.image_error = b"", "", ""
                view.title, view.current, view.suggestion = "no rows match the filter", "", ""
                view.progress = progress
                self._say(message)
            return
        thumb = self._images.get(pos)
        ahead = [int(p) for p in self._order[self._i + 1 : self._i + 3]]
        self._images.prefetch(ahead)
        where = f"row {self._i + 1} of {len(self._order)}"
        if not (isinstance(self._filter, str) and self._filter == "all"):
            name = self._filter if isinstance(self._filter, str) else "custom filter"
            where += f" ({name})"
        title = format_value(self.df.index[pos])
        source = self.df.iat[pos, self.df.columns.get_loc(self._image_column)]
        if isinstance(source, str | Path):
            title += f" · {source}"
        answer = self._suggestion(pos)
        suggestion = ""
        if answer is not None:
            said = self._suggested_label(pos)
            suggestion = answer if said in (None, answer) else f"{answer}  →  {said}"
            if said is None:
                suggestion += "  (not one of the options)"
        current = self._get(pos) or ""
        chosen = set(self._labels_of(pos)) if self.multi else {current}
        for option, button in self.option_buttons.items():
            button.button_style = "info" if option in chosen else ""
        with view.hold_sync():
            view.image, view.mime = thumb.data, thumb.mime
            view.image_error = thumb.error or ""
            view.title = title
            view.current = current
            view.suggestion = suggestion
            view.progress = f"{progress} · {where}"
            view.row_id = view.row_id + 1
            self._say(message)

    def __repr__(self) -> str:  # cheap: no trait dump of the image bytes
        return (
            f"<Annotator {self.column!r}: {self.labelled} / {len(self.df)} labelled, "
            f"position {self.position}>"
        )
