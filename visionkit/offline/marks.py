"""The stand-in's one seeing task: counting small red marks, from the pixels it receives.

Everything else the stand-in says describes pixels (size, format, colours). Asked *how many
marks* (or to *count* them), it counts the small patches of strong red in each image, looking
at it at its model's internal resolution, as small vision models do: ``visionkit-offline-small``
sees at most 448 px a side (area-averaged, like a patch encoder), ``visionkit-offline`` sees
the image as it was sent. A mark is seen while some pixel is still mostly red: a 1-2 px mark
is lost when an image is halved, a 4 px one at about a third. So smaller images cost fewer
tokens *and* lose small marks, and an evaluation against the true counts has a real
cost/quality frontier. Any other question about what an image shows it still declines.

``make_marks(path, n)`` writes such a set -- PNGs of 1120 x 840 (inference.net's 1,120 px cap,
so ``max_side`` 560 / 840 / 1120 cost 1,601 / 2,702 / 4,803 tokens), 1-5 marks of 1-9 px on a
light grey ground with dark grey squares that are not marks -- and returns the frame with the
true ``count`` and, if asked, the labels of simulated annotators who now and then miss a mark
of 1-2 px: the stand-in's stand-in for a team's save file.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "MODEL_RESOLUTION",
    "SMALL_MODEL",
    "count_marks",
    "make_marks",
    "wants_count",
]

SMALL_MODEL = "visionkit-offline-small"
"""A second model of the stand-in: it looks at images at 448 px a side at most, as small
vision models do, so it miscounts small marks that ``DEFAULT_MODEL`` sees."""
# The longest side each model looks at; a model not named here sees the image as sent.
MODEL_RESOLUTION = {SMALL_MODEL: 448}
MARK_RGB = (214, 28, 36)
GROUND_RGB = (218, 218, 214)
CLUTTER_RGB = (96, 96, 100)
COUNT_WORDS = re.compile(r"\b(how many|count|number of)\b", re.IGNORECASE)
MARK_WORDS = re.compile(r"\bmarks?\b", re.IGNORECASE)


def wants_count(prompt: str) -> bool:
    """Whether a prompt asks for a count of marks (``how many``/``count``/``number of`` and
    ``mark``): other questions get the usual pixel description."""
    return COUNT_WORDS.search(prompt) is not None and MARK_WORDS.search(prompt) is not None


def _components(mask: np.ndarray) -> int:
    """The number of 4-connected components of ``True`` pixels in a 2-D mask (numpy only).

    Marked pixels are few: each starts with its own label, and along the edges between
    neighbouring marked pixels labels flow to the smaller one (with pointer jumping) until
    nothing changes; the distinct labels left are the components.
    """
    height, width = mask.shape
    flat = np.flatnonzero(mask)
    if not len(flat):
        return 0
    edges = []
    for step, ok in ((1, (flat % width) != width - 1), (width, flat < (height - 1) * width)):
        target = flat[ok] + step
        at = np.searchsorted(flat, target)
        found = at < len(flat)
        found[found] = flat[at[found]] == target[found]
        edges.append((np.flatnonzero(ok)[found], at[found]))
    a = np.concatenate([e[0] for e in edges])
    b = np.concatenate([e[1] for e in edges])
    labels = np.arange(len(flat))
    while True:
        low = np.minimum(labels[a], labels[b])
        before = labels.copy()
        np.minimum.at(labels, a, low)
        np.minimum.at(labels, b, low)
        labels = labels[labels]  # jump to the label's own label
        if np.array_equal(labels, before):
            return len(np.unique(labels))


def count_marks(data: bytes, *, resolution: int | None = None) -> int:
    """How many red marks the image holds, seen at ``resolution`` px a side at most."""
    with Image.open(io.BytesIO(data)) as im:
        im.draft("RGB", (resolution, resolution) if resolution else im.size)
        rgb = im.convert("RGB")
    if resolution is not None and max(rgb.size) > resolution:
        scale = resolution / max(rgb.size)
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        rgb = rgb.resize(size, Image.Resampling.BOX)  # area averaging, as a patch encoder sees
    arr = np.asarray(rgb, dtype=np.int16)
    r, g, b = arr[..., 0], arr[..., 1], arr[..., 2]
    red = (r > 150) & (g < 90) & (b < 90)
    return _components(red)


def _place(rng: np.random.Generator, sizes: list[int], width: int, height: int) -> list[Any]:
    """Top-left corners for squares of ``sizes``, at least 48 px apart and off the edges."""
    spots: list[tuple[int, int]] = []
    while len(spots) < len(sizes):
        x = int(rng.integers(40, width - 56))
        y = int(rng.integers(40, height - 56))
        if all(abs(x - a) > 48 or abs(y - b) > 48 for a, b in spots):
            spots.append((x, y))
    return spots


def make_marks(
    path: str | os.PathLike[str],
    n: int = 300,
    *,
    dimensions: tuple[int, int] = (1120, 840),
    counts: tuple[int, int] = (1, 5),
    mark_sizes: tuple[int, int] = (1, 9),
    annotators: int = 0,
    save: str | os.PathLike[str] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Write ``n`` PNGs of red marks (``dimensions``: width, height) to the folder ``path``
    and return their frame.

    Columns: ``path``, ``count`` (the true number of marks, as text: a class label), the
    ``smallest`` mark's side in px, and one column per simulated annotator (``annotator_1``...)
    whose label misses each mark of 1-2 px with probability 0.1 and each other mark with
    probability 0.02. ``save=``: also write those labels as the team annotators' long-form save
    file (``vk.read_annotations`` reads it). The same ``seed`` writes the same files and labels.
    """
    import pandas as pd

    out = Path(path).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = dimensions
    rows = []
    for i in range(n):
        k = int(rng.integers(counts[0], counts[1] + 1))
        sides = [int(s) for s in rng.integers(mark_sizes[0], mark_sizes[1] + 1, size=k)]
        clutter = int(rng.integers(2, 6))
        spots = _place(rng, sides + [12] * clutter, width, height)
        pixels = np.empty((height, width, 3), dtype=np.uint8)
        pixels[:] = GROUND_RGB
        for (x, y), side in zip(spots[k:], [12] * clutter, strict=True):
            pixels[y : y + side, x : x + side] = CLUTTER_RGB
        for (x, y), side in zip(spots[:k], sides, strict=True):
            pixels[y : y + side, x : x + side] = MARK_RGB
        path = out / f"marks_{i:04d}.png"
        Image.fromarray(pixels).save(path, optimize=False, compress_level=6)
        row: dict[str, Any] = {"path": str(path), "count": str(k), "smallest": min(sides)}
        for a in range(annotators):
            miss = rng.random(k) < np.where(np.array(sides) <= 2, 0.1, 0.02)
            row[f"annotator_{a + 1}"] = str(max(0, k - int(miss.sum())))
        rows.append(row)
    frame = pd.DataFrame(rows, index=pd.Index([f"m{i:04d}" for i in range(n)]))
    if save is not None and annotators:
        who = [f"annotator_{a + 1}" for a in range(annotators)]
        long = frame.reset_index(names="index").melt(
            id_vars=["index", "path"], value_vars=who, var_name="annotator", value_name="label"
        )
        long["label_at"] = None
        long.sort_values(["index", "annotator"]).to_csv(save, index=False)
    return frame
