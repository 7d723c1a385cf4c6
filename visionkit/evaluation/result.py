"""``Evaluation``: what ``evaluate`` measured, and the decisions read from it.

Usage:

    ev = df.vision.evaluate("label", prompts=..., models=[...], max_side=[560, 840, 1120])
    ev.table                        # one row per configuration, with 95 % intervals
    ev.plot()                       # the cost/quality frontier, the human ceiling as a band
    best = ev.best("kappa", at_least=0.8)     # the cheapest that clears the bar
    ev.compare("560 px", "1120 px")           # McNemar's exact test on the same rows
    ev.project(full, best)                    # tokens, money, hours, the batch plan
    job = full.vision.submit(**best)          # the choice, as submit's options
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..providers import Price, RateLimits
from . import scores
from .grid import Config
from .project import Projection, project

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["Choice", "Evaluation"]


class Choice(dict[str, Any]):
    """The configuration ``Evaluation.best`` chose, as ``ask``/``submit`` keyword arguments
    (``df.vision.submit(**choice)``); ``label`` names its row of ``Evaluation.table``, whose
    numbers are in ``row``."""

    label: str
    row: pd.Series

    def __init__(self, label: str, options: Mapping[str, Any], row: pd.Series) -> None:
        super().__init__(options)
        self.label = label
        self.row = row

    def __repr__(self) -> str:
        shown = {k: v for k, v in self.items() if k != "client"}
        return f"Choice({self.label!r}, {shown!r})"


@dataclass
class Evaluation:
    """One row of ``table`` per configuration (see ``evaluate``), the answers behind it, and
    the human ceiling when several people labelled the rows.

    ``table`` columns: ``prompt``, ``model``, ``max_side``; ``rows`` evaluated, ``answered``,
    ``failed`` (an error: no answer), ``unparsed`` (answered, naming no label); ``accuracy``,
    ``kappa`` (Cohen's) and ``macro_f1`` against the truth over the answered rows, each with
    ``_low``/``_high`` bootstrap bounds; measured ``prompt_tokens_per_row``,
    ``completion_tokens_per_row`` and ``tokens_per_row``; ``usd_per_1000`` rows where the
    model's price is known (NaN otherwise); ``latency_median_s`` and ``latency_p95_s``.
    ``answers`` has one row per configuration and row: ``truth``, ``label`` (the answer as a
    label), ``answer``, ``error``, tokens, ``latency_s``, ``correct``. ``ceiling``: the raters'
    Fleiss' kappa, Krippendorff's alpha and observed agreement with the same intervals.
    """

    answers: pd.DataFrame
    truth: pd.Series
    labels: list[Any]
    configs: dict[str, Config]
    prices: dict[str, Price | None] = field(default_factory=dict)  # per configuration
    ceiling: pd.DataFrame | None = None
    source: str = ""
    no_consensus: int = 0
    confidence: float = scores.CONFIDENCE
    resamples: int = scores.RESAMPLES
    seed: int = 0
    concurrency: int = 8
    # per configuration: provider profile, model, rate limits, request bytes per row (lazy)
    _runs: dict[str, Any] = field(default_factory=dict, repr=False)
    # computed from the answers when the evaluation is made (statistics only, no figure)
    table: pd.DataFrame = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.table = summarise(
            self.answers,
            self.configs,
            self.labels,
            self.prices,
            resamples=self.resamples,
            confidence=self.confidence,
            seed=self.seed,
        )

    # -- reading -------------------------------------------------------------------------
    def _label(self, config: str | Choice) -> str:
        name = config.label if isinstance(config, Choice) else config
        if name not in self.configs:
            raise KeyError(f"no configuration {name!r}; the table's index is {list(self.configs)}")
        return name

    @property
    def cost_column(self) -> str:
        """What "cheapest" means: money per 1,000 rows where every configuration's price is
        known, tokens per row otherwise."""
        usd = self.table["usd_per_1000"]
        return "usd_per_1000" if usd.notna().all() else "tokens_per_row"

    def best(self, metric: str = "kappa", *, at_least: float = 0.8) -> Choice:
        """The cheapest configuration whose interval's lower bound reaches ``at_least``.

        Cheapest by ``cost_column``; a tie goes to the higher estimate. Returns a ``Choice``,
        ``ask``/``submit``'s options (``df.vision.submit(**ev.best())``). Raises
        ``ValueError`` saying how close the best came when none clears the bar.
        """
        if metric not in scores.METRICS:
            raise ValueError(f"metric must be one of {list(scores.METRICS)}, not {metric!r}")
        table = self.table
        low = table[f"{metric}_low"]
        passing = table[low >= at_least]
        if passing.empty:
            top = low.idxmax() if low.notna().any() else None
            near = (
                f"the highest lower bound is {low[top]:.3f} ({top!r}, {metric} "
                f"{table.loc[top, metric]:.3f})"
                if top is not None
                else "no configuration has an interval (nothing was answered)"
            )
            raise ValueError(
                f"no configuration's {metric} clears at_least={at_least} with "
                f"{self.confidence:.0%} confidence: {near}. More labelled rows narrow the "
                "intervals (sample=); other prompts, models or larger images may score higher; "
                "or lower the bar."
            )
        cost = self.cost_column
        order = passing.sort_values([cost, metric], ascending=[True, False])
        label = str(order.index[0])
        return Choice(label, self.configs[label].ask_options(), table.loc[label])

    def compare(
        self, first: str | Choice, second: str | Choice, *, alpha: float = 0.05
    ) -> scores.McNemar:
        """Whether two configurations (labels of ``table``'s index, or ``best``'s choices)
        really differ: McNemar's exact test on the rows both answered (right or wrong against
        the truth, row by row), significant below ``alpha``."""
        a, b = self._label(first), self._label(second)
        answers = self.answers
        right_a = answers[answers.index == a].set_index("row")
        right_b = answers[answers.index == b].set_index("row")
        both = right_a["error"].isna() & right_b["error"].reindex(right_a.index).isna()
        rows = right_a.index[both.to_numpy()]
        return scores.mcnemar_exact(
            right_a.loc[rows, "correct"].to_numpy(dtype=bool),
            right_b.loc[rows, "correct"].to_numpy(dtype=bool),
            a=a,
            b=b,
            alpha=alpha,
        )

    def project(
        self,
        data: pd.DataFrame,
        config: str | Choice,
        *,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
    ) -> Projection:
        """Tokens, money and hours for ``config`` on all of ``data``, and its batch plan
        (see ``visionkit.evaluation.project``). The rate limit is the client's unless
        given here."""
        label = self._label(config)
        run = self._runs[label]
        row = self.table.loc[label]
        limits = run["limits"]
        if requests_per_minute is not None or tokens_per_minute is not None:
            base = limits or RateLimits()
            limits = RateLimits(
                requests_per_minute or base.requests_per_minute,
                tokens_per_minute or base.tokens_per_minute,
            )
        chosen = self.configs[label]
        return project(
            data,
            label=label,
            provider=run["provider"],
            model=run["model"],
            prompt=chosen.prompt,
            system=chosen.options.get("system"),
            max_side=chosen.max_side,
            completion_per_row=float(row["completion_tokens_per_row"]),
            request_bytes_per_row=run["request_bytes"](),
            latency_median_s=float(row["latency_median_s"]),
            concurrency=int(chosen.run.get("concurrency", self.concurrency)),
            limits=limits,
        )

    # -- drawing ---------------------------------------------------------------------------
    def plot(
        self, ax: Axes | None = None, *, x: str = "tokens_per_row", y: str = "kappa", **kwargs: Any
    ) -> Axes:
        """The cost/quality frontier: each configuration at (``x``, ``y``) with its interval,
        the Pareto front marked, the human ceiling as a band. Returns the Axes."""
        from .plot import plot_frontier

        return plot_frontier(self, ax=ax, x=x, y=y, **kwargs)

    def pareto(self, x: str = "tokens_per_row", y: str = "kappa") -> pd.Series:
        """Whether each configuration is on the Pareto front of ``x`` (lower is better) and
        ``y`` (higher is better): no other is at least as good on both and better on one."""
        return pd.Series(
            scores.pareto_mask(self.table[x].to_numpy(float), self.table[y].to_numpy(float)),
            index=self.table.index,
            name="pareto",
        )

    def ceiling_for(self, metric: str) -> pd.Series | None:
        """The ceiling row that stands beside ``metric`` (kappa: Fleiss' kappa; accuracy: the
        raters' observed agreement), or None."""
        if self.ceiling is None:
            return None
        name = {"kappa": "fleiss_kappa", "accuracy": "agreement"}.get(metric)
        if name is None or name not in self.ceiling.index:
            return None
        return self.ceiling.loc[name]

    # -- display ---------------------------------------------------------------------------
    def describe(self) -> str:
        """A few lines of text on what was evaluated: configurations, rows, the truth's
        source, the intervals, rows left out; what ``repr`` shows first."""
        n = int(self.table["rows"].max()) if len(self.table) else 0
        head = (
            f"{len(self.table)} configuration(s) on {n} rows, against {self.source}; "
            f"{self.confidence:.0%} bootstrap intervals ({self.resamples} resamples)"
        )
        lines = [head]
        if self.no_consensus:
            lines.append(f"{self.no_consensus} row(s) left out: their raters tied")
        if self.ceiling is not None:
            c = self.ceiling
            lines.append(
                "human ceiling: Fleiss' kappa "
                f"{c.loc['fleiss_kappa', 'estimate']:.3f} [{c.loc['fleiss_kappa', 'low']:.3f}, "
                f"{c.loc['fleiss_kappa', 'high']:.3f}], Krippendorff's alpha "
                f"{c.loc['alpha', 'estimate']:.3f} [{c.loc['alpha', 'low']:.3f}, "
                f"{c.loc['alpha', 'high']:.3f}]"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        shown = ["kappa", "kappa_low", "kappa_high", "tokens_per_row"]
        return f"{self.describe()}\n{self.table[shown].round(3).to_string()}"

    def _repr_html_(self) -> str:
        lines = self.describe().split("\n")
        head = "".join(f"<p>{line}</p>" for line in lines)
        return head + str(self.table._repr_html_())


def summarise(
    answers: pd.DataFrame,
    configs: Mapping[str, Config],
    labels: list[Any],
    prices: Mapping[str, Price | None],
    *,
    resamples: int,
    confidence: float,
    seed: int,
) -> pd.DataFrame:
    """``Evaluation.table`` from the long ``answers`` frame (statistics only, no figure)."""
    rows = []
    for label, config in configs.items():
        part = answers[answers.index == label]
        ok = part["error"].isna().to_numpy()
        done = part[ok]
        y, p, k = scores.label_codes(
            list(done["truth"]),
            [scores.NO_LABEL if v is None else v for v in done["label"]],
            labels,
        )
        point = scores.agreement_scores(y, p, len(labels), k)
        bounds = scores.bootstrap_scores(
            y, p, len(labels), k, resamples=resamples, confidence=confidence, seed=seed
        )
        prompt_t = pd.to_numeric(done["prompt_tokens"], errors="coerce").astype(float)
        completion_t = pd.to_numeric(done["completion_tokens"], errors="coerce").astype(float)
        latency = pd.to_numeric(done["latency_s"], errors="coerce").astype(float).dropna()
        per_prompt = float(prompt_t.mean()) if len(done) else float("nan")
        per_completion = float(completion_t.mean()) if len(done) else float("nan")
        price = prices.get(label)
        usd = (
            price.cost(per_prompt, per_completion) * 1000
            if price is not None and np.isfinite(per_prompt)
            else float("nan")
        )
        row: dict[str, Any] = {
            "config": label,
            "prompt": config.prompt_name if config.prompt_name is not None else config.prompt,
            "model": config.model,
            "max_side": config.max_side,
            "rows": len(part),
            "answered": int(ok.sum()),
            "failed": int((~ok).sum()),
            "unparsed": int(done["label"].isna().sum()),
        }
        for name in scores.METRICS:
            row[name] = point[name]
            row[f"{name}_low"], row[f"{name}_high"] = bounds[name]
        row.update(
            {
                "prompt_tokens_per_row": per_prompt,
                "completion_tokens_per_row": per_completion,
                "tokens_per_row": per_prompt + per_completion,
                "usd_per_1000": usd,
                "latency_median_s": float(latency.median()) if len(latency) else float("nan"),
                "latency_p95_s": float(latency.quantile(0.95)) if len(latency) else float("nan"),
            }
        )
        rows.append(row)
    table = pd.DataFrame(rows).set_index("config")
    table["max_side"] = table["max_side"].astype("Int64")
    return table
