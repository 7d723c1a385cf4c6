"""``vk.dask.read_images``: ``read_images`` as a Dask DataFrame, listed here, read on the workers.

The source is listed once, in the calling process (a folder walk, a glob, a bucket prefix:
names and sizes only), and cut into partitions of ``partition_size`` files; each partition
reads only the headers of its files (ranged GETs for objects), on whichever worker runs it.
The columns and dtypes are ``read_images``'; the index is each file's position in the listing,
so a partition's labels never collide with another's. As in ``read_images``, files a folder
walk found that are not images are left out (a partition may then hold fewer rows, and the
index has gaps there); the warning that names them is given on the worker, not here.

``storage_options`` never enter the task graph: they are remembered for the source's prefix
in this process and reach the workers in a plugin (``visionkit.dask.secrets``) when a
distributed Client is running; without one (dask's local schedulers) this process reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..errors import warn

if TYPE_CHECKING:
    import dask.dataframe as dd

__all__ = ["read_images"]


def read_images(
    source: Any,
    *,
    partition_size: int = 2_000,
    recursive: bool = True,
    storage_options: Mapping[str, Any] | None = None,
    concurrency: int | None = None,
) -> dd.DataFrame:
    """A lazy Dask DataFrame of ``read_images``' columns, ``partition_size`` files a partition.

    ``source``: what ``vk.read_images`` takes except tables (a folder, a glob, a path or URL, a
    bucket prefix such as ``"s3://bucket/photos/**/*.jpg"``, or a list of them). Listing happens
    now; headers are read when the frame is computed. ``concurrency``: header reads at once per
    partition (default 32).

    >>> ddf = vk.dask.read_images("s3://bucket/photos/", partition_size=2_000)  # doctest: +SKIP
    >>> ddf.vision.estimate_tokens().sum().compute()                            # doctest: +SKIP
    """
    import dask.dataframe as dd

    from ..images.read import list_sources
    from ..images.remote import remember_options
    from ..images.rows import frame as _frame
    from .relay import start_call

    if not isinstance(partition_size, int) or partition_size < 1:
        raise ValueError(f"partition_size must be an integer >= 1, not {partition_size!r}")
    if storage_options and isinstance(source, str):
        remember_options(source, storage_options)
    listing = list_sources(source, recursive=recursive, storage_options=storage_options)
    starts = list(range(0, max(len(listing), 1), partition_size))
    parts = [(start, listing[start : start + partition_size]) for start in starts]
    meta = _frame([], index=pd.RangeIndex(0))
    meta.index = pd.Index([], dtype="int64")
    _share_storage()
    divisions = [start for start, _ in parts] + [max(len(listing), 1) - 1]
    return dd.from_map(
        _read_part,
        parts,
        concurrency=concurrency,
        call=start_call(),
        meta=meta,
        divisions=divisions,
        enforce_metadata=False,
        label="read-images",
    )


def _read_part(part: tuple[int, Any], concurrency: int | None, call: str) -> pd.DataFrame:
    """One partition: the headers of its files (on a worker), indexed by listing position;
    its warnings go to the client (``visionkit.dask.relay``)."""
    from ..images.read import ReadImagesWarning, read_listing
    from ..images.rows import frame as _frame
    from .relay import in_task

    start, listing = part
    with in_task(call):
        rows, positions, skipped = read_listing(listing, concurrency=concurrency)
        if skipped:
            warn(
                f"read_images left out {len(skipped)} file(s) that are not images: "
                f"{', '.join(skipped[:5])}",
                ReadImagesWarning,
            )
    frame = _frame(rows)
    frame.index = pd.Index([start + i for i in positions], dtype="int64")
    return frame


def _share_storage() -> None:
    from .accessor import _share_storage as share

    share()
