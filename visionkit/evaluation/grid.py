"""The configurations an evaluation tries: prompts x models x image sizes x ``configs``.

A ``Config`` is one ``ask`` call's options plus a label, the index of ``Evaluation.table``. The
label names what varies across the grid, value after value (``"short · small · 560 px"``), so
``ev.compare("short · 560 px", "short · 1120 px")`` reads like the plot.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RUN_SETTINGS", "Config", "make_grid"]

_NOT_OPTIONS = ("dry_run", "progress", "cache", "budget_tokens")  # decided by evaluate itself
# How a run goes, not what it asks: passed to each ask, left out of ``ask_options``.
RUN_SETTINGS = ("concurrency", "max_retries", "timeout", "requests_per_minute", "tokens_per_minute")


@dataclass(frozen=True)
class Config:
    """One configuration: ``prompt`` and the options that decide its answers (``options``:
    model, max_side, system, schema, client, request options), under ``label``; ``run``: how
    its ``ask`` run goes (concurrency, timeouts, rate limits)."""

    label: str
    prompt: str
    options: Mapping[str, Any] = field(default_factory=dict)
    prompt_name: str | None = None
    run: Mapping[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> str | None:
        """The model this configuration asks (``None``: the client's default)."""
        return self.options.get("model")

    @property
    def max_side(self) -> int | None:
        """The longest side images are sent at (``None``: the provider's)."""
        return self.options.get("max_side")

    def ask_options(self) -> dict[str, Any]:
        """``ask``/``submit`` keyword arguments: the prompt and every option."""
        return {"prompt": self.prompt, **self.options}


def _named_prompts(
    prompts: str | Sequence[str] | Mapping[str, str] | None,
) -> list[tuple[Any, Any]]:
    if prompts is None:
        return [(None, None)]
    if isinstance(prompts, str):
        return [(None, prompts)]
    if isinstance(prompts, Mapping):
        items = list(prompts.items())
    else:
        items = [(f"prompt {i}", p) for i, p in enumerate(prompts, 1)]
    if not items:
        raise ValueError("prompts= is empty; give one template, a list, or a dict of named ones")
    for name, text in items:
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"prompt {name!r} must be non-empty text, not {text!r}")
    return items


def _listed(value: Any, name: str) -> list[Any]:
    if value is None or isinstance(value, (str, int)):
        return [value]
    out = list(value)
    if not out:
        raise ValueError(f"{name}= is an empty list; give at least one value or leave it out")
    return out


def _side_text(side: Any) -> str:
    return "full size" if side is None else f"{side} px"


def make_grid(
    *,
    prompts: str | Sequence[str] | Mapping[str, str] | None,
    models: str | Sequence[str | None] | None,
    max_side: int | Sequence[int | None] | None,
    configs: Sequence[Mapping[str, Any]] | None,
    options: Mapping[str, Any],
) -> list[Config]:
    """Every combination of ``prompts``, ``models``, ``max_side`` and ``configs`` (each a dict
    of ``ask`` options, with an optional ``"name"``), over ``options`` shared by all.

    Raises before anything is sent: no prompt anywhere, a duplicate configuration, or an option
    ``evaluate`` decides itself.
    """
    extra = [dict(c) for c in configs] if configs is not None else [{}]
    if configs is not None and not extra:
        raise ValueError("configs= is an empty list; give at least one dict of ask options")
    for c in extra:
        if not isinstance(c, dict):
            raise TypeError(f"each of configs= must be a dict of ask options, not {c!r}")
    for source in [options, *extra]:
        bad = [k for k in _NOT_OPTIONS if k in source]
        if bad:
            raise TypeError(f"evaluate decides {bad} itself; leave them out of the configurations")
    named = _named_prompts(prompts)
    model_list = _listed(models, "models")
    sides = _listed(max_side, "max_side")
    grid: list[Config] = []
    seen: dict[str, int] = {}
    for (pname, text), model, side, conf in itertools.product(named, model_list, sides, extra):
        opts = dict(options)
        if model is not None:
            opts["model"] = model
        if side is not None:
            opts["max_side"] = side
        conf = dict(conf)
        name = conf.pop("name", None)
        prompt = conf.pop("prompt", text)
        opts.update(conf)
        if prompt is None:
            raise ValueError("no prompt: pass prompts= (one template, a list or a dict)")
        run = {k: opts.pop(k) for k in RUN_SETTINGS if k in opts}
        parts = []
        if len(named) > 1:
            parts.append(str(pname))
        if len(model_list) > 1:
            parts.append(str(model))
        if len(sides) > 1:
            parts.append(_side_text(side))
        if configs is not None and len(extra) > 1:
            parts.append(str(name) if name is not None else f"config {len(grid) % len(extra) + 1}")
        label = " · ".join(parts) or str(name or pname or "configuration")
        if label in seen:
            raise ValueError(f"two configurations are both labelled {label!r}; name them")
        seen[label] = len(grid)
        grid.append(Config(label, prompt, opts, prompt_name=pname, run=run))
    return grid
