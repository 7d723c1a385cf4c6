"""Remote sources: header-only reads of a bucket vs downloading it; encoding from S3 vs disk.

    python benchmarks/bench_remote.py            # 2,000 objects; 10,000 for the memory figure
    python benchmarks/bench_remote.py --quick    # 200 and 1,000

A real S3 API (moto's server) runs in a separate process on 127.0.0.1, so its CPU is not
counted against the client's GIL. Figures, measured side by side in one run:

1. ``read_images("s3://bucket/photos/")`` over N camera-like JPEGs (1600x1200, a phone-sized
   EXIF block) vs downloading every object (same reader, same concurrency) and parsing the
   header from the download: bytes transferred and time, and their ratios.
2. How that time scales with the number of concurrent reads (``concurrency=``).
3. ``encode`` of the same images from S3 vs from local files (same default workers).
4. Peak memory above baseline while reading the header table of M small remote objects (in a
   fresh child process, so earlier phases do not count).

On 127.0.0.1 moving bytes costs almost nothing and moto spends several milliseconds of Python
per request whatever its size (it reads the whole object even for a ranged GET), so figure 1's
time ratio says little about a real network. Figure 1b repeats it through a proxy (its own
process) that limits the server's replies to 100 Mbit/s, a laptop's link to a bucket.

Nothing is asserted (machines differ): the issue's goals are printed beside the figures.
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
OPTIONS = {"key": "bench", "secret": "bench"}


def camera_jpeg(seed: int, size=(1600, 1200)) -> bytes:
    """A photo-like JPEG with an EXIF block the size a phone writes (about 12 KB)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (size[1] // 40, size[0] // 40, 3), dtype=np.uint8)
    im = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
    grain = rng.integers(-14, 15, (size[1], size[0], 3), dtype=np.int16)
    im = Image.fromarray(np.clip(np.asarray(im, np.int16) + grain, 0, 255).astype(np.uint8))
    exif = im.getexif()
    exif[0x0112] = 1 + seed % 8
    exif[0x010F] = "BenchCam"
    exif[0x9286] = "x" * 12_000  # UserComment-sized maker data
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=88, exif=exif)
    return buf.getvalue()


def small_jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=80)
    return buf.getvalue()


def start_moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, endpoint
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto server did not start")


def upload(endpoint: str, bucket: str, objects: dict[str, bytes]) -> None:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=OPTIONS["key"],
        aws_secret_access_key=OPTIONS["secret"],
    )
    client.create_bucket(Bucket=bucket)
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda kv: client.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), objects.items()
            )
        )


class Counter:
    """Counts the object bytes every remote read returns (a spy on remote.fetch)."""

    def __init__(self) -> None:
        import visionkit.images.remote as remote

        self.total = 0
        self.requests = 0
        real = remote.fetch

        def counted(*args, **kwargs):
            data = real(*args, **kwargs)
            self.total += len(data)
            self.requests += 1
            return data

        remote.fetch = counted

    def reset(self) -> None:
        self.total = self.requests = 0


def clock(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def throttle_proxy(listen: int, target: int, mbit: float) -> None:
    """Forward 127.0.0.1:listen to 127.0.0.1:target; replies share ``mbit`` Mbit/s in all."""
    import asyncio

    rate = mbit * 1e6 / 8  # bytes per second, shared by every connection
    state = {"next": 0.0}

    async def pipe(reader, writer, limited: bool) -> None:
        loop = asyncio.get_running_loop()
        try:
            while data := await reader.read(16384):
                if limited:
                    now = loop.time()
                    start = max(now, state["next"])
                    state["next"] = start + len(data) / rate
                    if state["next"] > now:
                        await asyncio.sleep(state["next"] - now)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def handle(client_r, client_w) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(pipe(client_r, server_w, False), pipe(server_r, client_w, True))

    async def run() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", listen)
        async with server:
            await server.serve_forever()

    asyncio.run(run())


def start_proxy(target_endpoint: str, mbit: float) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    target = target_endpoint.rsplit(":", 1)[1]
    proc = subprocess.Popen([sys.executable, __file__, "--proxy", str(port), target, str(mbit)])
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("proxy did not start")


def download_then_parse(urls: list[str], concurrency: int) -> int:
    """The naive way: download each object whole, then read its header from the bytes."""
    from visionkit.images.cells import read_bytes

    def one(url: str) -> tuple[int, int]:
        data = read_bytes(url)
        with Image.open(io.BytesIO(data)) as im:
            return im.size

    with ThreadPoolExecutor(concurrency) as pool:
        return len(list(pool.map(one, urls)))


def memory_child(endpoint: str, bucket: str) -> None:
    """Run in a fresh process: RSS before and peak after reading the header table."""
    import visionkit as vk

    options = OPTIONS | {"endpoint_url": endpoint}
    vk.read_images(f"s3://{bucket}/small/0.jpg", storage_options=options)  # warm imports
    base = _rss_mb()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # resets the peak (VmHWM) to now: import-time peaks do not count
    start = time.perf_counter()
    df = vk.read_images(f"s3://{bucket}/small/", storage_options=options)
    took = time.perf_counter() - start
    peak = _rss_mb("VmHWM:")
    print(f"{len(df)} {df.error.notna().sum()} {base:.1f} {peak:.1f} {_rss_mb():.1f} {took:.2f}")


def _rss_mb(field: str = "VmRSS:") -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--proxy", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.proxy:
        throttle_proxy(int(args.proxy[0]), int(args.proxy[1]), float(args.proxy[2]))
        return
    if args.memory_child:
        memory_child(*args.memory_child)
        return
    n, m = (200, 1000) if args.quick else (2000, 10_000)
    n_encode = 60 if args.quick else 200

    import visionkit as vk
    from visionkit.images.encode import encode_series

    proc, endpoint = start_moto()
    try:
        options = OPTIONS | {"endpoint_url": endpoint}
        bases = [camera_jpeg(i) for i in range(16)]
        objects = {f"photos/{i:05d}.jpg": bases[i % len(bases)] for i in range(n)}
        smalls = [small_jpeg(i) for i in range(16)]
        small = {f"small/{i}.jpg": smalls[i % len(smalls)] for i in range(m)}
        t_up, _ = clock(lambda: upload(endpoint, "bench", objects | small))
        total = sum(map(len, objects.values()))
        print(
            f"moto server in its own process; {n} objects of {total / n / 1024:.0f} KB on "
            f"average ({total / 1e6:.0f} MB) and {m} of {len(smalls[0]) / 1024:.0f} KB "
            f"uploaded in {t_up:.1f} s"
        )

        counter = Counter()
        source = "s3://bench/photos/"
        vk.read_images(source, storage_options=options)  # warm: imports, connections
        counter.reset()
        t_heads, df = clock(lambda: vk.read_images(source, storage_options=options))
        head_bytes, head_requests = counter.total, counter.requests
        assert df.error.isna().all() and len(df) == n, df.error.value_counts()
        urls = df.path.tolist()
        counter.reset()
        t_full, _ = clock(lambda: download_then_parse(urls, 32))
        full_bytes = counter.total
        print(f"\n1. read_images over {n} objects (concurrency 32):")
        print(
            f"   headers only : {t_heads:6.2f} s, {head_bytes / 1e6:8.1f} MB in "
            f"{head_requests} ranged GETs"
        )
        print(f"   download all : {t_full:6.2f} s, {full_bytes / 1e6:8.1f} MB")
        print(
            f"   ratio        : {full_bytes / head_bytes:.1f}x fewer bytes (goal >= 20x), "
            f"{t_full / t_heads:.1f}x less time (goal >= 10x)"
        )

        n_slow = min(n, 300)
        proxy, slow_endpoint = start_proxy(endpoint, 100)
        try:
            slow = OPTIONS | {"endpoint_url": slow_endpoint}
            slow_source = [u.replace("s3://bench/", "s3://bench-slow/") for u in urls[:n_slow]]
            from visionkit.images.remote import set_storage_options

            set_storage_options("s3://bench-slow/", slow)
            keys = [u.removeprefix("s3://bench-slow/") for u in slow_source]
            upload(endpoint, "bench-slow", {key: objects[key] for key in keys})
            counter.reset()
            t_heads_slow, _ = clock(lambda: vk.read_images("s3://bench-slow/photos/"))
            heads_slow = counter.total
            counter.reset()
            t_full_slow, _ = clock(lambda: download_then_parse(slow_source, 32))
            full_slow = counter.total
        finally:
            proxy.terminate()
            proxy.wait(10)
        print(f"\n1b. the same over a 100 Mbit/s link ({n_slow} objects):")
        print(f"   headers only : {t_heads_slow:6.2f} s, {heads_slow / 1e6:8.1f} MB")
        print(f"   download all : {t_full_slow:6.2f} s, {full_slow / 1e6:8.1f} MB")
        print(
            f"   ratio        : {full_slow / heads_slow:.1f}x fewer bytes, "
            f"{t_full_slow / t_heads_slow:.1f}x less time (goal >= 10x)"
        )

        print("\n2. read_images time by concurrency:")
        for c in (1, 4, 8, 16, 32, 64):
            t, _ = clock(lambda c=c: vk.read_images(source, storage_options=options, concurrency=c))
            print(f"   concurrency {c:3d}: {t:6.2f} s  ({n / t:6.0f} objects/s)")

        with tempfile.TemporaryDirectory() as tmp:
            paths = []
            for i, url in enumerate(urls[:n_encode]):
                path = os.path.join(tmp, f"{i:05d}.jpg")
                Path(path).write_bytes(objects[url.removeprefix("s3://bench/")])
                paths.append(path)
            import pandas as pd

            encode_series(pd.Series(paths[:4]), progress=False)  # warm
            t_local, a = clock(lambda: encode_series(pd.Series(paths), progress=False))
            t_s3, b = clock(lambda: encode_series(pd.Series(urls[:n_encode]), progress=False))
            t_local2, _ = clock(lambda: encode_series(pd.Series(paths), progress=False))
            t_local = min(t_local, t_local2)
            assert a.tolist() == b.tolist()
        print(f"\n3. encode {n_encode} camera JPEGs (default workers):")
        print(
            f"   local disk: {t_local:6.2f} s   S3: {t_s3:6.2f} s   "
            f"ratio {t_s3 / t_local:.2f}x (goal <= 1.3x); same data URIs"
        )

        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", endpoint, "bench"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        rows, errors, base, peak, _after, took = out
        print(
            f"\n4. header table of {rows} remote objects ({errors} errors) in {float(took):.1f} s:"
        )
        print(
            f"   RSS before {base} MB, peak {peak} MB: {float(peak) - float(base):.1f} MB above "
            f"baseline (goal < 100 MB)"
        )
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
