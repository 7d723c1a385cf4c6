"""Everything decided before a request is sent: checked arguments, prompts, client, cache.

``make_plan`` validates a call's arguments (raising before anything is read or sent), fills the
prompt template per row (an NA field is that row's error), resolves the client, provider and
model, and opens the cache. ``read_row`` reads a row's image bytes and their digests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..errors import ImageError, RequestError
from ..images.cells import image_column, read_bytes
from ..providers import Provider
from ..types import is_missing
from .cache import Cache, image_digest, request_key
from .client import Client, cache_identity, default_client, resolve_profile
from .schema import Schema, make_schema
from .template import check_template, fill_template

__all__ = ["RESULT_COLUMNS", "Plan", "make_plan", "read_row"]


RESULT_COLUMNS = (
    "answer",
    "error",
    "prompt_tokens",
    "completion_tokens",
    "estimated_tokens",
    "cached",
    "attempts",
)


@dataclass
class Plan:
    """Everything decided before anything is sent."""

    index: pd.Index
    columns: list[str]
    cells: list[list[Any]]  # per image column, the cells in row order
    prompts: list[str | RequestError]
    client: Client | None
    provider: Provider
    model: str | None
    system: str | None
    schema: Schema | None
    params: dict[str, Any]
    encode_options: dict[str, Any]
    concurrency: int
    max_retries: int
    timeout: float | None
    cache: Cache | None
    progress: bool

    @property
    def n(self) -> int:
        return len(self.index)

    def key(self, pos: int, digests: Sequence[str], model: str) -> str:
        if self.client is not None:
            name, base_url = self.client.cache_identity
        else:
            name, base_url = cache_identity(self.provider, self.provider.base_url)
        return request_key(
            provider=name,
            base_url=base_url,
            model=model,
            prompt=str(self.prompts[pos]),
            system=self.system,
            schema=self.schema.json_schema if self.schema else None,
            params={**self.params, "_encode": self.encode_options},
            images=digests,
        )


def _image_columns(df: pd.DataFrame, column: str | Sequence[str] | None) -> list[str]:
    if column is None:
        return [image_column(df, who="ask")]
    cols = [column] if isinstance(column, str) else list(column)
    if not cols:
        raise ValueError("column= is an empty list; name at least one image column")
    return [image_column(df, c, who="ask") for c in cols]


def make_plan(
    df: pd.DataFrame,
    prompt: str,
    *,
    client: Client | str | None,
    model: str | None,
    column: str | Sequence[str] | None,
    system: str | None,
    schema: Any,
    concurrency: int,
    max_retries: int,
    timeout: float | None,
    cache: Any,
    progress: bool,
    max_side: int | None,
    request_options: dict[str, Any],
    connect_now: bool,
) -> Plan:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"ask needs a DataFrame, not {type(df).__name__}")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt must be a non-empty string, e.g. 'Describe this image.'")
    if not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be an integer >= 1, but {concurrency!r} was passed")
    if not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(
            f"max_retries must be an integer >= 0 (0 disables retries), not {max_retries!r}"
        )
    for reserved in ("model", "messages", "stream"):
        if reserved in request_options:
            hint = "pass model=..." if reserved == "model" else "it is built from the row"
            raise TypeError(f"ask() does not take {reserved}= as a request option ({hint})")
    columns = _image_columns(df, column)
    fields = check_template(prompt, df.columns)
    sch = make_schema(schema)
    if sch is not None:
        clash = [f for f in sch.fields if f in RESULT_COLUMNS]
        if clash:
            raise ValueError(
                f"schema field(s) {clash} would collide with ask's result columns "
                f"{list(RESULT_COLUMNS)}; rename them in the schema"
            )
        if "response_format" in request_options:
            raise TypeError("pass either schema= or response_format=, not both")

    prompts: list[str | RequestError] = []
    if fields:
        records = df[fields].to_dict("records")
        for label, values in zip(df.index, records, strict=True):
            try:
                prompts.append(fill_template(prompt, values, row=label))
            except RequestError as exc:
                prompts.append(exc)
    else:
        literal = prompt.format_map({})
        prompts = [literal] * len(df)

    if isinstance(client, str):
        from .client import connect

        client = connect(client)
    if client is None and connect_now:
        client = default_client()
    if client is not None:
        client = client.with_model(model)
        provider, model = client.provider, client.model
    else:
        provider = resolve_profile("auto")
        model = model or provider.default_model
    if provider.max_images is not None and len(columns) > provider.max_images:
        raise RequestError(
            f"column={columns} puts {len(columns)} images in each request, but "
            f"{provider.name} allows at most {provider.max_images}; nothing was sent"
        )

    encode_options = {"max_side": max_side} if max_side is not None else {}
    return Plan(
        index=df.index,
        columns=columns,
        cells=[df[c].tolist() for c in columns],
        prompts=prompts,
        client=client,
        provider=provider,
        model=model,
        system=system,
        schema=sch,
        params=dict(request_options),
        encode_options=encode_options,
        concurrency=concurrency,
        max_retries=max_retries,
        timeout=timeout,
        cache=Cache.open(cache),
        progress=progress,
    )


def read_row(plan: Plan, pos: int) -> tuple[list[bytes], list[str]]:
    """The raw bytes of the row's images and their content digests (thread-pool work)."""
    label = plan.index[pos]
    datas = []
    for col, cells in zip(plan.columns, plan.cells, strict=True):
        cell = cells[pos]
        if is_missing(cell) or (isinstance(cell, (str, bytes)) and not cell):
            raise ImageError(f"no image in column {col!r}", row=label)
        datas.append(read_bytes(cell, row=label))
    return datas, [image_digest(d) for d in datas]
