"""visionkit on Dask: ddf.vision against the pandas path, the shared rate limit, the coordinator.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_dask.py            # full (~4 minutes)
    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_dask.py --quick    # a smoke test

Measured side by side in one run (issue 12's goals in brackets):

  (a) 2,000 rows through ``ddf.vision.ask`` on a 2-worker LocalCluster vs ``df.vision.ask`` in
      one process, same concurrency (32), against the stand-in at 200 ms  [<= 1.15x the time]
  (b) ``encode`` of camera-size JPEGs on 2 worker processes vs one  [>= 1.8x]
  (c) four workers against a stand-in limited to 20 requests/s, no limit given  [>= 19 req/s
      sustained, < 5 % refused, every row answered]; and at 4.2/s (inference.net's paid 250 a
      minute) with ``requests_per_minute=250`` given  [< 2 % refused]
  (d) what the coordinator costs per request: round trips to the scheduler (and, for choosing,
      what distributed's own Semaphore, Lock, Variable and an Actor cost), and scheduler CPU per
      request -- the numbers behind the README's paper estimate at 100 workers.
  (e) ``ddf.vision.submit``'s planning pass (plan, encode, write the JSONL files) on 2 workers
      against the pandas pass (``visionkit.batch.shared.prepare``, which encodes in a thread
      pool of its own) on distinct camera-size JPEGs: rows per second each.

The stand-in runs in its own process (``python -m visionkit.offline``, as in bench_ask), so the
scheduler's CPU can be measured alone (in a LocalCluster the scheduler is a thread of this
process). The machine has 2 cores shared with everything else: wall-clock ratios move with the
load, which is printed with each figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_ask import offline_server  # noqa: E402

PROMPT = "Describe this image in one sentence."


def _images(folder: Path, n: int) -> Path:
    """``n`` distinct small JPEGs (what is measured here is requests, not pixels)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        colour = (i % 256, (i // 256) % 256, (i * 7) % 256)
        Image.new("RGB", (64 + i % 64, 48), colour).save(folder / f"im{i:05d}.jpg")
    return folder


def _load() -> str:
    return f"load {os.getloadavg()[0]:.1f}"


def _cluster(n: int):
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None
    )
    return cluster, Client(cluster)


def bench_ask(rows: int, tmp: Path) -> list[tuple]:
    import visionkit as vk
    import visionkit.dask

    folder = _images(tmp / "ask", rows)
    out = []
    with offline_server(latency=0.2) as (url, _):
        client = vk.connect("offline", base_url=url, api_key="offline")
        df = vk.read_images(folder)
        t0 = time.perf_counter()
        local = df.vision.ask(PROMPT, client=client, cache=False, concurrency=32, progress=False)
        t_local = time.perf_counter() - t0
        assert local["error"].isna().all()
        cluster, dask_client = _cluster(2)
        with cluster, dask_client:
            ddf = vk.dask.read_images(folder, partition_size=max(rows // 4, 1)).persist()
            dask_client.run(lambda: __import__("openai"))  # warm the workers' imports
            t0 = time.perf_counter()
            got = ddf.vision.ask(PROMPT, client=client, cache=False, concurrency=32).compute()
            t_dask = time.perf_counter() - t0
        assert got["error"].isna().all() and len(got) == rows
    ideal = rows / 32 * 0.2
    out.append(("(a) df.vision.ask, one process, concurrency 32", f"{t_local:.2f} s", _load()))
    out.append(("(a) ddf.vision.ask, 2 workers, concurrency 32", f"{t_dask:.2f} s", _load()))
    out.append(("(a) Dask / pandas time  [goal <= 1.15x]", f"{t_dask / t_local:.3f}x", ""))
    out.append(("(a) ideal (rows / 32 x 200 ms)", f"{ideal:.2f} s", ""))
    return out


def bench_encode(n: int) -> list[tuple]:
    from bench_images import linked_set, make_camera_jpegs

    import visionkit.dask  # noqa: F401

    paths = linked_set(make_camera_jpegs(), n, "dask")
    df = pd.DataFrame({"path": [str(p) for p in paths]})
    rows = []
    timings = {}
    for workers in (1, 2):
        cluster, dask_client = _cluster(workers)
        with cluster, dask_client:
            import dask.dataframe as dd

            ddf = dd.from_pandas(df, npartitions=max(4, 2 * workers)).persist()
            ddf.head(1).vision.encode(workers=1)  # imports, warm
            dask_client.run(lambda: __import__("visionkit.images.encode"))
            t0 = time.perf_counter()
            uris = ddf.vision.encode(workers=1).compute()
            timings[workers] = time.perf_counter() - t0
            assert uris.notna().all()
        rows.append(
            (
                f"(b) encode {n} camera JPEGs, {workers} worker process(es)",
                f"{timings[workers]:.2f} s ({n / timings[workers]:.1f} img/s)",
                _load(),
            )
        )
    rows.append(("(b) 2 workers vs 1  [goal >= 1.8x]", f"{timings[1] / timings[2]:.2f}x", ""))
    return rows


def bench_rate(rows_20: int, rows_4: int, tmp: Path) -> list[tuple]:
    import visionkit as vk
    import visionkit.dask

    out = []
    cluster, dask_client = _cluster(4)
    with cluster, dask_client:
        for label, rate, rows, rpm in (
            ("20 req/s, no limit given", 20, rows_20, None),
            ("4.2 req/s, requests_per_minute=250", 250 / 60, rows_4, 250),
        ):
            folder = _images(tmp / f"rate{rate:.0f}", rows)
            ddf = vk.dask.read_images(folder, partition_size=max(rows // 8, 1)).persist()
            with offline_server(latency=0.2, rate_limit=rate) as (url, stats):
                client = vk.connect("offline", base_url=url, api_key="offline")
                t0 = time.perf_counter()
                got = ddf.vision.ask(
                    PROMPT, client=client, cache=False, concurrency=16, requests_per_minute=rpm
                ).compute()
                elapsed = time.perf_counter() - t0
            answered = int(got["error"].isna().sum())
            refused = stats["status_counts"].get("429", 0)
            total = stats["chat_requests"]
            span = stats.get("answered_span_s") or elapsed
            out.append(
                (
                    f"(c) 4 workers, {label}",
                    f"{answered / span:.2f} req/s sustained ({answered}/{rows} answered, "
                    f"{refused}/{total} = {100 * refused / max(total, 1):.1f} % refused)",
                    _load(),
                )
            )
    return out


class _Counter:
    n = 0

    def inc(self) -> int:
        self.n += 1
        return self.n

    async def ainc(self) -> int:
        self.n += 1
        return self.n


def _primitives(n: int, actor) -> dict[str, float]:
    """Per-call cost of distributed's primitives and of the coordinator, from a task."""
    from distributed import Lock, Semaphore, Variable

    from visionkit.dask.limiter import link

    out = {}
    for label, held in (
        ("distributed.Semaphore acquire + release", Semaphore(max_leases=4, name="vk-bench")),
        ("distributed.Lock acquire + release", Lock("vk-bench-lock")),
    ):
        t = time.perf_counter()
        for _ in range(n):
            held.acquire()
            held.release()
        out[label] = (time.perf_counter() - t) / n
    var = Variable("vk-bench-var")
    var.set(0)
    t = time.perf_counter()
    for _ in range(n):
        var.get()
    out["distributed.Variable get"] = (time.perf_counter() - t) / n
    t = time.perf_counter()
    for _ in range(n):
        actor.ainc().result()
    out["Actor call (async method)"] = (time.perf_counter() - t) / n
    line = link()

    async def gate() -> tuple[float, float]:
        await line.acall("gate_stats")
        t = time.perf_counter()
        for _ in range(n):
            await line.acall("gate_stats")
        one = (time.perf_counter() - t) / n
        t = time.perf_counter()
        for _ in range(n):
            ticket = await line.acall("gate_acquire", name="vk-bench", owner="bench#1", tokens=0)
            await line.acall("gate_release", name="vk-bench", ticket=ticket, outcome="ok")
        return one, (time.perf_counter() - t) / n

    one, pair = asyncio.run(gate())
    out["coordinator: one round trip (from a run's event loop)"] = one
    out["coordinator: gate acquire + release"] = pair
    return out


def bench_coordinator(n: int, rows: int, tmp: Path) -> list[tuple]:
    import visionkit as vk
    import visionkit.dask
    from visionkit.dask.limiter import ensure_coordinator

    out = []
    cluster, dask_client = _cluster(2)
    with cluster, dask_client:
        ensure_coordinator(dask_client)
        dask_client.sync(dask_client.scheduler.visionkit_gate_open, name="vk-bench", concurrency=4)
        actor = dask_client.submit(_Counter, actor=True).result()
        costs = dask_client.submit(_primitives, n, actor, pure=False).result()
        for name, seconds in costs.items():
            out.append((f"(d) {name}", f"{seconds * 1e3:.3f} ms", _load()))
        # scheduler CPU per request during a real run (latency 0: as many requests as it can)
        folder = _images(tmp / "coord", rows)
        ddf = vk.dask.read_images(folder, partition_size=max(rows // 4, 1)).persist()
        with offline_server(latency=0.0) as (url, _):
            client = vk.connect("offline", base_url=url, api_key="offline")
            cpu0 = dask_client.run_on_scheduler(time.thread_time)
            calls0 = dask_client.run_on_scheduler(_calls)
            t0 = time.perf_counter()
            got = ddf.vision.ask(PROMPT, client=client, cache=False, concurrency=32).compute()
            elapsed = time.perf_counter() - t0
            cpu = dask_client.run_on_scheduler(time.thread_time) - cpu0
            calls = dask_client.run_on_scheduler(_calls) - calls0
        assert got["error"].isna().all()
        out.append(
            (
                "(d) scheduler thread CPU per request, whole run",
                f"{cpu / rows * 1e3:.3f} ms ({calls / rows:.1f} coordinator calls/request, "
                f"{rows / elapsed:.0f} req/s)",
                _load(),
            )
        )
    return out


def bench_submit(n: int, tmp: Path) -> list[tuple]:
    from bench_images import make_camera_jpegs

    import visionkit.dask  # noqa: F401
    from visionkit.batch.shared import BatchAskOptions, prepare
    from visionkit.dask.submit import SubmitTask, _run, merge
    from visionkit.providers import get_provider
    from visionkit.query.plan import make_plan

    # distinct files (so nothing is a repeat): camera JPEGs with a few bytes after the image
    unique = [p.read_bytes() for p in make_camera_jpegs()]
    folder = tmp / "submit"
    folder.mkdir()
    for i in range(n):
        (folder / f"cam{i:05d}.jpg").write_bytes(unique[i % len(unique)] + b"vk%05d" % i)
    df = pd.DataFrame({"path": sorted(str(p) for p in folder.iterdir())})
    limits = get_provider("offline").batch
    assert limits is not None
    options = BatchAskOptions(cache=False, progress=False)
    out = []
    with make_plan(df, PROMPT, options, connect_now=False) as plan:
        t0 = time.perf_counter()
        local = prepare(
            plan,
            limits,
            None,
            tmp / "files-pandas",
            job_id=None,
            first_seq=1,
            progress=False,
            keep_rows=True,
        )
        t_pandas = time.perf_counter() - t0
    assert local.counts["send"] == n
    out.append(
        (
            f"(e) submit's pass, pandas (thread pool), {n} camera JPEGs",
            f"{t_pandas:.2f} s ({n / t_pandas:.1f} rows/s)",
            _load(),
        )
    )
    cluster, dask_client = _cluster(2)
    with cluster, dask_client:
        import dask.dataframe as dd

        ddf = dd.from_pandas(df, npartitions=4).persist()
        for module in ("visionkit.dask.submit", "visionkit.images.encode", "PIL.Image"):
            dask_client.run(__import__, module)  # imports, warm
        task = SubmitTask(PROMPT, options, None, None, None, limits, str(tmp / "staging"))
        with make_plan(ddf._meta, PROMPT, options, connect_now=False) as plan:
            t0 = time.perf_counter()
            parts = _run(dask_client, ddf, task, False)
            prep = merge(parts, limits, plan, tmp / "files-dask", first_seq=1)
            t_dask = time.perf_counter() - t0
    assert prep.counts["send"] == n
    out.append(
        (
            f"(e) ddf.vision.submit's pass, 2 workers, {n} camera JPEGs",
            f"{t_dask:.2f} s ({n / t_dask:.1f} rows/s, {len(prep.shards)} files)",
            _load(),
        )
    )
    out.append(("(e) 2 workers vs pandas' pass", f"{t_pandas / t_dask:.2f}x", ""))
    return out


def _calls(dask_scheduler=None) -> int:
    plugin = dask_scheduler.plugins["visionkit-coordinator"]
    return sum(plugin.calls.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small runs (smoke test)")
    parser.add_argument("only", nargs="*", help="parts to run: ask encode rate coordinator submit")
    args = parser.parse_args()
    q = args.quick
    tmp = Path(tempfile.mkdtemp(prefix="bench-dask-"))
    os.environ.setdefault("VISIONKIT_CACHE_DIR", str(tmp / "cache"))
    parts = {
        "ask": lambda: bench_ask(200 if q else 2000, tmp),
        "encode": lambda: bench_encode(8 if q else 48),
        "rate": lambda: bench_rate(100 if q else 600, 20 if q else 126, tmp),
        "coordinator": lambda: bench_coordinator(50 if q else 500, 200 if q else 1000, tmp),
        "submit": lambda: bench_submit(8 if q else 48, tmp),
    }
    rows: list[tuple] = []
    try:
        for name, run in parts.items():
            if args.only and name not in args.only:
                continue
            got = run()
            for row in got:
                print(f"{row[0]:70s} {row[1]}  {row[2]}", flush=True)
            rows += got
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
