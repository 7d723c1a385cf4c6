"""Evaluate before you scale: choose the prompt, model and image size by measured agreement and
cost, on the rows people labelled, before paying for all the others.

Usage:

    ev = df.vision.evaluate("label", prompts={"short": "How many red marks?"},
                            models=["visionkit-offline", "visionkit-offline-small"],
                            max_side=[560, 840, 1120])
    ev.table                                # agreement with 95 % intervals, tokens, money
    ev.plot()                               # the frontier: tokens per row against kappa
    choice = ev.best("kappa", at_least=0.8) # the cheapest whose interval clears the bar
    ev.compare("560 px", "1120 px")         # McNemar's exact test: do they really differ?
    ev.project(everything, choice)          # tokens, money, hours and the batch plan
    job = everything.vision.submit(**choice)

The parts, each with one job: ``grid`` (the configurations), ``truth`` (where the labels come
from, the stratified sample), ``run`` (``evaluate``: one ``ask`` run per configuration),
``scores`` (the statistics, numpy only), ``result`` (``Evaluation``), ``project`` (the whole
set's cost) and ``plot`` (drawing only).
"""

from __future__ import annotations

from .grid import Config
from .project import Projection
from .result import Choice, Evaluation
from .run import evaluate
from .scores import McNemar

__all__ = ["Choice", "Config", "Evaluation", "McNemar", "Projection", "evaluate"]
