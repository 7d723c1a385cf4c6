"""Widget speed: paging a Gallery through 1,000 images, cold and cached; labelling with saves;
drawing a box and saving it (BoxAnnotator) with 1,000 rows.

    python benchmarks/bench_widgets.py [N]

Prints times measured side by side and their ratios (no targets asserted: machines differ).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

import visionkit as vk
from visionkit.images.thumbnails import clear_thumbnail_cache

LABELS = 50


def make_images(folder: Path, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    paths = []
    for i in range(n):
        path = folder / f"img{i:04d}.jpg"
        Image.fromarray(np.roll(base, i * 7, axis=1)).save(path, quality=85)
        paths.append(str(path))
    return pd.DataFrame({"path": paths, "answer": ["cat", "dog"] * (n // 2) + ["cat"] * (n % 2)})


def clock(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def page_through(gallery) -> None:
    for page in range(gallery.page_count):
        gallery.page = page


def main(n: int = 1000, only_boxes: bool = False) -> None:
    if only_boxes:
        with tempfile.TemporaryDirectory() as tmp:
            bench_boxes(make_images(Path(tmp), n), Path(tmp))
        return
    with tempfile.TemporaryDirectory() as tmp:
        df = make_images(Path(tmp), n)
        clear_thumbnail_cache()
        made: list = []
        first = clock(lambda: made.append(vk.Gallery(df, page_size=24)))
        g = made[0]
        cold = clock(lambda: page_through(g))
        g._cache.wait()
        warm = clock(lambda: page_through(g))
        # A person looks at a page before turning it: by then the next one is made.
        clear_thumbnail_cache()
        h = vk.Gallery(df, page_size=24)
        turns = []
        for page in range(1, h.page_count):
            h._cache.wait()
            turns.append(clock(lambda p=page: setattr(h, "page", p)))
        paused = float(np.median(turns))
        pages = g.page_count
        print(f"Gallery, {n} images of 640x480, {pages} pages of 24:")
        print(f"  first page shown        {first * 1000:8.1f} ms")
        print(
            f"  every page, first time  {cold * 1000:8.1f} ms  ({cold / pages * 1000:.1f} ms/page,"
            " next page prefetched)"
        )
        print(
            f"  every page, again       {warm * 1000:8.1f} ms  ({warm / pages * 1000:.2f} ms/page)"
        )
        print(f"  turning a page after a pause (prefetched): {paused * 1000:.2f} ms median")
        print(
            f"  cached / first time     {warm / cold:8.3f}x   thumbnails made: "
            f"{g.cache_info().made} for {n} rows"
        )

        for suffix in ("csv", "parquet"):
            save = Path(tmp) / f"labels.{suffix}"
            ann = vk.Annotator(df.copy(), label_column="label", labels=["cat", "dog"], save=save)
            plain = vk.Annotator(df.copy(), label_column="label", labels=["cat", "dog"])
            with_save = clock(lambda a=ann: [a.label("cat") for _ in range(LABELS)])
            without = clock(lambda a=plain: [a.label("cat") for _ in range(LABELS)])
            print(
                f"Annotator, {n} rows, save={suffix}: {with_save / LABELS * 1000:.1f} ms per label "
                f"(atomic write included) vs {without / LABELS * 1000:.1f} ms without a file "
                f"({with_save / without:.1f}x)"
            )
        bench_boxes(df, Path(tmp))


def bench_boxes(df: pd.DataFrame, tmp: Path, draws: int = 40) -> None:
    """Goal (issue 13): a drawn box is on disk <= 50 ms after the mouse is released, with
    1,000 rows. Timed from the front end's "draw" message reaching the kernel to the save file
    replaced on disk (the widget writes before it returns); the browser-to-kernel hop on
    localhost adds about a millisecond. The file also holds a colleague's boxes for every row,
    as a team's file does."""
    n = len(df)
    for suffix in ("csv", "parquet"):
        save = tmp / f"boxes.{suffix}"
        colleague = vk.BoxAnnotator(
            df.copy(), box_column="boxes", labels=["cat", "dog"], save=save, annotator="ben"
        )
        for pos in range(n):  # ben's boxes everywhere, written once at the end
            colleague._put(pos, [{"label": "cat", "x": 10.0, "y": 10.0, "w": 50.0, "h": 40.0}])
            colleague._file.set(colleague._keys[pos], colleague._encode(colleague._get(pos)))
        colleague._file.write()
        ann = vk.BoxAnnotator(
            df.copy(), box_column="boxes", labels=["cat", "dog"], save=save, annotator="ana"
        )
        times, cpu = [], []
        for k in range(draws):
            if k % 4 == 0 and k:
                ann.next()
            box = {"x": 20.0 + k, "y": 30.0, "w": 100.0, "h": 80.0}
            start, start_cpu = time.perf_counter(), time.process_time()
            ann.view._handle_custom_msg({"type": "draw", "box": box}, [])
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
            assert "added" in ann.view.message, ann.view.message
        ms = np.array(times) * 1000
        print(
            f"BoxAnnotator, {n} rows (+{n} of a colleague's in the file), save={suffix}: draw to "
            f"disk median {np.median(ms):.1f} ms, 90th pct {np.percentile(ms, 90):.1f} ms, "
            f"max {ms.max():.1f} ms over {draws} boxes, CPU {np.median(cpu) * 1000:.1f} ms "
            f"median (goal <= 50 ms; load average "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
        )


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--boxes"]
    main(int(args[0]) if args else 1000, only_boxes="--boxes" in sys.argv)
