"""What the Annotator and the BoxAnnotator share: one column of a DataFrame labelled row by
row, by one named annotator, saved after every change, with undo, filters and review order;
the checks of their arguments and the parts of the view every row shows (image, title,
progress, message). Their buttons and keys are ``visionkit.widgets._controls``'. Subclasses
say how a cell is stored (text or boxes) and what else their view shows.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..annotation.savefile import AnnotationFile, Key, row_keys
from ._controls import Controls
from ._frame import RowFilter, find_image_column, format_value, row_mask
from ._thumbs import Thumb, ThumbnailCache

__all__ = ["NO_ROWS", "LabelSession"]

ORDERS = ("index", "disagreement")
# What the view shows when the filter matches no row (the widget blanks its own traits too).
NO_ROWS: dict[str, Any] = {
    "image": b"",
    "mime": "",
    "image_error": "",
    "title": "no rows match the filter",
}


@dataclass(frozen=True)
class Change:
    pos: int
    old: Any
    new: Any


class LabelSession(Controls):
    """The row walking, saving and undo behind both annotators (not a widget by itself)."""

    _done_word = "labelled"  # the progress line: "3 / 20 labelled"
    _repr_done = "labelled"  # the repr: "3 / 20 labelled"
    _restored = "{} labels restored"  # the message when a save file restored some
    _column_param = "label_column"  # the parameter naming the column written to

    data: pd.DataFrame
    _column: str
    view: Any  # the widget's own front end (an anywidget with the traits _draw sets)
    _images: ThumbnailCache  # made by the widget with _image_cache, once the column is ready

    # -- set up ----------------------------------------------------------------------------
    def _check_columns(
        self, df: pd.DataFrame, column: str, suggestions: str | None, image_column: str | None
    ) -> None:
        """Check the columns named before anything is changed; keep the suggestions' and the
        images' (``image_column`` defaults to ``image`` or ``path``)."""
        if suggestions is not None and suggestions not in df.columns:
            raise KeyError(f"suggestions={suggestions!r} is not a column: {list(df.columns)}")
        self.suggestions = suggestions
        self._image_column = find_image_column(df, image_column)
        if column in (self._image_column, suggestions):
            raise ValueError(
                f"{self._column_param}={column!r} would overwrite the images or the suggestions"
            )

    def _start(
        self,
        df: pd.DataFrame,
        column: str,
        *,
        annotator: str | None,
        save: str | Path | None,
        blind: bool,
    ) -> None:
        self.data = df
        self._column = column
        self.annotator = None if annotator is None else str(annotator)
        self.blind = bool(blind)
        self._prepare_column()
        self._history: list[Change] = []
        self._i = 0
        self._order = np.arange(len(df))
        self._filter: RowFilter = "all"
        self._order_by = "index"
        self._keys: list[Key] = row_keys(df, self._keyed())
        self._file: AnnotationFile | None = None
        self._others: dict[str, dict[Key, str]] | None = None
        self._others_generation: int | None = None
        self.restored = 0
        if save is not None:
            self._file = AnnotationFile(save, column, self.annotator, keyed=self._keyed())
            if not self._file.keyed:
                self._keys = row_keys(df, False)
            self.restored = self._restore()
            self._seed()

    def _seed(self) -> None:
        """Labels already in the DataFrame that the file lacks go into it with the next write
        (the file mirrors the column, as it always has)."""
        assert self._file is not None
        saved = self._file.labels()
        for pos in np.flatnonzero(~self._missing()):
            text = self._encode(self._get(int(pos)))
            if text is not None and saved.get(self._keys[pos]) != text:
                self._file.set(self._keys[pos], text)

    def _image_cache(self, size: int, kept: int) -> ThumbnailCache:
        """The rows' images for the view, at most ``size`` px, the last ``kept`` of them kept."""
        cells = self.data[self._image_column].to_numpy(dtype=object)
        return ThumbnailCache(cells, size, rows=self.data.index, maxsize=kept)

    def _begin(self, filter: RowFilter, order: str) -> None:
        """Show the first row to work on, saying what a save file restored."""
        self._set_rows(filter, order)
        if self.restored:
            name = self.save_path.name if self.save_path else ""
            self._say(f"resumed from {name}: {self._restored.format(self.restored)}")

    def _keyed(self) -> bool:
        return "path" in self.data.columns and self._column != "path"

    @property
    def save_path(self) -> Path | None:
        """The save file (``~`` expanded), or None."""
        return None if self._file is None else self._file.path

    def _prepare_column(self) -> None:
        df, column = self.data, self._column
        if column not in df.columns:
            df[column] = pd.Series([None] * len(df), index=df.index, dtype=object)
        elif not pd.api.types.is_object_dtype(df[column]) and not self._keeps_dtype(df[column]):
            values = df[column].astype(object)
            df[column] = values.where(values.notna(), None)
        self._col = df.columns.get_loc(column)
        if not isinstance(self._col, int):
            raise ValueError(f"the DataFrame has more than one column named {column!r}")

    def _keeps_dtype(self, values: pd.Series) -> bool:  # text columns may stay "string"
        return False

    def _restore(self) -> int:
        assert self._file is not None
        saved = self._file.labels()
        restored = 0
        for pos, key in enumerate(self._keys):
            text = saved.get(key)
            if text is not None:
                self._put(pos, self._decode(text, pos))
                restored += 1
            elif self.annotator is not None:
                # With annotator=, the column shows this annotator's own labels only.
                self._put(pos, None)
        return restored

    # -- cells (subclasses: how a value is stored) ----------------------------------------
    def _decode(self, text: str, pos: int) -> Any:
        return text

    def _encode(self, value: Any) -> str | None:
        return None if value is None else str(value)

    def _get(self, pos: int) -> Any:
        value = self.data.iat[pos, self._col]
        if value is None or (np.ndim(value) == 0 and pd.isna(value)):
            return None
        if isinstance(value, str) and not value.strip():
            return None
        return value

    def _put(self, pos: int, value: Any) -> None:
        self.data.iat[pos, self._col] = value

    def _cell(self, pos: int, column: str) -> Any:
        """Row ``pos``'s value in another column (the image, the suggestions)."""
        return self.data.iat[pos, self.data.columns.get_loc(column)]

    def _missing(self) -> np.ndarray:
        """True for each row without a label (NA, None or blank), vectorised."""
        values = self.data.iloc[:, self._col]
        missing = values.isna().to_numpy(dtype=bool, copy=True)
        rest = values[~missing]
        is_text = rest.map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)
        if is_text.any():
            blank = rest[is_text].astype(str).str.strip() == ""
            missing[np.flatnonzero(~missing)[np.flatnonzero(is_text)[blank.to_numpy()]]] = True
        return missing

    # -- other annotators ------------------------------------------------------------------
    def others(self, pos: int) -> dict[str, Any]:
        """Every other annotator's label of row ``pos`` (from the save file)."""
        if self._file is None:
            return {}
        key = self._keys[pos]
        out = {}
        for name, labels in self._others_cache().items():
            if key in labels:
                out[name] = self._decode(labels[key], pos)
        return out

    def _others_cache(self) -> dict[str, dict[Key, str]]:
        """Everyone else's labels, read again only when the file was (someone else wrote)."""
        generation = None if self._file is None else self._file.generation
        others = self._others
        if others is None or self._others_generation != generation:
            others = self._file.others() if self._file is not None else {}
            self._others = others
            self._others_generation = generation
        return others

    @property
    def annotations(self) -> pd.DataFrame:
        """The save file in long form: every annotator's labels of every row it holds."""
        if self._file is None:
            raise ValueError("annotations needs save= (the file holds every annotator's work)")
        return self._file.frame

    def by_annotator(self) -> pd.DataFrame:
        """One column per annotator (this one included), one row per row of the DataFrame,
        with the labels as the file holds them (NA where one gave none): the input of
        [`rater_agreement`][visionkit.rater_agreement]."""
        if self._file is None:
            raise ValueError("by_annotator needs save= (the file holds every annotator's work)")
        self._others = None
        me = self.annotator or ""
        columns = {me: [self._get(p) for p in range(len(self.data))]}
        for name, labels in self._others_cache().items():
            columns[name] = [
                None if (t := labels.get(k)) is None else self._decode(t, p)
                for p, k in enumerate(self._keys)
            ]
        return pd.DataFrame(columns, index=self.data.index)

    # -- rows to walk ----------------------------------------------------------------------
    def _filter_mask(self, where: Any) -> np.ndarray:
        if where is None or (isinstance(where, str) and where == "all"):
            return np.ones(len(self.data), dtype=bool)
        if isinstance(where, str) and where == "unlabelled":
            return self._missing()
        return row_mask(self.data, where)

    def _set_rows(self, where: Any, order: str) -> None:
        if order not in ORDERS:
            raise ValueError(f"order must be one of {list(ORDERS)}, but {order!r} was passed")
        if order == "disagreement" and self.blind:
            raise ValueError("order='disagreement' would show a blind annotator the others' labels")
        mask = self._filter_mask(where)
        rows = np.flatnonzero(mask)
        if order == "disagreement":
            self._others = None
            scores = np.array([self._disagreement(int(p)) for p in rows], dtype=float)
            rows = rows[np.argsort(-scores, kind="stable")]
        self._filter = "all" if where is None else where
        self._order_by = order
        self._order = rows
        if order == "disagreement":
            self._i = 0
        else:
            first = self._first_unlabelled(0)
            self._i = 0 if first is None else first
        self._show()

    @property
    def filter(self) -> RowFilter:
        """The rows walked: ``"all"``, ``"unlabelled"``, a ``DataFrame.query`` string or a mask."""
        return self._filter

    @filter.setter
    def filter(self, where: RowFilter) -> None:
        self._set_rows(where, self._order_by)

    @property
    def order(self) -> str:
        """``"index"`` (the DataFrame's order) or ``"disagreement"`` (most disputed first)."""
        return self._order_by

    @order.setter
    def order(self, order: str) -> None:
        self._set_rows(self._filter, order)

    def _labels_for_disagreement(self, pos: int) -> list[Any]:
        values = [self._get(pos), *self.others(pos).values()]
        return [v for v in values if v is not None]

    def _disagreement(self, pos: int) -> float:
        """How much the labels of row ``pos`` disagree: 0 (all the same) to 1; -1 when fewer
        than two labels exist. Subclasses with boxes override this."""
        labels = [str(v) for v in self._labels_for_disagreement(pos)]
        if len(labels) < 2:
            return -1.0
        counts = pd.Series(labels).value_counts()
        return 1.0 - counts.iloc[0] / len(labels)

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
        return self.data.iloc[self._order]

    @property
    def current(self) -> Hashable | None:
        """The current row's index label."""
        pos = self.position
        return None if pos is None else self.data.index[pos]

    @property
    def labelled(self) -> int:
        """How many rows of the DataFrame have a label."""
        return int((~self._missing()).sum())

    @property
    def done(self) -> bool:
        """True when every row being walked has a label."""
        return self._first_unlabelled(0) is None

    def _row_name(self, pos: int) -> str:
        """How messages name a row: its number in the walk (as the progress line counts) and
        its index label."""
        where = np.flatnonzero(self._order == pos)
        label = format_value(self.data.index[pos])
        if len(where):
            return f"row {int(where[0]) + 1} ({label})"
        return f"row {label} (not in the filter)"

    # -- moving ----------------------------------------------------------------------------
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
        """Undo the last change and go back to its row."""
        if not self._history:
            self._say("nothing to undo")
            return
        change = self._history.pop()
        self._put(change.pos, change.old)
        self._save(change.pos)
        where = np.flatnonzero(self._order == change.pos)
        if len(where):
            self._i = int(where[0])
        self._show(f"undone: {self._row_name(change.pos)} is back to {self._describe(change.old)}")

    def _describe(self, value: Any) -> str:
        return "no label" if value is None else repr(value)

    def _require_row(self) -> int:
        pos = self.position
        if pos is None:
            raise IndexError("no rows to annotate (the filter matches none)")
        return pos

    def _move(self, step: int, message: str = "") -> None:
        self._require_row()
        target = self._i + step
        if target >= len(self._order):
            left = int(self._missing()[self._order].sum())
            end = "end of the rows" + (f"; {left} still unlabelled (s jumps there)" if left else "")
            self._show(f"{message} · {end}" if message else end)
            return
        self._i = max(target, 0)
        self._show(message)

    def _write(self, pos: int, value: Any) -> bool:
        """Set row ``pos`` to ``value``, remember it for undo, save. False if unchanged."""
        old = self._get(pos)
        if self._same(old, value):
            return False
        self._put(pos, value)
        self._history.append(Change(pos, old, value))
        try:
            self._save(pos)
        except Exception as exc:
            # The label stays in the DataFrame; say loudly that the file did not get it.
            raise OSError(
                f"labelled row {self.data.index[pos]!r}, but saving failed: {exc}"
            ) from exc
        return True

    def _same(self, a: Any, b: Any) -> bool:
        return a == b

    def _save(self, pos: int) -> None:
        if self._file is None:
            return
        self._file.set(self._keys[pos], self._encode(self._get(pos)))
        self._file.write()  # re-reads the file first if someone else wrote

    # -- messages --------------------------------------------------------------------------
    def _progress(self) -> str:
        total, labelled = len(self.data), self.labelled
        text = f"{labelled} / {total} {self._done_word}"
        if self.annotator:
            text = f"{self.annotator}: {text}"
        pos = self.position
        if pos is None:
            return text
        where = f"row {self._i + 1} of {len(self._order)}"
        notes = []
        if not (isinstance(self._filter, str) and self._filter == "all"):
            notes.append(self._filter if isinstance(self._filter, str) else "custom filter")
        if self._order_by != "index":
            notes.append(f"by {self._order_by}")
        if notes:
            where += f" ({', '.join(notes)})"
        return f"{text} · {where}"

    # -- the view --------------------------------------------------------------------------
    def _row_image(self, pos: int) -> Thumb:
        """Row ``pos``'s image for the view; the next two rows' are made meanwhile."""
        thumb = self._images.get(pos)
        self._images.prefetch(int(p) for p in self._order[self._i + 1 : self._i + 3])
        return thumb

    def _row_title(self, pos: int) -> str:
        """The view's title: the row's index label and, for a file, its path."""
        title = format_value(self.data.index[pos])
        source = self._cell(pos, self._image_column)
        if isinstance(source, str | Path):
            title += f" · {source}"
        return title

    def _draw(self, message: str, **traits: Any) -> None:
        """Set the view's ``traits`` (in order), the progress line and ``message``, in one
        message to the front end."""
        view = self.view
        with view.hold_sync():
            for name, value in traits.items():
                setattr(view, name, value)
            view.progress = self._progress()
            self._say(message)

    def __repr__(self) -> str:  # cheap: no trait dump of the image bytes
        who = f" by {self.annotator!r}" if self.annotator else ""
        return (
            f"<{type(self).__name__} {self._column!r}{who}: {self.labelled} / {len(self.data)} "
            f"{self._repr_done}, position {self.position}>"
        )

    # Subclasses implement this (and Controls' _choose and _on_view_msg).
    def _show(self, message: str = "") -> None:
        raise NotImplementedError
