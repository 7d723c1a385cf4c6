"""Batch jobs (issue 14): preparing a job, mapping results back, a job finished after expiry,
and what compact encoding saves.

    python benchmarks/bench_batch.py [--rows 2000] [--lines 50000] [--quick]

1. Preparing an N-image job (plan as ``ask`` does: read, hash, encode, check, write the JSONL
   files) against ``encode_series`` alone on the same images, same worker count: throughput
   ratio (goal >= 0.9), and peak RSS preparing 2,000 rows vs 200 (goal <= 1.2x), each in a
   fresh process.
2. Mapping a result file of ``--lines`` lines back onto the frame (download, commit each answer
   to the cache, the result table) against preparing the same job (goal <= 10 %): measured on
   a job of small in-memory images through the stand-in, and against the per-row cost of
   preparing the camera-like images of (1), extrapolated to the same number of rows.
3. Against the stand-in: a job cut into >= 3 files, one batch expiring part-way, submitted
   again: rows answered, and the stand-in's count of lines answered vs distinct rows.
4. ``compact=True``: bytes per image and PSNR against a lossless resize at the same size, vs the
   default encoding, at identical token estimates.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

import visionkit as vk
from visionkit import offline
from visionkit.batch.shared import BatchAskOptions, prepare
from visionkit.images.encode import encode_image, encode_series
from visionkit.providers import get_provider
from visionkit.query.plan import make_plan

PROMPT = "Describe this image in one sentence."


def make_photos(folder: Path, n: int, size: tuple[int, int] = (1600, 1200)) -> list[str]:
    """``n`` distinct photo-like JPEGs (smooth colour fields plus grain), quality 92 as a camera
    saves them: built small and upscaled in C, grain added as int16, so thousands take seconds."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    w, h = size
    grain = rng.integers(-10, 11, (h, w, 3), dtype=np.int16)  # one grain field, shifted per image
    paths = []
    for i in range(n):
        path = folder / f"{i:05d}.jpg"
        if not path.exists():
            small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
            base = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
            arr = np.asarray(base, dtype=np.int16) + np.roll(grain, 7 * i, axis=1)
            Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=92)
        paths.append(str(path))
    return paths


def prepare_job(paths: list[str], directory: Path) -> tuple[float, int]:
    """Seconds to prepare the job (plan, encode, check, write files) and the files' bytes."""
    df = pd.DataFrame({"path": paths})
    options = BatchAskOptions(cache=False, progress=False)
    limits = get_provider("offline").batch
    assert limits is not None
    t0 = time.perf_counter()
    with make_plan(df, PROMPT, options, connect_now=False) as plan:
        prep = prepare(
            plan,
            limits,
            None,
            directory,
            job_id=None,
            first_seq=1,
            progress=False,
            keep_rows=False,
        )
    elapsed = time.perf_counter() - t0
    return elapsed, sum(s.nbytes for s in prep.shards)


def child(args: argparse.Namespace) -> None:
    """A fresh process: prepare ``--rows`` images, print seconds and peak RSS (MB)."""
    paths = sorted(str(p) for p in Path(args.child).glob("*.jpg"))[: args.rows]
    with tempfile.TemporaryDirectory() as out:
        seconds, nbytes = prepare_job(paths, Path(out))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "bytes": nbytes, "peak_mb": peak}))


def run_child(folder: Path, rows: int) -> dict[str, float]:
    out = subprocess.check_output(
        [sys.executable, __file__, "--child", str(folder), "--rows", str(rows)], text=True
    )
    return json.loads(out.strip().splitlines()[-1])


def bench_prepare(folder: Path, paths: list[str], small: int) -> float:
    n = len(paths)
    print(f"\n1. preparing a {n:,}-image job vs encode alone (1600x1200 JPEGs)")
    t0 = time.perf_counter()
    encode_series(pd.Series(paths), provider="offline", progress=False)
    encode_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as out:
        prep_s, nbytes = prepare_job(paths, Path(out))
    print(f"   encode alone: {encode_s:6.1f} s  ({n / encode_s:5.1f} images/s)")
    print(f"   prepare job:  {prep_s:6.1f} s  ({n / prep_s:5.1f} images/s, {nbytes / 1e6:.0f} MB)")
    print(f"   throughput ratio prepare/encode: {encode_s / prep_s:.2f}x  (goal >= 0.9)")
    big = run_child(folder, n)
    little = run_child(folder, small)
    print(
        f"   peak RSS: {big['peak_mb']:.0f} MB at {n:,} rows vs {little['peak_mb']:.0f} MB at "
        f"{small:,}: {big['peak_mb'] / little['peak_mb']:.2f}x  (goal <= 1.2)"
    )
    return prep_s / n


def tiny_png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (i % 256, (i // 256) % 256, 90)).save(buf, "PNG")
    return buf.getvalue()


def bench_mapping(lines: int, per_row_prepare: float, tmp: Path) -> None:
    print(f"\n2. mapping a {lines:,}-line result file back onto the frame")
    df = pd.DataFrame({"image": [tiny_png(i) for i in range(lines)]})
    cache = tmp / "map" / "answers.sqlite"
    with offline.serve(upload_interval=0, pixels=False) as url:
        client = vk.connect("offline", base_url=url)
        t0 = time.perf_counter()
        job = df.vision.submit(PROMPT, client=client, cache=cache, progress=False)
        submit_s = time.perf_counter() - t0
        while True:  # wait for the stand-in without collecting (the collection is timed below)
            shards = job.manifest.shards(job.id)
            statuses = [job.sdk.batches.retrieve(s["batch_id"]).status for s in shards]
            if all(s == "completed" for s in statuses):
                break
            time.sleep(0.5)
        t0 = time.perf_counter()
        job.refresh()
        result = job.result()
        map_s = time.perf_counter() - t0
    assert result.error.isna().all() and len(result) == lines
    print(f"   submit (prepare, write, upload {lines:,} small images): {submit_s:6.1f} s")
    print(f"   collect + result table:                              {map_s:6.1f} s")
    print(f"   mapping / preparing this small-image job: {map_s / submit_s:.1%}  (goal <= 10%)")
    if per_row_prepare:
        real = per_row_prepare * lines
        print(
            f"   mapping / preparing {lines:,} camera-like images ({real:.0f} s at the per-row "
            f"cost of 1.): {map_s / real:.1%}"
        )


def bench_expiry(paths: list[str], tmp: Path) -> None:
    print("\n3. a job in >= 3 files, one batch expiring part-way, submitted again")
    df = pd.DataFrame({"path": paths})
    cache = tmp / "expiry" / "answers.sqlite"
    with offline.serve(upload_interval=0) as url:
        client = vk.connect("offline", base_url=url)
        per_file = max(1, len(df) // 3)
        url.server.inject_batch(expire_fraction=0.5)
        job = df.vision.submit(
            PROMPT, client=client, cache=cache, max_requests_per_file=per_file, progress=False
        )
        job.wait(progress=False)
        first = job.result()
        again = df.vision.submit(
            PROMPT, client=client, cache=cache, max_requests_per_file=per_file, progress=False
        )
        again.wait(progress=False)
        final = again.result()
        stats = url.server.stats
    print(f"   files: {len(job.batches)} first, {len(again.batches)} after resubmitting")
    print(f"   rows without an answer after the expiry: {int(first.error.notna().sum())}")
    print(f"   rows answered in the end: {int(final.error.isna().sum())} of {len(df)}")
    print(
        f"   lines the stand-in answered: {stats.batch_lines_answered} for {len(df)} distinct "
        f"rows; bodies paid twice: {len(stats.paid_twice)}"
    )


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255**2 / mse)


def decode(uri: str) -> Image.Image:
    import base64

    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB")


def bench_compact(paths: list[str]) -> None:
    print(f"\n4. compact=True vs the default encoding, {len(paths)} images (inference.net)")
    provider = get_provider("inference.net")
    rows = []
    for path in paths:
        default = encode_image(path, provider=provider)
        compact = encode_image(path, provider=provider, compact=True)
        a, b = decode(default), decode(compact)
        with Image.open(path) as im:
            ref_a = np.asarray(im.convert("RGB").resize(a.size, Image.Resampling.LANCZOS))
            ref_b = np.asarray(im.convert("RGB").resize(b.size, Image.Resampling.LANCZOS))
        rows.append(
            {
                "default_bytes": len(default),
                "compact_bytes": len(compact),
                "same_tokens": provider.estimate(*a.size) == provider.estimate(*b.size),
                "psnr_default": psnr(np.asarray(a), ref_a),
                "psnr_compact": psnr(np.asarray(b), ref_b),
            }
        )
    t = pd.DataFrame(rows)
    saved = 1 - t.compact_bytes.sum() / t.default_bytes.sum()
    print(
        f"   bytes per image: {t.default_bytes.mean() / 1e3:.0f} KB -> "
        f"{t.compact_bytes.mean() / 1e3:.0f} KB ({saved:.0%} less); same token estimate: "
        f"{bool(t.same_tokens.all())}"
    )
    print(
        f"   PSNR vs a lossless resize: {t.psnr_default.mean():.1f} dB -> "
        f"{t.psnr_compact.mean():.1f} dB ({t.psnr_compact.mean() - t.psnr_default.mean():+.1f})"
    )
    sample = Path(vk.__file__).resolve().parents[1] / "datasets" / "images"
    d = vk.read_images(sample)
    a = d.vision.submit(PROMPT, dry_run=True, progress=False, cache=False)
    b = d.vision.submit(PROMPT, dry_run=True, progress=False, cache=False, compact=True)
    ua, ub = a.attrs["usage"], b.attrs["usage"]
    print(
        f"   the bundled sample set ({len(d)} images): {ua['request_bytes'] / 1e6:.2f} MB -> "
        f"{ub['request_bytes'] / 1e6:.2f} MB of requests, tokens {ua['estimated_tokens']:,} -> "
        f"{ub['estimated_tokens']:,}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--lines", type=int, default=50_000)
    parser.add_argument("--quick", action="store_true", help="200 rows, 2,000 lines")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.quick:
        args.rows, args.lines = 200, 2000
    small = max(20, args.rows // 10)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        folder = tmp / "photos"
        t0 = time.perf_counter()
        paths = make_photos(folder, args.rows)
        print(f"made {len(paths):,} distinct 1600x1200 JPEGs in {time.perf_counter() - t0:.0f} s")
        per_row = bench_prepare(folder, paths, small)
        bench_mapping(args.lines, per_row, tmp)
        bench_expiry(paths[:30], tmp)
        bench_compact(paths[:100])


if __name__ == "__main__":
    main()
