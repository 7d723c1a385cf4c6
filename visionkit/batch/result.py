"""A batch job's result table, the same for a job followed at the provider (``BatchJob``) and a
job answered from a recording (``ReplayedJob``): ``ask``'s columns plus ``batch_id``, on the
submitted frame's index (labels as the manifest stores them: see ``manifest.stored_label``).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..providers import money_fields
from ..query.cache import CachedAnswer
from ..query.schema import Schema

__all__ = ["PENDING", "ResultRow", "batch_money", "result_frame", "tally"]

PENDING = "pending: "  # the error of a row whose batch has not finished


@dataclass(slots=True)
class ResultRow:
    """One row of a job's result."""

    error: str | None = None
    estimated_tokens: int | None = None
    cached: bool = False  # answered from the cache at submit (not bought by this job)
    attempts: int = 0  # batches that held the row's request
    batch_id: str | None = None  # the latest of them
    answer: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    fields: dict[str, Any] | None = None  # the schema's fields, parsed from the answer
    delivered: bool = False  # an answer arrived (its schema may still have failed)

    def deliver(self, entry: CachedAnswer, schema: Schema | None) -> None:
        """The row's answer arrived: its text and usage (and fields, or a ``SchemaError``)."""
        self.delivered = True
        self.error = None
        self.answer = entry.answer
        self.prompt_tokens = entry.prompt_tokens
        self.completion_tokens = entry.completion_tokens
        if schema is not None:
            try:
                self.fields = schema.parse(entry.answer)
            except ValueError as exc:
                self.error = f"SchemaError: {exc}"


def tally(rows: Sequence[ResultRow]) -> dict[str, int]:
    """The usage counts of a result: what was bought (tokens, estimate) and what was not."""
    usage = dict.fromkeys(
        (
            "answered",
            "cache_hits",
            "failed",
            "pending",
            "prompt_tokens",
            "completion_tokens",
            "estimated_tokens",
        ),
        0,
    )
    for row in rows:
        if row.delivered and row.cached:
            usage["cache_hits"] += 1
        elif row.delivered:
            usage["answered"] += 1
            usage["prompt_tokens"] += row.prompt_tokens or 0
            usage["completion_tokens"] += row.completion_tokens or 0
            usage["estimated_tokens"] += row.estimated_tokens or 0
        if row.error is not None and row.error.startswith(PENDING):
            usage["pending"] += 1  # not failed: not collected yet
        elif row.error is not None:
            usage["failed"] += 1
    return usage


def batch_money(usage: dict[str, Any]) -> dict[str, float]:
    """``{"cost_usd": ...}`` for a batch result's usage, at the Batch API's discounted price,
    where the model's price is known (else ``{}``: tokens only)."""
    if not usage.get("provider"):
        return {}
    return money_fields(
        usage["provider"],
        usage.get("model"),
        usage["prompt_tokens"],
        usage["completion_tokens"],
        batch=True,
    )


def result_frame(
    labels: Sequence[Hashable], rows: Sequence[ResultRow], schema: Schema | None
) -> pd.DataFrame:
    """The table: answer, error, tokens, cached, attempts, batch_id, then the schema's fields."""
    index = pd.Index(list(labels))

    def column(name: str) -> list[Any]:
        return [getattr(r, name) for r in rows]

    out = pd.DataFrame(
        {
            "answer": pd.Series(column("answer"), index=index, dtype=object),
            "error": pd.Series(column("error"), index=index, dtype=object),
            "prompt_tokens": pd.array(column("prompt_tokens"), dtype="Int64"),
            "completion_tokens": pd.array(column("completion_tokens"), dtype="Int64"),
            "estimated_tokens": pd.array(column("estimated_tokens"), dtype="Int64"),
            "cached": pd.array(column("cached"), dtype=bool),
            "attempts": pd.array(column("attempts"), dtype="Int64"),
            "batch_id": pd.Series(column("batch_id"), index=index, dtype=object),
        },
        index=index,
    )
    if schema is not None:
        for name in schema.fields:
            out[name] = pd.Series([(r.fields or {}).get(name) for r in rows], index=index)
    return out
