"""How fast the offline stand-in answers: requests/s at concurrency 32 with 200 ms latency.

    python benchmarks/bench_offline.py [--requests 320] [--concurrency 32] [--latency 0.2]

Drives the server with the real ``openai.AsyncOpenAI`` client (asyncio.gather + semaphore) and
prints, side by side, the measured throughput against the ideal ``ceil(N / C) * latency``, for
text-only requests and for requests carrying one distinct ~1120x747 JPEG each (so the server
decodes, sniffs, measures and describes every image), plus the peak concurrency the server saw.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import math
import time

import numpy as np
import openai
from PIL import Image

from visionkit import offline


def make_uris(n: int, size: tuple[int, int] = (1120, 747)) -> list[str]:
    rng = np.random.default_rng(0)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], axis=-1)
    uris = []
    for i in range(n):
        noise = rng.normal(0, 12, (h, w, 3))
        arr = np.clip(base + noise + i % 64, 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "JPEG", quality=80)
        uris.append("data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode())
    return uris


async def drive(
    url: str, n: int, concurrency: int, uris: list[str] | None, *, retries: int = 0
) -> float:
    sem = asyncio.Semaphore(concurrency)
    async with openai.AsyncOpenAI(base_url=url, api_key="offline", max_retries=retries) as client:

        async def one(i: int) -> None:
            content: list[dict] = [{"type": "text", "text": f"Describe image {i}."}]
            if uris:
                content.append({"type": "image_url", "image_url": {"url": uris[i]}})
            async with sem:
                await client.chat.completions.create(
                    model="visionkit-offline", messages=[{"role": "user", "content": content}]
                )

        await one(0)  # warm up the connection pool and imports
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=320)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.2)
    args = parser.parse_args()
    n, c, lat = args.requests, args.concurrency, args.latency
    ideal = math.ceil(n / c) * lat
    uris = make_uris(n)
    mean_kb = sum(len(u) for u in uris) / len(uris) / 1024
    print(
        f"{n} requests, concurrency {c}, latency {lat * 1000:.0f} ms: ideal {ideal:.2f} s "
        f"({n / ideal:.0f} req/s)"
    )
    header = ["case", "seconds", "req/s", "x ideal", "peak in flight", "server CPU ms/req"]
    print(f"{header[0]:<36}" + "".join(f"{h:>{len(h) + 3}}" for h in header[1:]))
    cases = [
        ("text only", None, True),
        (f"1 JPEG each (~{mean_kb:.0f} KiB URI)", uris, True),
        ("1 JPEG each, pixels=False", uris, False),
    ]
    widths = [len(h) + 3 for h in header[1:]]
    for label, images, pixels in cases:
        with offline.serve(latency=lat, pixels=pixels) as url:
            elapsed = asyncio.run(drive(url, n, c, images))
            stats = url.server.stats.as_dict()
        assert stats["answered"] == n + 1, stats
        row = [elapsed, n / elapsed, elapsed / ideal, stats["max_in_flight"]]
        row.append(stats["cpu_ms_per_request"])
        cells = [
            f"{v:>{w}.2f}" if isinstance(v, float) else f"{v:>{w}}"
            for v, w in zip(row, widths, strict=True)
        ]
        print(f"{label:<36}" + "".join(cells))

    # A rate limit: the SDK's own retries honour retry-after-ms; no adaptive concurrency.
    rate = 20
    m = 200
    with offline.serve(latency=lat, rate_limit=rate) as url:
        elapsed = asyncio.run(drive(url, m, c, None, retries=20))
        stats = url.server.stats.as_dict()
    refused = stats["status_counts"].get(429, 0)
    print(
        f"rate limit {rate}/s, {m} text requests at concurrency {c}, SDK retries: "
        f"{m / elapsed:.1f} req/s sustained, 429s {refused} "
        f"({refused / stats['chat_requests']:.0%} of requests); all answered: "
        f"{stats['answered'] == m + 1}"
    )


if __name__ == "__main__":
    main()
