"""``Gallery``: a paged, filterable, selectable thumbnail grid of a DataFrame's images.

Usage:

    g = vk.Gallery(df, caption=["label", "width"])
    g                                   # shows the grid in the notebook
    g.filter = "label == 'animal'"      # or a boolean mask; None shows every row
    g.selected                          # index labels of the tiles clicked (ctrl/shift: several)

Thumbnails are made once per row (in a small thread pool, the next page ahead of time) and kept,
and only the current page travels to the browser, as binary buffers rather than base64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anywidget
import numpy as np
import pandas as pd
import traitlets

from ._assets import css, esm
from ._frame import RowFilter, find_image_column, format_value, require_frame, row_mask
from ._thumbs import CacheInfo, ThumbnailCache

__all__ = ["Gallery"]


class Gallery(anywidget.AnyWidget):
    """A paged thumbnail grid of ``data[image_column]`` with captions from ``caption`` columns.

    ``image_column`` defaults to ``image`` or ``path``; ``caption`` is a column name or a list of
    them (default: the index label). Click a tile to select it, ctrl/cmd-click to add or remove
    one, shift-click for a range; ``selected`` holds the selected index labels and
    ``selected_positions`` their row positions (observe it to react to clicks). The DataFrame
    is read when the gallery is made; rows added later are not shown.
    """

    _esm = esm("gallery.js")
    _css = css("gallery.css")

    page = traitlets.Int(0).tag(sync=True)
    page_count = traitlets.Int(1).tag(sync=True)
    page_size = traitlets.Int(24).tag(sync=True)
    thumb_size = traitlets.Int(160).tag(sync=True)
    total = traitlets.Int(0).tag(sync=True)
    matching = traitlets.Int(0).tag(sync=True)
    query = traitlets.Unicode("").tag(sync=True)
    query_error = traitlets.Unicode("").tag(sync=True)
    selected_positions = traitlets.List(traitlets.Int()).tag(sync=True)
    # Selected rows the filter hides: the count says so instead of "3 selected" with none shown.
    selected_hidden = traitlets.Int(0).tag(sync=True)
    # The current page only: one dict per tile (pos, caption, title, mime, error) and its bytes.
    _items = traitlets.List(traitlets.Dict()).tag(sync=True)
    _thumbs = traitlets.List(traitlets.Bytes()).tag(sync=True)

    def __init__(
        self,
        data: pd.DataFrame,
        *,
        image_column: str | None = None,
        caption: str | Sequence[str] | None = None,
        page_size: int = 24,
        thumb_size: int = 160,
        filter: RowFilter = None,
    ) -> None:
        df = data
        require_frame(df, "Gallery")
        if page_size < 1:
            raise ValueError(f"page_size must be at least 1, not {page_size}")
        self._df = df
        self._column = find_image_column(df, image_column)
        captions = [caption] if isinstance(caption, str) else list(caption or [])
        missing = [c for c in captions if c not in df.columns]
        if missing:
            raise KeyError(f"caption columns {missing} not in {list(df.columns)}")
        self._captions = captions
        self._cache = ThumbnailCache(
            df[self._column].to_numpy(dtype=object), thumb_size, rows=df.index
        )
        self._filter: RowFilter = None
        self._view = np.arange(len(df))
        super().__init__(page_size=page_size, thumb_size=thumb_size, total=len(df))
        self.filter = filter
        self.observe(self._on_page, names=["page"])
        self.observe(self._on_query, names=["query"])
        self.observe(self._on_thumb_size, names=["thumb_size"])
        self.observe(self._on_page_size, names=["page_size"])
        self.observe(self._count_hidden, names=["selected_positions"])

    # -- filtering -------------------------------------------------------------------------
    @property
    def filter(self) -> RowFilter:
        """The rows shown: a ``DataFrame.query``-style string, a boolean mask, or ``None``."""
        return self._filter

    @filter.setter
    def filter(self, where: RowFilter) -> None:
        mask = row_mask(self._df, where)  # raises on a bad filter, before anything changes
        self._filter = where
        self._view = np.flatnonzero(mask)
        with self.hold_sync():
            self._count_hidden()
            self.query_error = ""
            if isinstance(where, str):
                self.set_trait("query", where)
            elif where is None:
                self.set_trait("query", "")
            self.matching = len(self._view)
            self.page_count = max(1, -(-len(self._view) // self.page_size))
            if self.page != 0:
                self.page = 0  # _on_page renders
            else:
                self._render()

    def _count_hidden(self, _change: Any = None) -> None:
        shown = np.isin(np.asarray(self.selected_positions, dtype=int), self._view)
        self.selected_hidden = int((~shown).sum())

    def _on_query(self, change: dict) -> None:
        # Typed in the front end's filter box: show the error there instead of raising.
        if change["new"] == self._filter:
            return
        try:
            self.filter = change["new"] or None
        except ValueError as exc:
            self.query_error = str(exc)

    # -- paging ----------------------------------------------------------------------------
    @property
    def positions(self) -> np.ndarray:
        """Row positions (``df.iloc``) that match the filter, in order."""
        return self._view.copy()

    def page_positions(self, page: int | None = None) -> np.ndarray:
        """Row positions on ``page`` (default: the current one)."""
        page = self.page if page is None else page
        return self._view[page * self.page_size : (page + 1) * self.page_size]

    def next_page(self) -> None:
        """Show the next page (the last page stays)."""
        self.page = min(self.page + 1, self.page_count - 1)

    def previous_page(self) -> None:
        """Show the previous page (the first page stays)."""
        self.page = max(self.page - 1, 0)

    def _on_page(self, change: dict) -> None:
        clamped = min(max(change["new"], 0), self.page_count - 1)
        if clamped != change["new"]:
            self.page = clamped
            return
        self._render()

    def _on_page_size(self, change: dict) -> None:
        if change["new"] < 1:
            self.page_size = change["old"]
            return
        self.page_count = max(1, -(-len(self._view) // self.page_size))
        if self.page >= self.page_count:
            self.page = self.page_count - 1
        else:
            self._render()

    def _on_thumb_size(self, change: dict) -> None:
        self._cache = ThumbnailCache(self._cache._cells, change["new"], rows=self._df.index)
        self._render()

    def _caption(self, pos: int) -> tuple[str, str]:
        row = self._df.iloc[pos]
        label = format_value(self._df.index[pos])
        parts = [format_value(row[c]) for c in self._captions] or [label]
        caption = " · ".join(parts)
        # The tooltip leads with the whole caption (tiles may cut it), then row and image.
        title = f"{caption}\n{label}: {format_value(row[self._column])}"
        return caption, title

    def _render(self) -> None:
        positions = [int(p) for p in self.page_positions()]
        thumbs = self._cache.get_many(positions)
        items = []
        for pos, thumb in zip(positions, thumbs, strict=True):
            caption, title = self._caption(pos)
            items.append(
                {
                    "pos": pos,
                    "caption": caption,
                    "title": title,
                    "mime": thumb.mime,
                    "error": thumb.error,
                }
            )
        with self.hold_sync():
            self._items = items
            self._thumbs = [t.data for t in thumbs]
        # Make the next page while the user looks at this one.
        self._cache.prefetch(int(p) for p in self.page_positions(self.page + 1))

    # -- selection -------------------------------------------------------------------------
    @property
    def selected(self) -> list[Any]:
        """Index labels of the selected rows, in row order."""
        return list(self._df.index[sorted(self.selected_positions)])

    @selected.setter
    def selected(self, labels: Sequence[Any]) -> None:
        index = self._df.index
        positions: list[int] = []
        for label in labels:
            loc = index.get_indexer_for([label])
            if len(loc) == 0 or loc[0] < 0:
                raise KeyError(f"{label!r} is not in the DataFrame's index")
            positions.extend(int(p) for p in loc)
        self.selected_positions = sorted(set(positions))

    @property
    def selection(self) -> pd.DataFrame:
        """The selected rows of the DataFrame."""
        return self._df.iloc[sorted(self.selected_positions)]

    def cache_info(self) -> CacheInfo:
        """How many thumbnails were made and how often the cache answered."""
        return self._cache.cache_info()

    def __len__(self) -> int:
        return len(self._view)
