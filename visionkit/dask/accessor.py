"""``ddf.vision``: ``df.vision`` on a Dask DataFrame -- same parameters, same results, lazily.

Registered by ``import visionkit.dask``. Each method maps the pandas one over the partitions
with the result's ``meta`` computed by the pandas code on an empty frame, so dtypes agree with
``df.vision`` exactly; the index and divisions are the input's, so ``ddf.join(result)`` lines
up partition by partition. Nothing runs until ``.compute()`` / ``.persist()``.

- ``inspect``, ``estimate_tokens``, ``encode``: per partition on any Dask scheduler.
- ``ask``: needs a ``distributed`` cluster (one rate limit for all workers; see
  ``visionkit.dask.limiter``), plus ``out=`` for a folder of per-partition Parquet files.
- ``submit``: a batch job now (not lazy): the workers write the files, this process uploads
  them (``visionkit.dask.submit``).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import pandas as pd
from dask.dataframe.extensions import register_dataframe_accessor

from ..providers import DEFAULT_PROVIDER, Provider

__all__ = ["DaskVisionAccessor"]


@register_dataframe_accessor("vision")
class DaskVisionAccessor:
    """Image-set methods on a Dask DataFrame with an image column (``image`` or ``path``)."""

    def __init__(self, ddf: Any) -> None:
        _borrow_signatures()
        self._ddf = ddf

    def _column(self, column: str | None) -> str:
        from ..images.cells import image_column

        return image_column(self._ddf._meta, column)

    def inspect(self, *, column: str | None = None) -> Any:
        """``read_images``' columns for the image column, per partition, same index."""
        from ..images.rows import frame as _frame

        col = self._column(column)
        meta = _frame([], index=self._ddf._meta.index[:0])
        _share_storage()
        return self._ddf.map_partitions(_inspect, col, meta=meta, enforce_metadata=False)

    def estimate_tokens(
        self, provider: str | Provider = DEFAULT_PROVIDER, *, column: str | None = None
    ) -> Any:
        """Estimated image tokens per row (``Int64``, NA where the size is unknown), from
        ``width``/``height`` when present, else from each image's header."""
        ddf = self._ddf
        if column is None and {"width", "height"} <= set(ddf.columns):
            sizes = ddf[["width", "height"]]
        else:
            sizes = self.inspect(column=column)[["width", "height"]]
        meta = pd.Series([], dtype="Int64", name="estimated_tokens", index=ddf._meta.index[:0])
        return sizes.map_partitions(_estimate, provider, meta=meta, enforce_metadata=False)

    def encode(
        self,
        provider: str | Provider = DEFAULT_PROVIDER,
        *,
        column: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """``df.vision.encode`` per partition: a Series of data URIs (NA where a row fails).

        Takes ``encode_series``' options; ``progress`` is off on the workers.
        """
        col = self._column(column)
        kwargs = {**kwargs, "progress": False}
        meta = pd.Series([], dtype=object, name="data_uri", index=self._ddf._meta.index[:0])
        _share_storage()
        return self._ddf[col].map_partitions(
            _encode, provider, kwargs, meta=meta, enforce_metadata=False
        )

    def ask(self, prompt: str, *, out: str | None = None, **kwargs: Any) -> Any:
        """``df.vision.ask`` on every partition, lazily, through one cluster-wide rate limit.

        Same parameters and result as ``visionkit.ask``, plus ``out=``: a folder or URL where
        each finished partition is written as ``part.N.parquet`` at once; running the same
        call again reads finished partitions instead of running them (see
        ``visionkit.dask.out``). Needs a ``distributed`` Client (a LocalCluster will do).
        """
        from ..query.options import AskOptions
        from .ask import ask_frame

        request_options = {k: v for k, v in kwargs.items() if k not in _ASK_FIELDS}
        named = {k: v for k, v in kwargs.items() if k in _ASK_FIELDS}
        options = AskOptions(**named, request_options=request_options)
        return ask_frame(self._ddf, prompt, options, out=out)

    def submit(self, prompt: str, **kwargs: Any) -> Any:
        """``df.vision.submit`` with the workers encoding and writing the files: same
        parameters, same result (a ``BatchJob``; a DataFrame with ``dry_run=True``), run now.
        One process uploads, at the provider's pace (see ``visionkit.dask.submit``).
        Needs a ``distributed`` Client."""
        from .submit import submit_frame

        return submit_frame(self._ddf, prompt, **kwargs)


_ASK_FIELDS = frozenset(
    {
        "client",
        "model",
        "column",
        "system",
        "schema",
        "concurrency",
        "max_retries",
        "timeout",
        "cache",
        "dry_run",
        "budget_tokens",
        "progress",
        "requests_per_minute",
        "tokens_per_minute",
        "max_side",
    }
)


def _inspect(part: pd.DataFrame, column: str) -> pd.DataFrame:
    from ..images.read import inspect_images

    return inspect_images(part[column])


def _estimate(sizes: pd.DataFrame, provider: str | Provider) -> pd.Series:
    from ..providers import estimate_tokens

    return estimate_tokens(sizes["width"], sizes["height"], provider).rename("estimated_tokens")


def _encode(cells: pd.Series, provider: str | Provider, kwargs: dict[str, Any]) -> pd.Series:
    from ..images.encode import encode_series

    return encode_series(cells, provider=provider, **kwargs)


def _share_storage() -> None:
    """Storage options this process remembers, to the workers (when on a distributed cluster)."""
    try:
        from distributed import get_client

        dask_client = get_client()
    except (ImportError, ValueError):
        return
    from .secrets import share_storage_options

    share_storage_options(dask_client)


@functools.cache
def _borrow_signatures() -> None:
    """``help(ddf.vision.ask)`` shows ``ask``'s parameters (and ``out``), as ``df.vision`` does."""
    from ..accessor import _borrow_signature
    from ..batch.submit import submit
    from ..images.encode import encode_series
    from ..query.ask import ask

    _borrow_signature(
        DaskVisionAccessor.encode, encode_series, doc=False, column=True, first="provider"
    )
    _borrow_signature(DaskVisionAccessor.ask, ask, doc=False)
    _borrow_signature(DaskVisionAccessor.submit, submit, doc=False)
    sig = inspect.signature(DaskVisionAccessor.ask)
    params = list(sig.parameters.values())
    out = inspect.Parameter(
        "out", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="str | None"
    )
    at = next((i for i, p in enumerate(params) if p.kind is p.VAR_KEYWORD), len(params))
    params.insert(at, out)
    DaskVisionAccessor.ask.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
