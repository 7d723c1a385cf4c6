"""What a configuration would cost on the whole set: tokens, money, hours, the batch plan.

From the same estimates ``ask`` and ``submit`` use: each image's size (the ``width``/``height``
columns, else its header) fitted to the configuration's ``max_side`` (else the provider's),
priced by the provider's formula, plus the prompt's text tokens -- the bound ``budget_tokens``
checks before a run. The answers' length is not known before they are given, so completion
tokens are the mean the evaluation measured for that configuration. Money is the model's known
price (``vk.set_price``), at the Batch API's discount for the batch plan.

Hours: synchronously, at the known rate limit (the client's ``tier=``/``requests_per_minute=``,
or the numbers passed here), and at the pace the evaluation measured (median latency at its
concurrency), whichever is slower; the batch plan splits the rows into files by the provider's
``max_requests_per_file`` and ``max_file_bytes`` (request bytes measured by a dry run on the
evaluated rows) and uploads them ``upload_interval`` apart, as ``submit`` does.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..costs import fit_sides, image_sizes
from ..providers import Provider, RateLimits, price_of
from ..query.template import fill_template, template_fields
from ..tokens import text_tokens

__all__ = ["Projection", "estimate_prompt_tokens", "project"]

LINE_OVERHEAD = 120  # bytes a batch line adds around a request body (custom_id, method, url)


@dataclass(frozen=True)
class Projection:
    """A configuration's projected cost on a whole set (see the module docstring)."""

    config: str
    rows: int
    unsized: int  # rows whose image size is unknown: priced at the mean of the others
    prompt_tokens: int
    completion_tokens: int
    usd: float | None  # synchronous, at the model's price (None: price unknown)
    batch_usd: float | None  # through the Batch API, at its discount
    requests_per_minute: float | None
    tokens_per_minute: float | None
    hours_at_rate_limit: float | None  # None: no known limit
    hours_at_measured_pace: float | None  # median latency at the evaluation's concurrency
    files: int | None  # batch input files (None: the provider has no Batch API)
    upload_hours: float | None
    completion_window: str | None

    @property
    def tokens(self) -> int:
        """Prompt and completion tokens together."""
        return self.prompt_tokens + self.completion_tokens

    @property
    def hours(self) -> float | None:
        """Synchronous hours: the slower of the rate limit and the measured pace."""
        known = [h for h in (self.hours_at_rate_limit, self.hours_at_measured_pace) if h]
        return max(known) if known else None

    def to_frame(self) -> pd.DataFrame:
        """One row: every figure, named."""
        row = {**asdict(self), "tokens": self.tokens, "hours": self.hours}
        return pd.DataFrame([row]).set_index("config")

    def describe(self) -> str:
        """A few lines: rows, tokens, money, hours and the batch plan."""
        lines = [
            f"{self.config}: {self.rows:,} rows, {self.tokens:,} tokens "
            f"({self.prompt_tokens:,} prompt + {self.completion_tokens:,} completion)"
        ]
        if self.usd is not None:
            money = f"${self.usd:,.2f} synchronously"
            if self.batch_usd is not None and self.files is not None:
                money += f", ${self.batch_usd:,.2f} through the Batch API"
            lines.append(money)
        else:
            lines.append("money: no known price for this model (vk.set_price sets one)")
        if self.hours_at_rate_limit is not None:
            lines.append(
                f"{self.hours_at_rate_limit:,.1f} h synchronously at "
                f"{self.requests_per_minute or '?'} requests/min"
                + (f", {self.tokens_per_minute:,.0f} tokens/min" if self.tokens_per_minute else "")
            )
        else:
            lines.append("no known rate limit (connect(tier=...) or requests_per_minute=)")
        if self.hours_at_measured_pace is not None:
            lines.append(f"{self.hours_at_measured_pace:,.1f} h at the pace measured here")
        if self.files is not None:
            lines.append(
                f"batch: {self.files:,} file(s), {self.upload_hours:,.1f} h of uploads, then up "
                f"to {self.completion_window} per batch"
            )
        if self.unsized:
            lines.append(f"{self.unsized:,} rows without a known size priced at the mean")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.describe()

    def __repr__(self) -> str:  # the lines themselves, not one escaped string
        return "Projection of " + self.describe()

    def _repr_html_(self) -> str:
        return "<pre>" + self.describe() + "</pre>"


def estimate_prompt_tokens(
    data: pd.DataFrame,
    provider: Provider,
    prompt: str,
    *,
    system: str | None = None,
    max_side: int | None = None,
) -> tuple[np.ndarray, int]:
    """Per row, the prompt tokens ``ask``'s budget check would estimate (images fitted to
    ``max_side``, else the provider's, plus the text), without encoding anything; and how many
    rows had no known size (priced at the mean of the others)."""
    sizes = image_sizes(data)
    w, h = sizes["width"].to_numpy(), sizes["height"].to_numpy()
    side = max_side or provider.max_side
    if side:
        w, h = fit_sides(w, h, side)
    known = np.isfinite(w) & np.isfinite(h)
    images = np.full(len(data), np.nan)
    if known.any():
        images[known] = np.asarray(provider.estimate(w[known], h[known]), dtype=float)
    fallback = float(np.nanmean(images)) if known.any() else float(provider.estimate(1, 1))
    images[~known] = fallback
    fields = template_fields(prompt)
    if fields:
        records = data[fields].to_dict("records")
        texts = np.array([text_tokens(_filled(prompt, r), system) for r in records], dtype=float)
    else:
        texts = np.full(len(data), float(text_tokens(prompt, system)))
    return np.rint(images + texts).astype(np.int64), int((~known).sum())


def _filled(prompt: str, record: dict[str, Any]) -> str:
    try:
        return fill_template(prompt, record)
    except Exception:  # an NA field is that row's error in ask: price the bare template
        return prompt


def project(
    data: pd.DataFrame,
    *,
    label: str,
    provider: Provider,
    model: str | None,
    prompt: str,
    system: str | None,
    max_side: int | None,
    completion_per_row: float,
    request_bytes_per_row: float | None,
    latency_median_s: float | None,
    concurrency: int,
    limits: RateLimits | None,
) -> Projection:
    """The projection for one configuration (``Evaluation.project`` gathers the arguments)."""
    per_row, unsized = estimate_prompt_tokens(
        data, provider, prompt, system=system, max_side=max_side
    )
    rows = len(data)
    prompt_tokens = int(per_row.sum())
    completion = round(completion_per_row * rows) if np.isfinite(completion_per_row) else 0
    price = price_of(provider, model)
    usd = price.cost(prompt_tokens, completion) if price else None
    batch = provider.batch
    batch_usd = price.cost(prompt_tokens, completion, batch=True) if price and batch else None
    rpm = limits.requests_per_minute if limits else None
    tpm = limits.tokens_per_minute if limits else None
    minutes = [rows / rpm] if rpm else []
    if tpm:
        minutes.append((prompt_tokens + completion) / tpm)
    at_limit = max(minutes) / 60 if minutes else None
    pace = None
    if latency_median_s is not None and np.isfinite(latency_median_s):
        pace = rows * latency_median_s / max(concurrency, 1) / 3600
    files = upload_hours = None
    window = None
    if batch is not None:
        count = [1]
        if batch.max_requests_per_file:
            count.append(math.ceil(rows / batch.max_requests_per_file))
        if batch.max_file_bytes and request_bytes_per_row:
            line = request_bytes_per_row + LINE_OVERHEAD
            count.append(math.ceil(rows * line / batch.max_file_bytes))
        files = max(count) if rows else 0
        upload_hours = max(0, files - 1) * batch.upload_interval / 3600
        window = batch.completion_window
    return Projection(
        config=label,
        rows=rows,
        unsized=unsized,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion,
        usd=usd,
        batch_usd=batch_usd,
        requests_per_minute=rpm,
        tokens_per_minute=tpm,
        hours_at_rate_limit=at_limit,
        hours_at_measured_pace=pace,
        files=files,
        upload_hours=upload_hours,
        completion_window=window,
    )
