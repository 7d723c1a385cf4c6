"""What a run hands back: each row's result, the run's tally, and the result frame.

``RowResult`` is filled in as a row goes and says where it stands (``state``); ``Tally`` counts
what the run did (requests, retries, 429s, cache hits, tokens); ``result_frame`` turns both
into the DataFrame ``ask`` returns, with the totals in ``attrs["usage"]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..providers import money_fields
from .plan import Plan

__all__ = ["INTERRUPTED", "RowResult", "Tally", "result_frame", "schema_column"]

INTERRUPTED = "not run: interrupted (re-run to resume from the cache)"


@dataclass
class Tally:
    """What a run did, counted as it goes (``attrs["usage"]``)."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    cache_hits: int = 0
    answered: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated_tokens: int = 0
    not_run: int = 0
    waited: int = 0  # rows another process was asking when this run reached them


@dataclass(slots=True)
class RowResult:
    """One row of a run's result, filled in as the row goes (``result_frame`` makes the table)."""

    answer: str | None = None
    error: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    estimated_tokens: int | None = None
    cached: bool = False
    attempts: int = 0
    fields: dict[str, Any] | None = None  # the schema's fields, parsed from the answer
    finished: bool = False  # the run is done with this row (counted and on the progress bar)

    @property
    def untouched(self) -> bool:
        """Neither an answer nor an error yet."""
        return self.error is None and self.answer is None


def result_frame(
    plan: Plan,
    rows: Sequence[RowResult],
    tally: Tally,
    *,
    elapsed: float,
    lowest_concurrency: float,
    interrupted: bool,
) -> pd.DataFrame:
    """The run's result on the frame's index; rows never reached are ``not run``."""
    for row in rows:
        if not row.finished and row.untouched:
            row.error = INTERRUPTED
    index = plan.index
    out = pd.DataFrame(
        {
            "answer": pd.Series([r.answer for r in rows], index=index, dtype=object),
            "error": pd.Series([r.error for r in rows], index=index, dtype=object),
            "prompt_tokens": pd.array([r.prompt_tokens for r in rows], dtype="Int64"),
            "completion_tokens": pd.array([r.completion_tokens for r in rows], dtype="Int64"),
            "estimated_tokens": pd.array([r.estimated_tokens for r in rows], dtype="Int64"),
            "cached": pd.array([r.cached for r in rows], dtype=bool),
            "attempts": pd.array([r.attempts for r in rows], dtype="Int64"),
        },
        index=index,
    )
    if plan.schema is not None:
        for name, column in plan.schema_columns.items():
            values = [None if r.fields is None else r.fields.get(name) for r in rows]
            out[column] = schema_column(values, plan.schema.dtypes[name], index)
    out.attrs["usage"] = {
        "rows": plan.n,
        "requests": tally.requests,
        "answered": tally.answered,
        "cache_hits": tally.cache_hits,
        "failed": int(sum(r.error is not None and r.error != INTERRUPTED for r in rows)),
        "not_run": int(sum(r.error == INTERRUPTED for r in rows)),
        "waited": tally.waited,
        "retries": tally.retries,
        "rate_limited": tally.rate_limited,
        "prompt_tokens": tally.prompt_tokens,
        "completion_tokens": tally.completion_tokens,
        "estimated_tokens": tally.estimated_tokens,
        "elapsed_s": round(elapsed, 3),
        "concurrency": plan.options.concurrency,
        "lowest_concurrency": int(lowest_concurrency),
        "interrupted": interrupted,
        "provider": plan.provider.name,
        "model": plan.model,
        # what this run bought, in US dollars, where the model's price is known
        **money_fields(plan.provider, plan.model, tally.prompt_tokens, tally.completion_tokens),
    }
    return out


def schema_column(values: list[Any], dtype: str, index: pd.Index) -> pd.Series:
    """A schema field's column in its nullable dtype (``object`` if a value does not fit)."""
    try:
        return pd.Series(pd.array(values, dtype=dtype), index=index)
    except (TypeError, ValueError):
        return pd.Series(values, index=index, dtype=object)
