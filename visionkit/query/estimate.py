"""Dry runs and token budgets: what a run would send and cost, without the network.

One computation serves ``dry_run=True``, ``budget_tokens=`` and the run itself: a row's
estimate is ``prepare_request``'s -- the provider's formula on the image as encoded (after
``max_side`` and any shrinking to fit the body limit) plus the text -- and the total counts
what would be sent: cache hits and a repeat of an image already in the run are free (the run
answers them without a request), rows that would fail cost nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pandas as pd

from ..errors import BudgetExceeded, ImageError, RequestError
from ..images.decode import display_size, open_header
from ..providers import money, money_fields
from ..tokens import fit_within, text_tokens
from .messages import describe_error
from .plan import Plan
from .progress import progress_bar
from .rows import RowPlan, load_images, plan_rows, prepare_request_for

__all__ = ["check_budget", "dry_run_frame"]

logger = logging.getLogger("visionkit")


def _header_bound(plan: Plan, row: RowPlan) -> RowPlan:
    """Price a looked-up row from its image headers, without encoding (see ``check_budget``).

    Each image is priced at the size ``encode`` starts from (its ``max_side`` fit); encoding
    can only shrink an image further, so this is an upper bound of the exact estimate.
    """
    datas = load_images(plan, row)
    row.images = None
    if datas is None:  # unreadable now, or answered since (a changed file)
        return row
    try:
        tokens = text_tokens(str(plan.prompts[row.pos]), plan.system)
        max_side = plan.encode_options.get("max_side") or plan.provider.max_side
        for data in datas:
            with open_header(data, row=row.label) as im:
                w, h = display_size(im)
            if max_side:
                w, h = fit_within(w, h, max_side)
            tokens += int(plan.provider.estimate(w, h))
    except (ImageError, RequestError) as exc:
        row.error = describe_error(exc)
        return row
    row.estimated_tokens = tokens
    return row


def _estimate(plan: Plan, *, encode: bool) -> list[RowPlan]:
    """Every row planned without the network: exactly (``encode=True``, what ``dry_run``
    reports) or as the header-only upper bound (``encode=False``)."""
    desc = "vision dry run" if encode else "vision estimate"
    bar = progress_bar(plan.n, desc=desc, enabled=plan.options.progress)
    rows: list[RowPlan] = []
    finish = prepare_request_for if encode else _header_bound
    try:
        for row in plan_rows(plan, finish=finish, on_row=lambda _: bar.update(1)):
            row.request = None  # keep the numbers (estimated_tokens, request_bytes), not the body
            rows.append(row)
    finally:
        bar.close()
    return rows


def _to_send(rows: Sequence[RowPlan]) -> list[RowPlan]:
    """The rows that would be sent: no error, not cached, not a repeat of an earlier row."""
    return [r for r in rows if r.error is None and r.hit is None and r.repeat_of is None]


def _totals(rows: Sequence[RowPlan]) -> dict[str, int]:
    """The totals ``dry_run`` reports and ``budget_tokens`` is checked against."""
    sent = _to_send(rows)
    failed = sum(r.error is not None for r in rows)
    hits = sum(r.hit is not None for r in rows)
    sizes = [r.request_bytes or 0 for r in sent]
    return {
        "requests": len(sent),
        "cache_hits": hits,
        "repeats": len(rows) - len(sent) - hits - failed,
        "failed": failed,
        "estimated_tokens": sum(r.estimated_tokens or 0 for r in sent),
        "request_bytes": sum(sizes),
        "largest_request_bytes": max(sizes, default=0),
    }


def dry_run_frame(plan: Plan) -> pd.DataFrame:
    """``dry_run=True``'s result: per-row estimates and the totals, nothing sent."""
    rows = _estimate(plan, encode=True)
    index = plan.index
    out = pd.DataFrame(
        {
            "estimated_tokens": pd.array([r.estimated_tokens for r in rows], dtype="Int64"),
            "request_bytes": pd.array([r.request_bytes for r in rows], dtype="Int64"),
            "cached": pd.array([r.hit is not None for r in rows], dtype=bool),
            "error": pd.Series([r.error for r in rows], index=index, dtype=object),
        },
        index=index,
    )
    out.attrs["usage"] = {
        "rows": plan.n,
        **_totals(rows),
        "provider": plan.provider.name,
        "model": plan.model,
        "dry_run": True,
    }
    totals = out.attrs["usage"]
    # prompt tokens only: the completion is not known before the answer
    totals.update(
        money_fields(
            plan.provider, plan.model, totals["estimated_tokens"], name="estimated_cost_usd"
        )
    )
    return out


def check_budget(plan: Plan, budget_tokens: int) -> int:
    """Raise ``BudgetExceeded`` if the dry run's total is over ``budget_tokens``; returns it.

    The decision and the number are the dry run's. To spare encoding every image twice (here
    and in the run), headers are read first: their total is an upper bound of the dry run's
    (encoding never enlarges an image, and token formulas do not fall as images grow), so
    when even it is within budget the run starts at once; otherwise the dry run's exact
    computation decides.
    """
    bound = _totals(_estimate(plan, encode=False))["estimated_tokens"]
    if bound <= budget_tokens:
        logger.info(
            "estimate of at most %s tokens is within budget_tokens=%s", bound, budget_tokens
        )
        return bound
    totals = _totals(_estimate(plan, encode=True))
    total = totals["estimated_tokens"]
    if total > budget_tokens:
        usd = money(plan.provider, plan.model, total)
        dollars = (
            "" if usd is None else f" (about ${usd:,.2f} for the prompts at {plan.model}'s price)"
        )
        raise BudgetExceeded(
            f"the estimate is {total:,} tokens{dollars} for {totals['requests']:,} requests "
            f"(prompt and images as encoded, {plan.provider.name} formula; cache hits and "
            f"repeated images are free), over budget_tokens={budget_tokens:,}; nothing was "
            "sent. dry_run=True shows the same estimate per row; max_side= makes images "
            "cheaper."
        )
    logger.info("estimate %s tokens is within budget_tokens=%s", total, budget_tokens)
    return total
