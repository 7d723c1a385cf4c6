"""Evaluating a grid against asking each configuration separately, side by side in one run.

    python benchmarks/bench_evaluate.py                 # 12 configurations x 300 rows
    python benchmarks/bench_evaluate.py --rows 60       # a quick run

The goal: ``evaluate`` over 12 configurations (2 prompts x 2 models x 3 image sizes) on 300
labelled rows costs no more than the 12 separate ``ask`` calls it replaces -- the same number of
requests and no more wall time at the same concurrency -- and the statistics it adds (every
metric with 2,000 bootstrap resamples, the human ceiling) take under a second. The rows are the
stand-in's red-mark images (1120 x 840 PNGs, three simulated annotators for the human ceiling,
the true counts as the truth so every row is evaluated); the stand-in answers with a fixed
latency in its own threads; each arm starts from an empty cache, then ``evaluate`` runs again on
its cache (nothing sent). The arms alternate, ``--repeat`` times, and the best time of each is
compared. Prints the load average: a loaded machine skews wall-clock ratios.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import visionkit as vk
from visionkit import offline
from visionkit.annotation.reliability import count_table
from visionkit.evaluation import scores
from visionkit.evaluation.result import summarise
from visionkit.providers import price_of

PROMPTS = {
    "number": "How many red marks are in this image? Answer with a number.",
    "count": "Count the red marks in this image.",
}
MODELS = [offline.DEFAULT_MODEL, offline.SMALL_MODEL]
SIDES = [560, 840, 1120]


def load() -> str:
    return (
        " ".join(Path("/proc/loadavg").read_text().split()[:3])
        if os.path.exists("/proc/loadavg")
        else "?"
    )


def separate_asks(frame, client, cache: Path, concurrency: int) -> None:
    for prompt in PROMPTS.values():
        for model in MODELS:
            for side in SIDES:
                vk.ask(
                    frame,
                    prompt,
                    client=client,
                    model=model,
                    max_side=side,
                    cache=cache,
                    concurrency=concurrency,
                    progress=False,
                )


def evaluate(frame, labels: Path, client, cache: Path, concurrency: int) -> vk.Evaluation:
    return frame.vision.evaluate(
        "count",
        annotations=labels,
        prompts=PROMPTS,
        models=MODELS,
        max_side=SIDES,
        client=client,
        cache=cache,
        concurrency=concurrency,
        progress=False,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--latency", type=float, default=0.05, help="stand-in seconds/answer")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-evaluate-"))
    frame = offline.make_marks(work / "images", args.rows, annotators=3, save=work / "labels.csv")
    configs = len(PROMPTS) * len(MODELS) * len(SIDES)
    print(
        f"{configs} configurations x {args.rows} rows, stand-in latency {args.latency} s, "
        f"concurrency {args.concurrency}; load before: {load()}"
    )
    times: dict[str, list[float]] = {"asks": [], "evaluate": []}
    sent: dict[str, int] = {}
    with offline.serve(latency=args.latency) as url:
        client = vk.connect("offline", base_url=url)
        for run in range(args.repeat):
            for arm in ("asks", "evaluate"):
                cache = work / f"{arm}-{run}.sqlite"
                url.server.reset_stats()
                start = time.perf_counter()
                if arm == "asks":
                    separate_asks(frame, client, cache, args.concurrency)
                else:
                    ev = evaluate(frame, work / "labels.csv", client, cache, args.concurrency)
                times[arm].append(time.perf_counter() - start)
                sent[arm] = url.server.stats.chat_requests
        url.server.reset_stats()
        start = time.perf_counter()
        again = evaluate(frame, work / "labels.csv", client, cache, args.concurrency)
        cached_time = time.perf_counter() - start
        resent = url.server.stats.chat_requests

    # what evaluate adds to the asks: the statistics, on the answers it already has
    prices = {label: price_of("offline", c.model) for label, c in ev.configs.items()}
    start = time.perf_counter()
    summarise(
        ev.answers,
        ev.configs,
        ev.labels,
        prices,
        resamples=ev.resamples,
        confidence=ev.confidence,
        seed=0,
    )
    wide = vk.read_annotations(work / "labels.csv").pivot(
        index="index", columns="annotator", values="label"
    )
    counts, _ = count_table(wide.loc[[str(i) for i in ev.truth.index]])
    scores.ceiling_scores(counts, wide.shape[1], resamples=ev.resamples)
    stats_time = time.perf_counter() - start

    asks, evaluated = min(times["asks"]), min(times["evaluate"])
    print(f"12 separate asks : {sent['asks']:>6,} requests  {asks:7.2f} s (best of {args.repeat})")
    print(
        f"evaluate         : {sent['evaluate']:>6,} requests  {evaluated:7.2f} s "
        f"({evaluated / asks:.2f}x the asks' time; goal <= 1.00x, same requests)"
    )
    print(f"evaluate again   : {resent:>6,} requests  {cached_time:7.2f} s (all from the cache)")
    print(
        f"statistics       : {stats_time:7.3f} s for {configs} configurations x "
        f"{ev.resamples:,} resamples and the human ceiling (goal < 1 s)"
    )
    same = again.table.equals(ev.table)
    print(f"tables equal on the cached re-run: {same}; load after: {load()}")


if __name__ == "__main__":
    main()
