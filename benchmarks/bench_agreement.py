"""Agreement statistics: visionkit against scikit-learn, statsmodels and krippendorff.

    python benchmarks/bench_agreement.py [ITEMS]      # default 100,000 items x 3 annotators

The goal (issue 13): visionkit's agreement over 100,000 labels from 3 annotators takes at most
2x the time of the fastest reference library on the same data. Each library is timed on the
input it takes best (label strings for scikit-learn and statsmodels, float codes with NaN for
krippendorff, which cannot take strings); visionkit starts from the DataFrame of label strings
and computes *everything* (alpha, Fleiss' kappa, three pairwise Cohen's kappas, per-class
kappa and alpha). Best of 5 runs each, side by side in one process. Prints the ratios.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd

import visionkit as vk

LABELS = ["bird", "cat", "dog", "fish", "horse"]


def make(items: int, raters: int = 3, missing: float = 0.0, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    truth = rng.choice(LABELS, size=items)
    cols = {}
    for r in range(raters):
        col = np.where(rng.random(items) < 0.2, rng.choice(LABELS, size=items), truth)
        col = col.astype(object)
        col[rng.random(items) < missing] = None
        cols[f"ann{r}"] = col
    return pd.DataFrame(cols)


def best(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(items: int = 100_000) -> None:
    import krippendorff
    from sklearn.metrics import cohen_kappa_score
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    for missing in (0.0, 0.1):
        frame = make(items, missing=missing)
        codes = frame.apply(lambda c: c.map({k: float(i) for i, k in enumerate(LABELS)}))
        numeric = codes.to_numpy(dtype=float)
        label = f"{items:,} items x 3 annotators ({frame.notna().to_numpy().sum():,} labels"
        label += f", {missing:.0%} missing)"
        print(label)
        ours = best(lambda f=frame: vk.rater_agreement(f))
        ours_alpha = best(lambda f=frame: vk.krippendorff_alpha(f))
        refs = {}
        refs["krippendorff.alpha (nominal, float codes)"] = best(
            lambda n=numeric: krippendorff.alpha(
                reliability_data=n.T, level_of_measurement="nominal"
            )
        )
        pairs = [("ann0", "ann1"), ("ann0", "ann2"), ("ann1", "ann2")]

        def sklearn_pairs(f=frame, pairs=pairs):
            for a, b in pairs:
                both = f[[a, b]].dropna()
                cohen_kappa_score(both[a], both[b])

        refs["sklearn cohen_kappa_score x 3 pairs"] = best(sklearn_pairs)
        both = frame[["ann0", "ann1"]].dropna()
        refs["sklearn cohen_kappa_score, one pair"] = best(
            lambda b=both: cohen_kappa_score(b["ann0"], b["ann1"])
        )
        if not missing:  # statsmodels' fleiss_kappa refuses missing ratings
            refs["statsmodels aggregate_raters + fleiss_kappa"] = best(
                lambda f=frame: fleiss_kappa(aggregate_raters(f.to_numpy())[0])
            )
        print(f"  visionkit rater_agreement (all statistics)  {ours * 1000:8.1f} ms")
        print(f"  visionkit krippendorff_alpha alone          {ours_alpha * 1000:8.1f} ms")
        for name, t in refs.items():
            print(f"  {name:<44s}{t * 1000:8.1f} ms")
        kripp = refs["krippendorff.alpha (nominal, float codes)"]
        print(f"  alpha alone, visionkit / krippendorff: {ours_alpha / kripp:.2f}x")
        fastest = min(refs, key=refs.get)
        print(
            f"  ratio, visionkit (all) / fastest reference ({fastest}): "
            f"{ours / refs[fastest]:.2f}x  (goal <= 2x)"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
