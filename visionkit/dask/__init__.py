"""Scale out on Dask: ``ddf.vision`` on a cluster, with one rate limit for all of it.

Usage:

    import visionkit as vk
    import visionkit.dask                 # registers ddf.vision (pip install 'visionkit[dask]')
    from distributed import Client
    client = Client()                          # a LocalCluster here; your cluster's Client there
    ddf = vk.dask.read_images("s3://bucket/photos/**/*.jpg", partition_size=2_000)
    ddf.vision.estimate_tokens().sum().compute()
    answers = ddf.vision.ask("Describe this image.", concurrency=32, out="s3://bucket/answers/")
    answers.compute()

Modules, one job each: ``accessor`` (``ddf.vision``), ``read`` (``read_images`` in
partitions), ``limiter`` (the coordinator on the scheduler: one concurrency window, one pacing
and the claims for the whole cluster), ``cache`` (the answer cache on a cluster), ``secrets``
(the key and storage options to the workers, never in the graph), ``ask`` (a partition's run),
``out`` (per-partition Parquet files, skipped when done).
"""

from __future__ import annotations

try:
    import dask.dataframe  # noqa: F401
    import distributed  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        f"visionkit.dask needs dask[dataframe] and distributed ({exc.name} is missing): "
        "pip install 'visionkit[dask]'"
    ) from exc

from .accessor import DaskVisionAccessor
from .ask import usage
from .read import read_images

__all__ = ["DaskVisionAccessor", "read_images", "usage"]
