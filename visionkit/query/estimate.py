"""Dry runs and token budgets: what a run would send and cost, without the network.

One computation serves ``dry_run=True``, ``budget_tokens=`` and the run itself: a row's
estimate is ``prepare_request``'s -- the provider's formula on the image as encoded (after
``max_side`` and any shrinking to fit the body limit) plus the text -- and the total counts
what would be sent: cache hits and a repeat of an image already in the run are free (the run
answers them without a request), rows that would fail cost nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd

from ..errors import BudgetExceeded, ImageError, RequestError
from ..images.decode import display_size, open_header
from ..tokens import fit_within, text_tokens
from ..types import default_workers
from .body import prepare_request
from .messages import describe_error
from .plan import Plan, read_row
from .progress import progress_bar

__all__ = ["check_budget", "dry_run_frame"]

logger = logging.getLogger("visionkit")


def _estimate_row(plan: Plan, pos: int, *, encode: bool) -> dict[str, Any]:
    """Per-row estimate without the network: tokens, request bytes, cached, key, error.

    ``encode=True`` is the exact estimate (what ``dry_run`` reports). ``encode=False`` reads
    only headers and prices each image at the size ``encode`` starts from (its ``max_side``
    fit); encoding can only shrink an image further, so this is an upper bound of the exact
    estimate, used by the budget check to skip encoding when even the bound is in budget.
    """
    out: dict[str, Any] = {
        "estimated_tokens": None,
        "request_bytes": None,
        "cached": False,
        "key": None,
        "error": None,
    }
    prompt = plan.prompts[pos]
    label = plan.index[pos]
    try:
        if isinstance(prompt, RequestError):
            raise prompt
        datas, digests = read_row(plan, pos)
        out["key"] = plan.key(pos, digests, plan.model or "")
        if plan.cache is not None and plan.model is not None:
            hit = plan.cache.get(out["key"])
            if hit is not None:
                out.update(cached=True, estimated_tokens=hit.estimated_tokens)
                return out
        if encode:
            prepared = prepare_request(
                datas,
                provider=plan.provider,
                model=plan.model or "model",
                prompt=str(prompt),
                system=plan.system,
                response_format=plan.schema.response_format if plan.schema else None,
                params=plan.params,
                encode_options=plan.encode_options,
                row=label,
            )
            out.update(estimated_tokens=prepared.estimated_tokens, request_bytes=prepared.nbytes)
        else:
            tokens = text_tokens(str(prompt), plan.system)
            max_side = plan.encode_options.get("max_side") or plan.provider.max_side
            for data in datas:
                with open_header(data, row=label) as im:
                    w, h = display_size(im)
                if max_side:
                    w, h = fit_within(w, h, max_side)
                tokens += int(plan.provider.estimate(w, h))
            out["estimated_tokens"] = tokens
    except (ImageError, RequestError) as exc:
        out["error"] = describe_error(exc)
    return out


def _estimate(plan: Plan, *, encode: bool) -> list[dict[str, Any]]:
    workers = default_workers(minimum=2)
    desc = "vision dry run" if encode else "vision estimate"
    bar = progress_bar(plan.n, desc=desc, enabled=plan.progress)
    rows: list[dict[str, Any]] = []
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for row in pool.map(lambda p: _estimate_row(plan, p, encode=encode), range(plan.n)):
                rows.append(row)
                bar.update(1)
    finally:
        bar.close()
    return rows


def _to_send(rows: Sequence[Mapping[str, Any]]) -> list[bool]:
    """Which rows would be sent: no error, not cached, not a repeat of an earlier row's key."""
    seen: set[str] = set()
    out = []
    for r in rows:
        send = r["error"] is None and not r["cached"] and r["key"] not in seen
        if send:
            seen.add(r["key"])
        out.append(send)
    return out


def _totals(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """The totals ``dry_run`` reports and ``budget_tokens`` is checked against."""
    send = _to_send(rows)
    sent = [r for r, s in zip(rows, send, strict=True) if s]
    failed = sum(r["error"] is not None for r in rows)
    hits = sum(bool(r["cached"]) for r in rows)
    sizes = [r["request_bytes"] or 0 for r in sent]
    return {
        "requests": len(sent),
        "cache_hits": hits,
        "repeats": len(rows) - len(sent) - hits - failed,
        "failed": failed,
        "estimated_tokens": sum(r["estimated_tokens"] or 0 for r in sent),
        "request_bytes": sum(sizes),
        "largest_request_bytes": max(sizes, default=0),
    }


def dry_run_frame(plan: Plan) -> pd.DataFrame:
    rows = _estimate(plan, encode=True)
    index = plan.index
    out = pd.DataFrame(
        {
            "estimated_tokens": pd.array([r["estimated_tokens"] for r in rows], dtype="Int64"),
            "request_bytes": pd.array([r["request_bytes"] for r in rows], dtype="Int64"),
            "cached": pd.array([r["cached"] for r in rows], dtype=bool),
            "error": pd.Series([r["error"] for r in rows], index=index, dtype=object),
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
        raise BudgetExceeded(
            f"the estimate is {total:,} tokens for {totals['requests']:,} requests "
            f"(prompt and images as encoded, {plan.provider.name} formula; cache hits and "
            f"repeated images are free), over budget_tokens={budget_tokens:,}; nothing was "
            "sent. dry_run=True shows the same estimate per row; max_side= makes images "
            "cheaper."
        )
    logger.info("estimate %s tokens is within budget_tokens=%s", total, budget_tokens)
    return total
