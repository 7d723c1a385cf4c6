"""``TokenExplorer``: how many tokens an image of a given size costs with each provider, and the
largest size of the same shape that fits a token budget, updated live as the sliders move.

Usage:

    vk.TokenExplorer()                 # width/height sliders
    vk.TokenExplorer(df)               # or pick one of the DataFrame's images
    vk.TokenExplorer(provider="openai")
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import ipywidgets
import pandas as pd

from ..errors import ImageError
from ..providers import Provider, estimate_tokens, fit_tokens, get_provider, providers
from ._frame import find_image_column, format_value

__all__ = ["TokenExplorer", "fit_budget"]

MAX_SIDE = 4096


def fit_budget(
    width: int, height: int, budget: int, provider: str | Provider = "inference.net"
) -> tuple[int, int] | None:
    """The largest ``width x height`` scaled down (same aspect, via ``tokens.fit_within``)
    whose token estimate is at most ``budget``; the size itself if it fits already, ``None``
    if no size does (e.g. inference.net charges at least 1,601 tokens for any image).

    ``providers.fit_tokens`` (what ``encode_image(max_tokens=)`` uses) with a provider name
    and ``None`` for "nothing fits", as the table shows it.

    >>> fit_budget(2240, 1120, 3202)
    (1120, 560)
    """
    try:
        return fit_tokens(int(width), int(height), get_provider(provider), budget)
    except ImageError:  # below the provider's estimate for any size
        return None


class TokenExplorer(ipywidgets.VBox):
    """Width, height and budget sliders (or an image picked from ``df``) and a live table.

    ``provider`` is a name, a ``Provider`` or a list of them; ``None`` shows every registered
    provider. ``table`` holds what is shown, as a DataFrame.
    """

    def __init__(
        self,
        data: pd.DataFrame | None = None,
        provider: str | Provider | Sequence[str | Provider] | None = None,
        *,
        width: int = 1024,
        height: int = 768,
        budget: int = 1601,
        image_column: str | None = None,
    ) -> None:
        df = data
        if provider is None:
            chosen = list(providers.values())
        elif isinstance(provider, str | Provider):
            chosen = [get_provider(provider)]
        else:
            chosen = [get_provider(p) for p in provider]
        self.providers = chosen
        self._df = df
        slider = {
            "min": 1,
            "max": MAX_SIDE,
            "continuous_update": True,
            "layout": ipywidgets.Layout(width="460px"),
        }
        self.width_slider = ipywidgets.IntSlider(value=width, description="width", **slider)
        self.height_slider = ipywidgets.IntSlider(value=height, description="height", **slider)
        self.budget_slider = ipywidgets.IntSlider(
            value=budget,
            min=1,
            max=20_000,
            step=1,
            description="budget",
            continuous_update=True,
            layout=ipywidgets.Layout(width="460px"),
        )
        self.output = ipywidgets.HTML()
        children: list[ipywidgets.Widget] = []
        self.image_picker: ipywidgets.Dropdown | None = None
        self._picked: tuple[int, int] | None = None
        if df is not None:
            self._column = find_image_column(df, image_column)
            cells = df[self._column]
            labels = [
                (f"{format_value(df.index[i])} · {format_value(cells.iat[i])}", i)
                for i in range(len(df))
            ]
            self.image_picker = ipywidgets.Dropdown(
                options=[("(sliders)", -1), *labels],
                value=-1,
                description="image",
                layout=ipywidgets.Layout(width="460px"),
            )
            self.image_picker.observe(self._on_pick, names="value")
            children.append(self.image_picker)
        children += [self.width_slider, self.height_slider, self.budget_slider, self.output]
        super().__init__(children=children)
        for s in (self.width_slider, self.height_slider, self.budget_slider):
            s.observe(self._update, names="value")
        self._update()

    @property
    def size(self) -> tuple[int, int]:
        """The ``(width, height)`` the sliders are set to."""
        return self.width_slider.value, self.height_slider.value

    @property
    def budget(self) -> int:
        """The token budget the budget slider is set to."""
        return self.budget_slider.value

    def _on_pick(self, change: dict) -> None:
        pos = change["new"]
        if pos is None or pos < 0 or self._df is None:
            return
        df = self._df
        if {"width", "height"} <= set(df.columns) and pd.notna(df["width"].iat[pos]):
            w, h = int(df["width"].iat[pos]), int(df["height"].iat[pos])
        else:
            from ..images.read import inspect_images

            info = inspect_images(df[self._column].iloc[[pos]]).iloc[0]
            if info["error"] is not None or pd.isna(info["width"]):
                message = info["error"] or "size unknown"
                self.output.value = f"<p style='color:#b00020'>{html.escape(str(message))}</p>"
                return
            w, h = int(info["width"]), int(info["height"])
        self._picked = None  # moving both sliders: no reset half way
        with self.hold_trait_notifications():
            self.width_slider.max = max(self.width_slider.max, w)
            self.height_slider.max = max(self.height_slider.max, h)
            self.width_slider.value, self.height_slider.value = w, h
        self._picked = (w, h)
        self._update()

    @property
    def table(self) -> pd.DataFrame:
        """Per provider: tokens at the current size, and the size and tokens that fit the budget."""
        w, h = self.size
        budget = self.budget
        rows = []
        for p in self.providers:
            tokens = int(estimate_tokens(w, h, provider=p))
            fit = fit_budget(w, h, budget, p)
            rows.append(
                {
                    "provider": p.name,
                    "tokens": tokens,
                    "fits": tokens <= budget,
                    "fit_width": None if fit is None else fit[0],
                    "fit_height": None if fit is None else fit[1],
                    "fit_tokens": None if fit is None else int(estimate_tokens(*fit, provider=p)),
                    "max_side": p.max_side,
                }
            )
        frame = pd.DataFrame(rows).set_index("provider")
        return frame.astype(
            {c: "Int64" for c in ("fit_width", "fit_height", "fit_tokens", "max_side")}
        )

    def _update(self, _change: Any = None) -> None:
        w, h = self.size
        picker = self.image_picker
        picked = self._picked
        if picker is not None and picker.value >= 0 and picked is not None and picked != (w, h):
            picker.value = -1  # the sliders moved off the picked image: it is no longer shown
        table = self.table
        lines = []
        for name, row in table.iterrows():
            if row["fits"]:
                fit = "fits as is"
            elif pd.isna(row["fit_width"]):
                fit = "no size fits (the minimum is more)"
            else:
                fit = f"resize to {row['fit_width']} × {row['fit_height']} → {row['fit_tokens']:,}"
            useful = ""
            if pd.notna(row["max_side"]) and max(w, h) > row["max_side"]:
                useful = f"tokens stop growing at {row['max_side']} px"
            colour = "#1b7a2f" if row["fits"] else "#b00020"
            lines.append(
                f"<tr><td>{html.escape(str(name))}</td>"
                f"<td style='text-align:right'>{row['tokens']:,}</td>"
                f"<td style='color:{colour}'>{html.escape(fit)}</td>"
                f"<td style='color:#777'>{html.escape(useful)}</td></tr>"
            )
        self.output.value = (
            f"<p><b>{w} × {h}</b> px, budget <b>{self.budget:,}</b> tokens per image</p>"
            "<table><thead><tr><th>provider</th><th>tokens</th><th>to fit the budget</th>"
            "<th></th></tr></thead><tbody>" + "".join(lines) + "</tbody></table>"
        )

    def __repr__(self) -> str:
        return f"<TokenExplorer {self.size[0]}x{self.size[1]}, budget {self.budget}>"
