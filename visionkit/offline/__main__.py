"""``python -m visionkit.offline``: run the stand-in in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import time
from collections.abc import Sequence
from typing import Any

from .server import DEFAULT_MODEL, OfflineServer


class StopSignals:
    """SIGINT/SIGTERM handling that never raises and never takes a lock.

    The first signal only records itself; the main thread, which does nothing but poll that
    record, then stops the server and prints the stats. A ``KeyboardInterrupt`` raised at an
    arbitrary point of the main thread (the old way) can land inside ``Thread.join`` -- where
    Python 3.11 then releases the *serving* thread's state lock and marks it stopped -- or between
    a lock's acquire and its ``try``, leaving a lock held for good. The first signal also puts the
    default actions back, so a second SIGINT/SIGTERM is handled by the kernel: it ends the process
    at once even if Python is stuck, whatever it is stuck on.
    """

    signals = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None

    def install(self) -> None:
        for signum in self.signals:
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = signum
        for s in self.signals:
            signal.signal(s, signal.SIG_DFL)

    def wait(self, poll: float = 0.1) -> int:
        """Sleep until a stop signal arrives; returns its number."""
        while self.received is None:
            time.sleep(poll)
        return self.received


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m visionkit.offline",
        description="Run visionkit's offline OpenAI-compatible stand-in in the foreground.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per answer")
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--fail-status", type=int, default=500)
    parser.add_argument("--rate-limit", type=float, default=None, help="requests per second")
    parser.add_argument("--burst", type=float, default=None)
    parser.add_argument(
        "--rate-headers",
        choices=["openai", "ietf"],
        default=None,
        help="announce the rate limit in response headers, as providers do",
    )
    parser.add_argument(
        "--api-key", default="offline", help="the key clients must send ('' accepts any key)"
    )
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--any-model", action="store_true", help="accept any model name")
    parser.add_argument("--profile", default="offline", help="provider profile whose rules apply")
    parser.add_argument(
        "--no-pixels",
        dest="pixels",
        action="store_false",
        help="read image headers only (size, format), not colours: far less CPU per request",
    )
    parser.add_argument("--seed", type=int, default=0)
    batch = parser.add_argument_group("Batch API")
    batch.add_argument(
        "--upload-interval",
        type=float,
        default=None,
        help="seconds between accepted file uploads (default: the profile's, 60 for inference.net)",
    )
    batch.add_argument("--max-file-bytes", type=int, default=None)
    batch.add_argument("--max-requests-per-file", type=int, default=None)
    batch.add_argument(
        "--batch-time", type=float, default=0.0, help="seconds a batch spends in progress"
    )
    batch.add_argument(
        "--batch-expire-fraction",
        type=float,
        default=0.0,
        help="fraction of each batch's lines left unrun (the batch expires)",
    )
    batch.add_argument("--line-fail-rate", type=float, default=0.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # Each option's name is the OfflineServer field it sets.
    names = {f.name for f in dataclasses.fields(OfflineServer) if f.init}
    options = {name: value for name, value in vars(args).items() if name in names}
    server = OfflineServer(**{**options, "api_key": args.api_key or None})
    # `kill` / Popen.terminate() stop it as cleanly as Ctrl-C (and print the stats); installed
    # before the serving threads start, so no signal can come in between.
    stop = StopSignals()
    stop.install()
    server.start()
    key_note = "any key" if server.api_key is None else "the key given by --api-key"
    print(
        f"visionkit offline stand-in at {server.base_url} (model {server.model!r}, {key_note}); "
        "Ctrl-C stops it.",
        flush=True,
    )
    try:
        stop.wait()
    finally:
        server.stop()
        print(json.dumps(server.stats.as_dict()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
