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

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

import pandas as pd
from dask.dataframe.extensions import register_dataframe_accessor

from ..providers import DEFAULT_PROVIDER, Provider

if TYPE_CHECKING:
    import dask.dataframe as dd

    from ..batch.protocol import Job
    from ..query.cache import Cache
    from ..query.client import Client

__all__ = ["DaskVisionAccessor"]


@register_dataframe_accessor("vision")
class DaskVisionAccessor:
    """Image-set methods on a Dask DataFrame with an image column (``image`` or ``path``)."""

    def __init__(self, data: dd.DataFrame) -> None:
        self._ddf = data

    def _column(self, image_column: str | None) -> str:
        from ..images.cells import find_image_column

        return find_image_column(self._ddf._meta, image_column)

    def inspect(self, *, image_column: str | None = None) -> dd.DataFrame:
        """``read_images``' columns for the image column, per partition, same index."""
        from ..images.rows import frame as _frame

        col = self._column(image_column)
        meta = _frame([], index=self._ddf._meta.index[:0])
        _share_storage()
        frame: dd.DataFrame = self._ddf.map_partitions(
            _inspect, col, _call(), meta=meta, enforce_metadata=False
        )
        return frame

    def estimate_tokens(
        self, provider: str | Provider = DEFAULT_PROVIDER, *, image_column: str | None = None
    ) -> dd.Series:
        """Estimated image tokens per row (``Int64``, NA where the size is unknown), from
        ``width``/``height`` when present, else from each image's header."""
        ddf = self._ddf
        if image_column is None and {"width", "height"} <= set(ddf.columns):
            sizes = ddf[["width", "height"]]
        else:
            sizes = self.inspect(image_column=image_column)[["width", "height"]]
        meta = pd.Series([], dtype="Int64", name="estimated_tokens", index=ddf._meta.index[:0])
        tokens: dd.Series = sizes.map_partitions(
            _estimate, provider, _call(), meta=meta, enforce_metadata=False
        )
        return tokens

    def encode(
        self,
        provider: str | Provider = DEFAULT_PROVIDER,
        *,
        image_column: str | None = None,
        max_side: int | None = None,
        max_tokens: int | None = None,
        max_bytes: int | None = None,
        format: str = "auto",
        strip_metadata: bool = True,
        errors: str = "coerce",
        workers: int | None = None,
        progress: bool = True,
    ) -> dd.Series:
        """``df.vision.encode`` per partition: a Series of data URIs (NA where a row fails).

        The same options as ``df.vision.encode``; ``progress`` is taken for the same
        signature but is off on the workers (a bar per partition would say little).
        """
        col = self._column(image_column)
        options = {
            "max_side": max_side,
            "max_tokens": max_tokens,
            "max_bytes": max_bytes,
            "format": format,
            "strip_metadata": strip_metadata,
            "errors": errors,
            "workers": workers,
            "progress": False,
        }
        meta = pd.Series([], dtype=object, name="data_uri", index=self._ddf._meta.index[:0])
        _share_storage()
        uris: dd.Series = self._ddf[col].map_partitions(
            _encode, provider, options, _call(), meta=meta, enforce_metadata=False
        )
        return uris

    def ask(
        self,
        prompt: str,
        *,
        client: Client | str | None = None,
        model: str | None = None,
        image_column: str | Sequence[str] | None = None,
        system: str | None = None,
        schema: Any = None,
        concurrency: int = 8,
        max_retries: int = 6,
        timeout: float | None = 60,
        cache: bool | str | os.PathLike[str] | Cache | None = True,
        dry_run: bool = False,
        budget_tokens: int | None = None,
        progress: bool = True,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
        max_side: int | None = None,
        out: str | None = None,
        **request_options: Any,
    ) -> dd.DataFrame:
        """``df.vision.ask`` on every partition, lazily, through one cluster-wide rate limit.

        Same parameters and result as [`vk.ask`][visionkit.ask], plus ``out=``: a folder or URL
        where each finished partition is written as ``part.N.parquet`` at once; running the same
        call again reads finished partitions instead of running them (see
        ``visionkit.dask.out``). Needs a ``distributed`` Client (a LocalCluster will do).
        """
        arguments = locals()
        from ..query.options import AskOptions
        from .ask import ask_frame

        return ask_frame(self._ddf, prompt, AskOptions.from_arguments(arguments), out=out)

    @overload
    def submit(
        self,
        prompt: str,
        *,
        client: Client | str | None = ...,
        model: str | None = ...,
        image_column: str | Sequence[str] | None = ...,
        system: str | None = ...,
        schema: Any = ...,
        cache: bool | str | os.PathLike[str] | Cache | None = ...,
        max_side: int | None = ...,
        max_file_bytes: int | None = ...,
        max_requests_per_file: int | None = ...,
        upload_interval: float | None = ...,
        metadata: Mapping[str, str] | None = ...,
        compact: bool = ...,
        dry_run: Literal[False] = ...,
        budget_tokens: int | None = ...,
        progress: bool = ...,
        **request_options: Any,
    ) -> Job: ...

    @overload
    def submit(
        self,
        prompt: str,
        *,
        client: Client | str | None = ...,
        model: str | None = ...,
        image_column: str | Sequence[str] | None = ...,
        system: str | None = ...,
        schema: Any = ...,
        cache: bool | str | os.PathLike[str] | Cache | None = ...,
        max_side: int | None = ...,
        max_file_bytes: int | None = ...,
        max_requests_per_file: int | None = ...,
        upload_interval: float | None = ...,
        metadata: Mapping[str, str] | None = ...,
        compact: bool = ...,
        dry_run: Literal[True],
        budget_tokens: int | None = ...,
        progress: bool = ...,
        **request_options: Any,
    ) -> pd.DataFrame: ...

    @overload
    def submit(
        self,
        prompt: str,
        *,
        client: Client | str | None = ...,
        model: str | None = ...,
        image_column: str | Sequence[str] | None = ...,
        system: str | None = ...,
        schema: Any = ...,
        cache: bool | str | os.PathLike[str] | Cache | None = ...,
        max_side: int | None = ...,
        max_file_bytes: int | None = ...,
        max_requests_per_file: int | None = ...,
        upload_interval: float | None = ...,
        metadata: Mapping[str, str] | None = ...,
        compact: bool = ...,
        dry_run: bool = ...,
        budget_tokens: int | None = ...,
        progress: bool = ...,
        **request_options: Any,
    ) -> Job | pd.DataFrame: ...

    def submit(
        self,
        prompt: str,
        *,
        client: Client | str | None = None,
        model: str | None = None,
        image_column: str | Sequence[str] | None = None,
        system: str | None = None,
        schema: Any = None,
        cache: bool | str | os.PathLike[str] | Cache | None = True,
        max_side: int | None = None,
        max_file_bytes: int | None = None,
        max_requests_per_file: int | None = None,
        upload_interval: float | None = None,
        metadata: Mapping[str, str] | None = None,
        compact: bool = False,
        dry_run: bool = False,
        budget_tokens: int | None = None,
        progress: bool = True,
        **request_options: Any,
    ) -> Job | pd.DataFrame:
        """``df.vision.submit`` with the workers encoding and writing the files: same
        parameters, same result (a ``Job``; a DataFrame with ``dry_run=True``), run now.
        One process uploads, at the provider's pace, starting while the workers still
        prepare (see ``visionkit.dask.submit``).
        Needs a ``distributed`` Client."""
        arguments = {k: v for k, v in locals().items() if k not in ("self", "prompt")}
        extra = arguments.pop("request_options")
        from .submit import submit_frame

        return submit_frame(self._ddf, prompt, **arguments, **extra)


# Each task runs ``with in_task(call)``: its warnings are said once per call on the client,
# at the user's line (``visionkit.dask.relay``).


def _call() -> str:
    from .relay import start_call

    return start_call()


def _inspect(part: pd.DataFrame, column: str, call: str) -> pd.DataFrame:
    from ..images.read import inspect_images
    from .relay import in_task

    with in_task(call):
        return inspect_images(part[column])


def _estimate(sizes: pd.DataFrame, provider: str | Provider, call: str) -> pd.Series:
    from ..providers import estimate_tokens
    from .relay import in_task

    with in_task(call):
        tokens = estimate_tokens(sizes["width"], sizes["height"], provider=provider)
    return tokens.rename("estimated_tokens")


def _encode(
    cells: pd.Series, provider: str | Provider, kwargs: dict[str, Any], call: str
) -> pd.Series:
    from ..images.encode import encode_series
    from .relay import in_task

    with in_task(call):
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
