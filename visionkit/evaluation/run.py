"""``evaluate``: ask every configuration about the labelled rows and measure what came back.

Each configuration is one ``ask`` run over the same rows -- the same planner, cache, pacing and
retries, one after another at the same ``concurrency`` -- so an evaluation costs what the
separate ``ask`` calls would, and a second ``evaluate`` with the same arguments is answered by
the cache (or, under ``replay=``, by the recording) and sends nothing. The run's rows carry the
latency of each paid answer, kept with it in the cache, so a re-run reports the same latency.

An answer becomes a label by, in order: ``field=`` (a ``schema=`` field's value), a
``normalise=`` callable (answer text -> label, or None), or by default the one label of the
truth's that the answer names as a word (``vk.agreement``'s ``match_label``). Labels are
compared after case-folding and trimming (``vk.agreement``'s ``normalise``), so ``4`` from a
schema's integer field matches the label ``"4"``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..annotation.agreement import match_label
from ..annotation.agreement import normalise as normalise_text
from ..annotation.reliability import count_table
from ..providers import price_of
from ..query.cache import Cache
from ..query.client import Client, connect, default_client
from ..query.options import AskOptions
from ..query.plan import make_plan
from ..query.progress import progress_bar
from ..query.run import Run
from ..query.thread import run_in_thread
from . import scores
from .grid import Config, make_grid
from .result import Evaluation
from .truth import resolve_truth, stratified_sample

__all__ = ["evaluate"]

_ASK_FIELDS = {f for f in AskOptions.__dataclass_fields__}


def _to_label(value: Any, lookup: Mapping[str | None, Any]) -> Any:
    """``value`` as one of the truth's labels when it names one (compared normalised), else
    its normalised text (a wrong answer of its own), or None when there is nothing."""
    if value is None or (np.ndim(value) == 0 and pd.isna(value)):
        return None
    key = normalise_text(value)
    if key is None:
        return None
    return lookup.get(key, key)


def _labeller(
    labels: list[Any], field_column: str | None, normalise: Callable[[Any], Any] | None
) -> Callable[[pd.Series], Any]:
    lookup = {normalise_text(label): label for label in labels}
    options = [str(label) for label in labels]
    by_text = {str(label): label for label in labels}

    def label(row: pd.Series) -> Any:
        if field_column is not None:
            return _to_label(row.get(field_column), lookup)
        answer = row.get("answer")
        if answer is None or (np.ndim(answer) == 0 and pd.isna(answer)):
            return None
        if normalise is not None:
            return _to_label(normalise(answer), lookup)
        named = match_label(answer, options)
        return None if named is None else by_text[named]

    return label


def _resolve_client(client: Client | str | None) -> Client:
    if isinstance(client, str):
        return connect(client)
    return client if client is not None else default_client()


def _run_config(
    data: pd.DataFrame,
    config: Config,
    *,
    client: Client,
    cache: Cache | None,
    progress: bool,
    defaults: Mapping[str, Any],
) -> tuple[pd.DataFrame, list[float | None], Any]:
    """One configuration's ``ask`` run: its result frame, each row's latency, and the plan's
    provider, model and rate limits."""
    settings = {**defaults, **config.options, **config.run}
    own = settings.pop("client", None)
    request_options = {k: v for k, v in settings.items() if k not in _ASK_FIELDS}
    known = {k: v for k, v in settings.items() if k in _ASK_FIELDS}
    options = AskOptions(
        client=_resolve_client(own) if own is not None else client,
        cache=cache if cache is not None else False,
        progress=progress,
        request_options=request_options,
        **known,
    )
    with make_plan(data, config.prompt, options) as plan:
        run = Run(plan, bar=progress_bar(plan.n, desc=config.label, enabled=progress))
        frame = run_in_thread(run)
        latency = [r.latency_s for r in run.rows]
        identity = {
            "provider": plan.provider,
            "model": plan.model,
            "limits": plan.rate_limits,
            "schema_columns": dict(plan.schema_columns),
            "options": options,
        }
    return frame, latency, identity


def evaluate(
    data: pd.DataFrame,
    truth: str | None = None,
    *,
    raters: Sequence[str] | None = None,
    annotations: str | os.PathLike[str] | pd.DataFrame | None = None,
    label_column: str = "label",
    prompts: str | Sequence[str] | Mapping[str, str] | None = None,
    models: str | Sequence[str] | None = None,
    max_side: int | Sequence[int | None] | None = None,
    configs: Sequence[Mapping[str, Any]] | None = None,
    schema: Any = None,
    field: str | None = None,
    normalise: Callable[[Any], Any] | None = None,
    sample: int | None = None,
    seed: int = 0,
    client: Client | str | None = None,
    image_column: str | Sequence[str] | None = None,
    system: str | None = None,
    concurrency: int = 8,
    cache: bool | str | os.PathLike[str] | Cache | None = True,
    progress: bool = True,
    resamples: int = scores.RESAMPLES,
    confidence: float = scores.CONFIDENCE,
    **request_options: Any,
) -> Evaluation:
    """Try every configuration on the labelled rows and measure agreement, cost and latency.

    ``truth``: the column of human labels; or ``raters=`` (several rater columns) or
    ``annotations=`` (the team annotators' save file; ``label_column`` is its label column),
    whose consensus is the truth and whose agreement is the human ceiling. The grid is every
    combination of ``prompts`` (a template, a list, or a dict of named ones), ``models``,
    ``max_side`` (image sizes, ``None`` for as-is) and ``configs`` (dicts of ``ask`` options,
    another ``client`` included; ``"name"`` labels one). ``schema=``/``field=`` read the label
    from a structured answer; ``normalise=`` maps answer text to a label; by default the answer
    must name one of the truth's labels. ``sample=N``: a stratified, seeded sample of the
    labelled rows. ``system``, ``concurrency``, ``cache`` and ``**request_options``
    (``temperature=0``) go to every ``ask``. Returns an [`Evaluation`][visionkit.Evaluation].
    """
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"evaluate needs a DataFrame, not {type(data).__name__}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (0.95: 95 %), not {confidence!r}")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 100:
        raise ValueError(f"resamples must be an integer >= 100, not {resamples!r}")
    if field is not None and schema is None:
        raise TypeError("field= names a schema field: pass schema= too")
    if field is not None and normalise is not None:
        raise TypeError("pass field= (a schema field) or normalise= (for text), not both")
    shared: dict[str, Any] = dict(request_options)
    given = {"client": client, "image_column": image_column, "system": system, "schema": schema}
    shared.update({name: value for name, value in given.items() if value is not None})
    shared["concurrency"] = concurrency
    grid = make_grid(
        prompts=prompts, models=models, max_side=max_side, configs=configs, options=shared
    )
    found = resolve_truth(
        data, truth, raters=raters, annotations=annotations, label_column=label_column
    )
    rows = stratified_sample(found.labels, sample, seed)
    if not len(rows):
        raise ValueError(f"no labelled rows to evaluate on ({found.source} is empty)")
    subset = data.loc[rows]
    truth_values = found.labels.loc[rows]
    labels = sorted(pd.unique(truth_values), key=str)

    main_client = _resolve_client(client)
    store = Cache.open(cache)
    parts, runs, prices = [], {}, {}
    try:
        for config in grid:
            frame, latency, identity = _run_config(
                subset, config, client=main_client, cache=store, progress=progress, defaults={}
            )
            field_column = None
            if schema is not None:
                fields = identity["schema_columns"]
                field_name = (
                    field if field is not None else next(iter(fields)) if len(fields) == 1 else None
                )
                if field_name is None or field_name not in fields:
                    raise ValueError(
                        f"field= must name one of the schema's fields {list(fields)} (the one "
                        f"holding the label), not {field!r}"
                    )
                field_column = fields[field_name]
            label_of = _labeller(labels, field_column, normalise)
            said = frame.apply(label_of, axis=1) if len(frame) else pd.Series(dtype=object)
            long = pd.DataFrame(
                {
                    "config": config.label,
                    "row": list(rows),
                    "truth": truth_values.to_numpy(dtype=object),
                    "label": said.to_numpy(dtype=object),
                    "answer": frame["answer"].to_numpy(dtype=object),
                    "error": frame["error"].to_numpy(dtype=object),
                    "prompt_tokens": frame["prompt_tokens"].to_numpy(),
                    "completion_tokens": frame["completion_tokens"].to_numpy(),
                    "latency_s": pd.array(latency, dtype="Float64"),
                    "cached": frame["cached"].to_numpy(),
                }
            )
            long["correct"] = long["error"].isna() & (long["label"] == long["truth"])
            parts.append(long)
            prices[config.label] = price_of(identity["provider"], identity["model"])
            runs[config.label] = {
                **identity,
                "request_bytes": _request_bytes(subset, config, identity["options"]),
            }
    finally:
        if store is not None and store is not cache:
            store.close()
    answers = pd.concat(parts, ignore_index=True).set_index("config")
    for column in ("label", "answer", "error"):  # None, never NaN, where there is nothing
        answers[column] = answers[column].astype(object).where(answers[column].notna(), None)
    configs_by_label = {c.label: c for c in grid}
    ceiling = None
    if found.raters is not None:
        wide = found.raters.loc[rows]
        counts, _ = count_table(wide)
        stats = scores.ceiling_scores(
            counts, wide.shape[1], resamples=resamples, confidence=confidence, seed=seed
        )
        ceiling = pd.DataFrame(stats, index=["estimate", "low", "high"]).T
        ceiling["items"] = int((counts.sum(1) >= 2).sum())
        ceiling["raters"] = wide.shape[1]
    return Evaluation(
        answers=answers,
        truth=truth_values,
        labels=labels,
        configs=configs_by_label,
        prices=prices,
        ceiling=ceiling,
        source=found.source,
        no_consensus=found.no_consensus,
        confidence=confidence,
        resamples=resamples,
        seed=seed,
        concurrency=concurrency,
        _runs=runs,
    )


def _request_bytes(
    subset: pd.DataFrame, config: Config, options: AskOptions
) -> Callable[[], float | None]:
    """A lazy measure of the request bytes per row (a dry run on up to 50 evaluated rows):
    ``Evaluation.project``'s batch plan needs it, an evaluation alone does not."""
    cached: list[float | None] = []

    def measure() -> float | None:
        if not cached:
            from ..query.ask import ask

            kwargs = {k: getattr(options, k) for k in _ASK_FIELDS if k != "request_options"}
            kwargs.update(dry_run=True, progress=False, budget_tokens=None, cache=False)
            dry = ask(subset.iloc[:50], config.prompt, **kwargs, **options.request_options)
            sizes = pd.to_numeric(dry["request_bytes"], errors="coerce").dropna()
            cached.append(float(sizes.mean()) if len(sizes) else None)
        return cached[0]

    return measure
