"""What visionkit adds per row at scale (issue 19): stage times and their ratios, side by side.

    python benchmarks/bench_scale.py                         # 10,000 rows (a few minutes)
    python benchmarks/bench_scale.py --rows 100000           # or --rows 1000000
    python benchmarks/bench_scale.py --against /work/main    # the same stages on another
                                                             # checkout, interleaved: before/after
    python benchmarks/bench_scale.py --stages encode,dry_run # only some stages (and their ratios)
    python benchmarks/bench_scale.py --list                  # the stages and ratios

The images are tiny distinct PNGs (24x16), so what visionkit adds per row shows rather than
the pixels' cost; the camera stages use the photos in ``datasets/images/`` (copied to distinct
files) to check that nothing got worse where encoding dominates. The provider is the strict stand-in
(``python -m visionkit.offline`` in its own process, every rule enforced, ~1 ms per answer).

Each stage runs in a fresh Python process (so imports, caches and peak memory are its own) and
times only its own work; the figures of one run are measured side by side under the same load,
printed with the load average. With ``--against``, every stage runs on both checkouts in turn
(the other one first, then this one), each checkout with its own answer cache.

Adding a stage (batch jobs, sources ...): write one function taking the ``Context`` and
returning a ``Figure`` (seconds, plus anything else worth printing), decorate it with
``@stage("name", "what it measures")``, and add a ``Ratio`` to ``RATIOS`` if it has a goal.
Stages run in registry order; a stage that needs another's state (``ask_cached`` needs
``ask``'s answers) relies on running after it, in the same checkout's work folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
PROMPT = "Describe this image in one sentence."
LATENCY = 0.001  # seconds the stand-in takes per answer
PER_FOLDER = 1000  # images per sub-folder (a million files in one folder is slow to list)
CAMERA_COPIES = 24  # each JPEG of datasets/images/ copied this many times (distinct bytes)
DASK_PARTITION_ROWS = 25_000  # rows a partition of the Dask stage (two make one full file)


# -- the registry ---------------------------------------------------------------------------


@dataclass
class Context:
    """What a stage gets: where the images are, its checkout's work folder, the stand-in."""

    rows: int
    images: str  # folder of the tiny PNGs (sub-folders of PER_FOLDER)
    camera: str  # folder of camera JPEGs (copies of datasets/images/)
    work: str  # this checkout's own folder: its answer cache, anything a stage leaves behind
    url: str  # the stand-in's base URL
    tree: str  # the checkout whose visionkit is imported

    @property
    def cache(self) -> Path:
        return Path(self.work) / "answers.sqlite"

    def paths(self, rows: int | None = None) -> list[str]:
        """The tiny PNGs, in name order (the first ``rows``: only their folders are listed)."""
        out: list[str] = []
        for folder in sorted(p for p in Path(self.images).iterdir() if p.is_dir()):
            if rows is not None and len(out) >= rows:
                break
            out.extend(sorted(os.path.join(folder, n) for n in os.listdir(folder)))
        return out[:rows] if rows is not None else out

    def camera_paths(self) -> list[str]:
        return sorted(str(p) for p in Path(self.camera).glob("*.jpg"))

    def client(self) -> Any:
        import visionkit as vk

        return vk.connect("offline", base_url=self.url, api_key="offline")


@dataclass
class Figure:
    """One stage's result: ``seconds`` of its own work, and anything else it measured."""

    seconds: float
    rows: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    cpu: float | None = None  # CPU seconds of the process (all threads) over the same work


class Clock:
    """``with Clock() as c: ...`` then ``c.seconds`` (wall) and ``c.cpu`` (process CPU)."""

    def __enter__(self) -> Clock:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu

    def figure(self, rows: int, **extra: Any) -> Figure:
        return Figure(self.seconds, rows, extra, self.cpu)


@dataclass
class Stage:
    name: str
    doc: str
    fn: Callable[[Context], Figure]


@dataclass
class Ratio:
    """``numerator / denominator`` of two stages' seconds (same checkout), with its goal."""

    name: str
    numerator: str
    denominator: str
    goal: float | None = None  # at most this; None: shown for comparison


STAGES: dict[str, Stage] = {}


def stage(name: str, doc: str) -> Callable[[Callable[[Context], Figure]], Callable[..., Figure]]:
    """Register a stage (runs in registry order)."""

    def register(fn: Callable[[Context], Figure]) -> Callable[[Context], Figure]:
        STAGES[name] = Stage(name, doc, fn)
        return fn

    return register


RATIOS: list[Ratio] = [
    Ratio("ask(dry_run) / encode", "dry_run", "encode", 1.2),
    Ratio("submit's planning / encode", "submit_plan", "encode", 1.2),
    Ratio("submit (plan, write, upload) / encode", "submit", "encode"),
    Ratio("ask, all cached / read+hash", "ask_cached", "floor", 2.0),
    Ratio("ask / encode", "ask", "encode"),
    Ratio("camera JPEGs: ask(dry_run) / encode", "camera_dry_run", "camera_encode", 1.2),
]


# -- the stages -----------------------------------------------------------------------------


def _frame(ctx: Context, rows: int | None = None) -> Any:
    import pandas as pd

    import visionkit  # noqa: F401  (registers df.vision)

    return pd.DataFrame({"path": ctx.paths(rows)})


def _check(result: Any, what: str) -> None:
    errors = result["error"].dropna()
    if len(errors):
        raise RuntimeError(f"{what}: {len(errors)} rows failed, e.g. {errors.iloc[0]}")


@stage("read_images", "vk.read_images(folder): headers of every file")
def read_images(ctx: Context) -> Figure:
    import visionkit as vk

    with Clock() as clock:
        df = vk.read_images(ctx.images)
    _check(df, "read_images")
    return clock.figure(len(df))


@stage("encode", "df.vision.encode(): every image encoded, nothing else")
def encode(ctx: Context) -> Figure:
    df = _frame(ctx)
    with Clock() as clock:
        uris = df.vision.encode("offline", progress=False)
    assert uris.notna().all()
    return clock.figure(len(df))


@stage("dry_run", "ask(dry_run=True): read, hash, key, cache look-up, encode, check")
def dry_run(ctx: Context) -> Figure:
    df = _frame(ctx)
    client = ctx.client()
    with Clock() as clock:
        result = df.vision.ask(PROMPT, client=client, cache=ctx.cache, dry_run=True, progress=False)
    _check(result, "dry run")
    return clock.figure(len(df))


@stage("ask", "ask against the stand-in, nothing cached (fills this checkout's cache)")
def ask(ctx: Context) -> Figure:
    df = _frame(ctx)
    client = ctx.client()
    with Clock() as clock:
        result = df.vision.ask(PROMPT, client=client, cache=ctx.cache, progress=False)
    _check(result, "ask")
    usage = result.attrs["usage"]
    return clock.figure(len(df), requests=usage["requests"], hits=usage["cache_hits"])


@stage("ask_cached", "ask again: every row in the cache")
def ask_cached(ctx: Context) -> Figure:
    df = _frame(ctx)
    client = ctx.client()
    with Clock() as clock:
        result = df.vision.ask(PROMPT, client=client, cache=ctx.cache, progress=False)
    _check(result, "cached ask")
    usage = result.attrs["usage"]
    if usage["cache_hits"] != len(df):
        raise RuntimeError(f"cached ask: {usage['cache_hits']} of {len(df)} rows were hits")
    return clock.figure(len(df))


@stage("floor", "read and sha256 every file (what a cached re-run cannot go below)")
def floor(ctx: Context) -> Figure:
    paths = ctx.paths()

    def digest(path: str) -> str:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()

    with Clock() as clock, ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        digests = list(pool.map(digest, paths, chunksize=256))
    assert len(set(digests)) == len(paths)
    return clock.figure(len(paths))


def _ask_rss(ctx: Context, rows: int) -> Figure:
    import visionkit as vk

    df = _frame(ctx, rows)
    client = ctx.client()
    # Warm up on one other image: imports, the SDK, the HTTP stack are not per row.
    with tempfile.TemporaryDirectory() as tmp:
        one = Path(tmp) / "one.png"
        shutil.copy(sorted((ROOT / "datasets" / "images").glob("*.jpg"))[0], one)
        vk.ask(
            __import__("pandas").DataFrame({"path": [str(one)]}),
            PROMPT,
            client=client,
            cache=False,
            progress=False,
        )
        _reset_peak()
        before = _rss_now()
        cache = Path(tmp) / "rss.sqlite"
        with Clock() as clock:
            result = df.vision.ask(PROMPT, client=client, cache=cache, progress=False)
        peak = _rss_peak()
    _check(result, "ask (rss)")
    above = peak - before
    return clock.figure(
        len(df),
        rss_before_mb=round(before / 1e6, 1),
        rss_peak_mb=round(peak / 1e6, 1),
        above=above,
        bytes_per_row=round(above / len(df)),
    )


@stage("rss_tenth", "peak RSS of ask over the first tenth of the rows (the fixed part)")
def rss_tenth(ctx: Context) -> Figure:
    return _ask_rss(ctx, max(1, ctx.rows // 10))


@stage("rss", "peak RSS of ask over every row (fresh cache) above the input frame")
def rss(ctx: Context) -> Figure:
    return _ask_rss(ctx, ctx.rows)


@stage("camera_encode", "encode on camera JPEGs (datasets/images/, distinct copies)")
def camera_encode(ctx: Context) -> Figure:
    import pandas as pd

    import visionkit  # noqa: F401

    df = pd.DataFrame({"path": ctx.camera_paths()})
    with Clock() as clock:
        uris = df.vision.encode("offline", progress=False)
    assert uris.notna().all()
    return clock.figure(len(df))


@stage("camera_dry_run", "ask(dry_run=True) on the same camera JPEGs")
def camera_dry_run(ctx: Context) -> Figure:
    import pandas as pd

    import visionkit  # noqa: F401

    df = pd.DataFrame({"path": ctx.camera_paths()})
    client = ctx.client()
    with Clock() as clock:
        result = df.vision.ask(
            PROMPT,
            client=client,
            cache=Path(ctx.work) / "camera.sqlite",
            dry_run=True,
            progress=False,
        )
    _check(result, "camera dry run")
    return clock.figure(len(df))


# -- batch jobs (submit, wait + collect, the manifest, memory) ---------------------------------


def _batch_job_file(ctx: Context) -> Path:
    return Path(ctx.work) / "batch-job.txt"


def _quiet(client: Any) -> None:
    """Wait until the stand-in runs no batch (one stage's batches would otherwise run on the
    stand-in's CPU while the next stage, or the other checkout's, is timed)."""
    sdk = client.batch_sdk()
    busy = ("validating", "in_progress", "finalizing", "cancelling")
    while any(b.status in busy for b in sdk.batches.list(limit=100)):
        time.sleep(0.5)


def _submit(ctx: Context, cache: Path) -> tuple[Any, float]:
    df = _frame(ctx)
    client = ctx.client()
    _quiet(client)
    start = time.perf_counter()
    job = df.vision.submit(PROMPT, client=client, cache=cache, upload_interval=0, progress=False)
    return job, time.perf_counter() - start


@stage("submit_plan", "submit's planning pass alone (fresh cache): nothing written or uploaded")
def submit_plan(ctx: Context) -> Figure:
    from visionkit.batch.shared import BatchAskOptions, prepare
    from visionkit.query.plan import make_plan

    df = _frame(ctx)
    options = BatchAskOptions(
        client=ctx.client(), cache=Path(ctx.work) / "plan.sqlite", progress=False
    )
    with make_plan(df, PROMPT, options) as plan, Clock() as clock:
        limits = plan.provider.batch
        assert limits is not None
        prep = prepare(
            plan, limits, None, None, job_id=None, first_seq=1, progress=False, keep_rows=False
        )
    if prep.counts["send"] != len(df):
        raise RuntimeError(f"submit's plan: {prep.counts}")
    return clock.figure(len(df))


@stage("submit", "df.vision.submit: plan, write the files, upload, create (fresh cache)")
def submit(ctx: Context) -> Figure:
    cache = Path(ctx.work) / "batch.sqlite"
    job, seconds = _submit(ctx, cache)
    _batch_job_file(ctx).write_text(job.id)
    usage = job.batches
    return Figure(seconds, ctx.rows, {"files": len(usage), "lines": int(usage.lines.sum())})


@stage("collect", "job.wait() once the stand-in has finished: download, check, cache (lines/s)")
def collect(ctx: Context) -> Figure:
    import visionkit as vk

    client = ctx.client()
    cache = Path(ctx.work) / "batch.sqlite"
    job = vk.BatchJob.load(_batch_job_file(ctx).read_text(), client=client, cache=cache)
    sdk = client.batch_sdk()
    for batch_id in job.batches.batch_id:  # the server's own work is not the client's time
        while sdk.batches.retrieve(batch_id).status not in ("completed", "expired", "failed"):
            time.sleep(0.2)
    _quiet(client)
    cpu = time.process_time()
    start = time.perf_counter()
    job.wait(progress=False)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu
    result = job.result()
    _check(result, "batch result")
    return Figure(
        seconds,
        len(result),
        {"lines_per_s": round(len(result) / seconds), "cpu_lines_per_s": round(len(result) / cpu)},
    )


@stage("manifest", "the batch manifest's size after submit and collect (bytes a row)")
def manifest(ctx: Context) -> Figure:
    import sqlite3

    path = Path(ctx.work) / "batch.batches.sqlite"
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    size = path.stat().st_size
    return Figure(0.0, ctx.rows, {"bytes": size, "bytes_per_row": round(size / ctx.rows)})


def _submit_rss(ctx: Context, rows: int) -> Figure:
    df = _frame(ctx, rows)
    client = ctx.client()
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "rss.sqlite"
        _warm_submit(client, Path(tmp))
        _quiet(client)
        _reset_peak()
        before = _rss_now()
        start = time.perf_counter()
        job = df.vision.submit(
            PROMPT, client=client, cache=cache, upload_interval=0, progress=False
        )
        job.wait(progress=False)
        seconds = time.perf_counter() - start
        peak = _rss_peak()
        _check(job.result(), "batch result (rss)")
    above = peak - before
    return Figure(
        seconds,
        len(df),
        {
            "rss_before_mb": round(before / 1e6, 1),
            "rss_peak_mb": round(peak / 1e6, 1),
            "above": above,
            "bytes_per_row": round(above / len(df)),
        },
    )


@stage("submit_rss_tenth", "peak RSS of submit and wait over the first tenth of the rows")
def submit_rss_tenth(ctx: Context) -> Figure:
    return _submit_rss(ctx, max(1, ctx.rows // 10))


@stage("submit_rss", "peak RSS of submit and wait over every row (fresh cache) above the frame")
def submit_rss(ctx: Context) -> Figure:
    return _submit_rss(ctx, ctx.rows)


@stage(
    "dask_submit",
    "ddf.vision.submit on a 2-worker LocalCluster (fresh cache): the workers' passes, the "
    "first upload, the call; then collecting, the manifest and this process's peak RSS",
)
def dask_submit(ctx: Context) -> Figure:
    import dask.dataframe as dd
    from distributed import Client, LocalCluster, get_task_stream

    import visionkit.dask  # noqa: F401  (registers ddf.vision)

    df = _frame(ctx)
    client = ctx.client()
    cache = Path(ctx.work) / "dask.sqlite"
    parts = max(2, ctx.rows // DASK_PARTITION_ROWS)
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as dask_client,
        tempfile.TemporaryDirectory() as tmp,
    ):
        _warm_submit(client, Path(tmp), dask=True)  # imports here and on the workers
        ddf = dd.from_pandas(df, npartitions=parts)
        sdk = client.batch_sdk()
        _quiet(client)
        _reset_peak()
        before = _rss_now()
        begun = time.time()
        with Clock() as clock, get_task_stream() as tasks:
            job = ddf.vision.submit(
                PROMPT, client=client, cache=cache, upload_interval=0, progress=False
            )
        peak_submit = _rss_peak()
        passes = [
            (span["start"], span["stop"])
            for task in tasks.data
            if "prepare_partition" in str(task["key"])
            for span in task["startstops"]
            if span["action"] == "compute"
        ]
        workers_peak = dask_client.run(lambda: _rss_peak())
    ids = set(job.batches.file_id)
    uploaded = [f.created_at for f in sdk.files.list(purpose="batch") if f.id in ids]
    for batch_id in job.batches.batch_id:  # the server's own work is not the client's time
        while sdk.batches.retrieve(batch_id).status not in ("completed", "expired", "failed"):
            time.sleep(0.5)
    start = time.perf_counter()
    job.wait(progress=False)
    collect_s = time.perf_counter() - start
    peak = _rss_peak()
    result = job.result()
    _check(result, "dask batch result")
    path = cache.with_name(cache.stem + ".batches.sqlite")
    db = __import__("sqlite3").connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return clock.figure(
        len(df),
        partitions=parts,
        files=len(ids),
        first_pass_done_s=round(min(stop for _, stop in passes) - begun, 1),
        first_upload_s=round(min(uploaded) - begun, 1),  # (the stand-in's whole seconds)
        last_pass_done_s=round(max(stop for _, stop in passes) - begun, 1),
        collect_s=round(collect_s, 2),
        lines_per_s=round(len(result) / collect_s),
        manifest_bytes_per_row=round(path.stat().st_size / len(df)),
        rss_submit_bytes_per_row=round((peak_submit - before) / len(df)),
        rss_bytes_per_row=round((peak - before) / len(df)),
        worker_peak_mb=[round(v / 1e6) for v in workers_peak.values()],
    )


def _warm_submit(client: Any, tmp: Path, *, dask: bool = False) -> None:
    """One tiny job first: imports, the SDK, SQLite and the HTTP stack are not per row."""
    import pandas as pd

    one = tmp / "one.png"
    shutil.copy(sorted((ROOT / "datasets" / "images").glob("*.jpg"))[0], one)
    frame = pd.DataFrame({"path": [str(one)]})
    if dask:
        import dask.dataframe as dd

        frame = dd.from_pandas(frame, npartitions=1)
    job = frame.vision.submit(
        PROMPT, client=client, cache=tmp / "warm.sqlite", upload_interval=0, progress=False
    )
    job.wait(progress=False)


def _rss_now() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> None:
    """Reset the kernel's peak-RSS mark (Linux: 5 > /proc/self/clear_refs), after handing the
    heap's free memory back (glibc's malloc_trim): memory freed before the measured call (the
    file listing's garbage) would otherwise be reused by it unseen, and its growth hidden."""
    import ctypes
    import gc

    gc.collect()
    with suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _rss_peak() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# -- the images -----------------------------------------------------------------------------


def make_images(folder: Path, n: int) -> None:
    """``n`` distinct 24x16 PNGs in sub-folders of ``PER_FOLDER``; kept for the next run."""
    done = folder / ".complete"
    if done.exists() and done.read_text() == str(n):
        return
    import io

    import numpy as np
    from PIL import Image

    if folder.exists():
        shutil.rmtree(folder)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    start = time.perf_counter()
    for i in range(n):
        sub = folder / f"{i // PER_FOLDER:04d}"
        if i % PER_FOLDER == 0:
            sub.mkdir(parents=True)
        pixels = base.copy()
        pixels[0, :4, :] = np.frombuffer(i.to_bytes(12, "little"), dtype=np.uint8).reshape(4, 3)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "PNG")
        (sub / f"img{i:07d}.png").write_bytes(buf.getvalue())
        if i and i % 100_000 == 0:
            print(f"  made {i:,} images in {time.perf_counter() - start:.0f} s", flush=True)
    done.write_text(str(n))


def make_camera(folder: Path) -> None:
    """Each JPEG of datasets/images/ copied ``CAMERA_COPIES`` times, made distinct by bytes after
    the end-of-image marker (decoders ignore them; the content hash does not)."""
    if (folder / ".complete").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    for src in sorted((ROOT / "datasets" / "images").glob("*.jpg")):
        data = src.read_bytes()
        for k in range(CAMERA_COPIES):
            (folder / f"{src.stem}-{k}.jpg").write_bytes(data + b"\0" * (k + 1))
    (folder / ".complete").write_text("ok")


# -- running --------------------------------------------------------------------------------


@contextmanager
def stand_in(tree: Path):
    """The stand-in in its own process (``python -m visionkit.offline``); yields its URL."""
    cmd = [sys.executable, "-m", "visionkit.offline", "--port", "0", "--latency", str(LATENCY)]
    cmd += ["--upload-interval", "0"]  # the batch stages upload files back to back
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        yield line.split(" at ", 1)[1].split(" ", 1)[0]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)


def run_stage(name: str, ctx: Context) -> Figure:
    """Run one stage in a fresh process importing ``ctx.tree``'s visionkit."""
    env = {**os.environ, "PYTHONPATH": ctx.tree}
    cmd = [sys.executable, str(HERE), "--child", name, json.dumps(asdict(ctx))]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"stage {name} on {ctx.tree} failed:\n{out.stderr[-3000:]}")
    found = json.loads(out.stdout.strip().splitlines()[-1])
    return Figure(**found)


def child(name: str, context: str) -> None:
    import logging
    import warnings

    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    ctx = Context(**json.loads(context))
    _warm_up()
    figure = STAGES[name].fn(ctx)
    print(json.dumps(asdict(figure)))


def _warm_up() -> None:
    """Import what every stage uses, so no stage's time includes imports."""
    import openai  # noqa: F401
    import pandas  # noqa: F401
    from PIL import Image, PngImagePlugin  # noqa: F401

    import visionkit as vk

    for name in ("read_images", "ask", "encode_image"):
        getattr(vk, name)
    import visionkit.images.encode
    import visionkit.query.ask  # noqa: F401


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def describe(figure: Figure) -> str:
    rate = f", {figure.rows / figure.seconds:,.0f} rows/s" if figure.seconds and figure.rows else ""
    extra = "".join(f", {k} {v}" for k, v in figure.extra.items())
    cpu = f" (cpu {figure.cpu:.2f} s)" if figure.cpu is not None else ""
    return f"{figure.seconds:8.2f} s{cpu}{rate}{extra}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000, help="tiny images (default 10,000)")
    parser.add_argument("--stages", default="", help="comma-separated stage names (default all)")
    parser.add_argument(
        "--against", action="append", default=[], help="another checkout to run side by side"
    )
    parser.add_argument(
        "--images",
        default=None,
        help="where the images are kept between runs (default: $TMPDIR/visionkit-bench-scale)",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds (fresh caches each); the best is kept"
    )
    parser.add_argument("--list", action="store_true", help="list the stages and ratios")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    if args.list:
        for s in STAGES.values():
            print(f"{s.name:16} {s.doc}")
        for r in RATIOS:
            print(f"ratio: {r.name} (goal {r.goal or '-'})")
        return 0
    names = [n for n in args.stages.split(",") if n] or list(STAGES)
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        parser.error(f"unknown stage(s) {unknown}; known: {list(STAGES)}")
    names = [n for n in STAGES if n in names]  # registry order
    trees = [Path(t).resolve() for t in args.against] + [ROOT]
    store = Path(args.images or Path(tempfile.gettempdir()) / "visionkit-bench-scale")
    print(f"bench_scale: {args.rows:,} tiny PNGs (24x16), {os.cpu_count()} cores, load {load()}")
    start = time.perf_counter()
    make_images(store / f"png-{args.rows}", args.rows)
    make_camera(store / "camera")
    print(f"images ready in {time.perf_counter() - start:.0f} s")
    results: dict[tuple[str, str], Figure] = {}
    with tempfile.TemporaryDirectory() as tmp, stand_in(ROOT) as url:
        for round_ in range(args.repeat):
            contexts = {}
            for i, tree in enumerate(trees):
                work = Path(tmp) / f"round{round_}-tree{i}"
                work.mkdir()
                contexts[str(tree)] = Context(
                    rows=args.rows,
                    images=str(store / f"png-{args.rows}"),
                    camera=str(store / "camera"),
                    work=str(work),
                    url=url,
                    tree=str(tree),
                )
            for name in names:
                for tree in trees:
                    figure = run_stage(name, contexts[str(tree)])
                    best = results.get((name, str(tree)))
                    if best is None or figure.seconds < best.seconds:
                        results[(name, str(tree))] = figure
                    label = f"{name} [{tree.name}]" if len(trees) > 1 else name
                    print(f"{label:34} {describe(figure)}  (load {load()})", flush=True)
    print()
    for ratio in RATIOS:
        if ratio.numerator not in names or ratio.denominator not in names:
            continue
        cells = []
        for tree in trees:
            top, bottom = (
                results[(ratio.numerator, str(tree))],
                results[(ratio.denominator, str(tree))],
            )
            cpu = f" (cpu {top.cpu / bottom.cpu:.2f}x)" if top.cpu and bottom.cpu else ""
            cells.append(
                f"{top.seconds / bottom.seconds:5.2f}x{cpu}"
                + (f" [{tree.name}]" if len(trees) > 1 else "")
            )
        goal = ""
        if ratio.goal is not None:
            last = results[(ratio.numerator, str(ROOT))].seconds
            ok = last / results[(ratio.denominator, str(ROOT))].seconds <= ratio.goal
            goal = f"  goal <= {ratio.goal}x: {'ok' if ok else 'MISSED'}"
        print(f"{ratio.name:40} {'  '.join(cells)}{goal}")
    goals = [  # (stage, figure, what, goal, at most?)
        ("rss", "bytes_per_row", "memory above the input frame (ask)", 1024, True),
        ("submit_rss", "bytes_per_row", "memory above the input frame (batch)", 1024, True),
        ("manifest", "bytes_per_row", "batch manifest, bytes a row", 150, True),
        ("collect", "lines_per_s", "collecting results, lines a second", 10_000, False),
    ]
    slopes = [  # memory a row: what the rows add beyond the fixed part (SQLite's page caches,
        # Python's arenas, the allocator), between a tenth of the rows and all of them
        ("rss", "rss_tenth", "memory a row (ask, tenth to all)"),
        ("submit_rss", "submit_rss_tenth", "memory a row (batch, tenth to all)"),
    ]
    for full, tenth, what in slopes:
        if full in names and tenth in names:
            for tree in trees:
                big, small = results[(full, str(tree))], results[(tenth, str(tree))]
                slope = (big.extra["above"] - small.extra["above"]) / max(big.rows - small.rows, 1)
                results[(f"{full}_slope", str(tree))] = Figure(
                    0.0, big.rows, {"slope": round(slope)}
                )
            goals.append((f"{full}_slope", "slope", what, 1024, True))
            names.append(f"{full}_slope")
    for name, key, what, goal, at_most in goals:
        if name not in names:
            continue
        for tree in trees:
            value = results[(name, str(tree))].extra[key]
            met = value <= goal if at_most else value >= goal
            suffix = f" [{tree.name}]" if len(trees) > 1 else ""
            print(
                f"{what + suffix:40} {value:,}  goal {'<=' if at_most else '>='} {goal:,}: "
                f"{'ok' if met else 'MISSED'}"
            )
    print(f"\nload at the end {load()}; {time.perf_counter() - start:.0f} s in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
