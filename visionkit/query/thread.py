"""Running a run from synchronous code: a worker thread with its own event loop.

``ask`` works in a plain script and inside Jupyter's running event loop alike: the run happens
on a worker thread with its own loop while the calling thread waits and listens for
interrupts. The first KeyboardInterrupt drains the run (requests in flight finish and are
kept), a second abandons them.
"""

from __future__ import annotations

import logging
import threading

import pandas as pd

from ..errors import warn
from .progress import in_ipython
from .run import Run
from .stopping import run_loop

__all__ = ["run_in_thread"]

logger = logging.getLogger("visionkit")


def run_in_thread(run: Run) -> pd.DataFrame:
    """Run on a worker thread with its own event loop; the caller's thread handles interrupts."""
    outcome: dict[str, BaseException] = {}
    done = threading.Event()

    def target() -> None:
        try:
            run_loop(run.main(reraise_cancel=False))
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            done.set()

    worker = threading.Thread(target=target, name="visionkit-ask", daemon=True)
    interrupts = 0
    try:
        worker.start()
        while not done.is_set():
            try:
                done.wait(0.1)
            except KeyboardInterrupt:
                interrupts += 1
                if interrupts == 1:
                    in_flight = run.request_drain()
                    logger.warning(
                        "interrupted: finishing %d request(s) in flight so their answers are "
                        "kept; interrupt again to abandon them",
                        in_flight,
                    )
                else:
                    run.request_cancel()
    finally:
        if run.bar is not None:
            run.bar.close()
    if "error" in outcome:
        raise outcome["error"]
    result = run.frame()
    if run.interrupted:
        usage = result.attrs["usage"]
        message = (
            f"visionkit.ask was interrupted: {usage['answered'] + usage['cache_hits']} of "
            f"{usage['rows']} rows answered and cached; re-run the same call to resume."
        )
        if in_ipython():
            warn(message, RuntimeWarning)
            return result
        logger.warning(message)
        raise KeyboardInterrupt(message)
    return result
