"""The ``df.vision`` DataFrame accessor: validates the image column, delegates, keeps the index.

Registered when ``visionkit`` is imported:

    import visionkit as vk
    df = vk.read_images("datasets/images/")
    df.vision.estimate_tokens()

Each method is a twin of a ``vk`` function with the DataFrame left out, and its parameters are
written out here (not borrowed at run time) so that IDEs and static tools show every option;
tests/test_naming.py holds each twin to its function's parameters and defaults.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import pandas as pd

from .providers import DEFAULT_PROVIDER

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from .batch.protocol import Job
    from .evaluation import Evaluation
    from .images.thumbnails import ImageGrid
    from .providers import Provider
    from .query.cache import Cache
    from .query.client import Client
    from .widgets import Annotator, BoxAnnotator, Gallery
    from .widgets._frame import RowFilter

__all__ = ["VisionAccessor"]


@pd.api.extensions.register_dataframe_accessor("vision")
class VisionAccessor:
    """Image-set methods on any DataFrame with an image column (``image`` or ``path``)."""

    def __init__(self, data: pd.DataFrame) -> None:
        _finish_ask_docs()
        self._df = data

    def _column(self, image_column: str | None) -> str:
        """The image column: ``image_column`` if given, else ``image`` if present, else ``path``."""
        from .images.cells import find_image_column

        return find_image_column(self._df, image_column)

    # -- images and tokens -----------------------------------------------------------------
    def estimate_tokens(
        self, provider: str | Provider = DEFAULT_PROVIDER, *, image_column: str | None = None
    ) -> pd.Series:
        """Estimated image tokens per row, as an ``Int64`` Series (NA where the size is unknown).

        Uses the ``width``/``height`` columns when present (as ``read_images`` gives them),
        otherwise inspects the image column.
        """
        from .providers import estimate_tokens

        df = self._df
        if image_column is None and {"width", "height"} <= set(df.columns):
            sizes = df
        else:
            sizes = self.inspect(image_column=image_column)
        out = estimate_tokens(sizes["width"], sizes["height"], provider=provider)
        return out.rename("estimated_tokens")

    def inspect(self, *, image_column: str | None = None) -> pd.DataFrame:
        """The same columns as ``read_images`` for this DataFrame's image column, same index."""
        from .images.read import inspect_images

        col = self._column(image_column)
        return inspect_images(self._df[col])

    def plot_tokens(
        self,
        provider: str | Provider | None = None,
        *,
        image_column: str | None = None,
        resize_to: int | str | None = "floor",
        ax: Axes | None = None,
        **kwargs: Any,
    ) -> Axes:
        """Each image at (width, height) over the provider's token map; returns the Axes.

        See [`vk.plot_tokens`][visionkit.plot_tokens]. Uses ``width``/``height`` when present,
        otherwise inspects the image column.
        """
        from .plots import plot_tokens

        data = self._df
        if image_column is not None or not {"width", "height"} <= set(data.columns):
            data = self.inspect(image_column=image_column) if len(data) else data
        return plot_tokens(data, provider, resize_to=resize_to, ax=ax, **kwargs)

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
    ) -> pd.Series:
        """A Series of ``data:`` URIs the provider accepts, same index (NA where a row fails).

        The options are [`vk.encode_image`][visionkit.encode_image]'s: ``max_side`` (default:
        the provider's), ``max_tokens``, ``max_bytes`` (default: the provider's per-image
        budget), ``format`` (``"auto"``: JPEG for photographs, PNG for graphics) and
        ``strip_metadata`` (EXIF with GPS, XMP and comments are not sent unless ``False``).
        One warning names the failing rows; ``errors="raise"`` raises ``ImageError`` naming
        the first. ``workers`` threads encode (default: one per CPU, at most 8);
        ``progress=False`` hides the progress bar (shown only when encoding takes over a
        second).
        """
        from .images.encode import encode_series

        return encode_series(
            self._df[self._column(image_column)],
            provider=provider,
            max_side=max_side,
            max_tokens=max_tokens,
            max_bytes=max_bytes,
            format=format,
            strip_metadata=strip_metadata,
            errors=errors,
            workers=workers,
            progress=progress,
        )

    # -- asking ----------------------------------------------------------------------------
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
        **request_options: Any,
    ) -> pd.DataFrame:
        """Ask a vision model about each row's image; [`vk.ask`][visionkit.ask] with this DataFrame.

        >>> result = df.vision.ask("Is this a {label}?", concurrency=16)   # doctest: +SKIP
        >>> df.drop(columns="error").join(result)  # ask's error covers it   # doctest: +SKIP
        """
        options = _options(locals())
        from .query.ask import ask

        return ask(self._df, prompt, **options)

    async def ask_async(
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
        **request_options: Any,
    ) -> pd.DataFrame:
        """``await df.vision.ask_async(prompt, ...)``: ``ask`` in the caller's event loop."""
        options = _options(locals())
        from .query.ask import ask_async

        return await ask_async(self._df, prompt, **options)

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
        """Submit one batch-API request per row: ``job = df.vision.submit(prompt)``;
        [`vk.submit`][visionkit.submit] with this DataFrame (``job.wait()``, ``job.result()``)."""
        options = _options(locals())
        from .batch import submit

        return submit(self._df, prompt, **options)

    # -- evaluating ------------------------------------------------------------------------
    def evaluate(
        self,
        truth: str | None = None,
        *,
        raters: Sequence[str] | None = None,
        annotations: str | os.PathLike[str] | pd.DataFrame | None = None,
        label_column: str = "label",
        prompts: str | Sequence[str] | Mapping[str, str] | None = None,
        models: str | Sequence[str] | None = None,
        max_side: int | Sequence[int | None] | None = None,
        configs: Sequence[Mapping[str, Any]] | None = None,
        schema: Any = None,
        field: str | None = None,
        normalise: Callable[[Any], Any] | None = None,
        sample: int | None = None,
        seed: int = 0,
        client: Client | str | None = None,
        image_column: str | Sequence[str] | None = None,
        system: str | None = None,
        concurrency: int = 8,
        cache: bool | str | os.PathLike[str] | Cache | None = True,
        progress: bool = True,
        resamples: int = 2000,
        confidence: float = 0.95,
        **request_options: Any,
    ) -> Evaluation:
        """Try prompts, models and image sizes on the labelled rows:
        [`vk.evaluate`][visionkit.evaluate] with this DataFrame.

        >>> ev = df.vision.evaluate("label", prompts=..., max_side=[560, 1120])  # doctest: +SKIP
        >>> ev.best("kappa", at_least=0.8)                                     # doctest: +SKIP
        """
        options = {k: v for k, v in locals().items() if k not in ("self", "truth")}
        options.update(options.pop("request_options"))
        from .evaluation import evaluate

        return evaluate(self._df, truth, **options)

    def propose_boxes(
        self,
        labels: Sequence[str],
        *,
        prompt: str | None = None,
        image_column: str | None = None,
        client: Client | str | None = None,
        **ask_kwargs: Any,
    ) -> pd.Series:
        """Boxes of ``labels`` proposed by a vision model for every image:
        [`vk.propose_boxes`][visionkit.propose_boxes] with this DataFrame."""
        from .annotation.proposals import propose_boxes

        return propose_boxes(
            self._df, labels, prompt=prompt, image_column=image_column, client=client, **ask_kwargs
        )

    # -- widgets ---------------------------------------------------------------------------
    def show(
        self,
        n: int | None = None,
        caption: str | Sequence[str] | None = None,
        *,
        thumb_size: int = 160,
        image_column: str | None = None,
    ) -> ImageGrid:
        """An inline HTML grid of thumbnails (the first ``n``, default 36) for notebooks.

        ``caption``: a column or list of columns to print under each image (default: the
        row label and file name). Unreadable images show as labelled placeholder tiles.
        """
        from .images.thumbnails import caption_frame, show_images

        images = self._df[self._column(image_column)]
        captions = caption_frame(self._df, caption)
        return show_images(images, n=n, captions=captions, thumb_size=thumb_size)

    def gallery(
        self,
        *,
        image_column: str | None = None,
        caption: str | Sequence[str] | None = None,
        page_size: int = 24,
        thumb_size: int = 160,
        filter: RowFilter = None,
    ) -> Gallery:
        """A paged, filterable, selectable [`vk.Gallery`][visionkit.Gallery] of this DataFrame's
        images."""
        options = _options(locals())
        from .widgets import Gallery

        return Gallery(self._df, **options)

    def annotate(
        self,
        *,
        label_column: str = "label",
        labels: Sequence[str] | None = None,
        multi: bool = False,
        text: bool = False,
        suggestions: str | None = None,
        save: str | Path | None = None,
        annotator: str | None = None,
        blind: bool = False,
        filter: RowFilter = "all",
        order: str = "index",
        keys: Mapping[str, str | Sequence[str]] | None = None,
        image_column: str | None = None,
        view_size: int = 640,
        sep: str = ";",
    ) -> Annotator:
        """A [`vk.Annotator`][visionkit.Annotator] writing labels to ``df[label_column]`` (in
        place)."""
        options = _options(locals())
        from .widgets import Annotator

        return Annotator(self._df, **options)

    def annotate_boxes(
        self,
        *,
        box_column: str = "boxes",
        labels: Sequence[str] = (),
        save: str | Path | None = None,
        annotator: str | None = None,
        suggestions: str | None = None,
        blind: bool = False,
        filter: RowFilter = "all",
        order: str = "index",
        keys: Mapping[str, str | Sequence[str]] | None = None,
        image_column: str | None = None,
        view_size: int = 560,
        zoom_size: int = 1600,
    ) -> BoxAnnotator:
        """A [`vk.BoxAnnotator`][visionkit.BoxAnnotator] writing boxes to ``df[box_column]`` (in
        place)."""
        options = _options(locals())
        from .widgets import BoxAnnotator

        return BoxAnnotator(self._df, **options)


def _options(arguments: dict[str, Any]) -> dict[str, Any]:
    """A method's keyword arguments (its ``locals()``) to pass on to its function: ``self``
    and ``prompt`` left out, ``**request_options``/``**ask_kwargs`` spread out again."""
    out = {k: v for k, v in arguments.items() if k not in ("self", "prompt")}
    for spread in ("request_options", "ask_kwargs"):
        out.update(out.pop(spread, {}))
    return out


@functools.cache
def _finish_ask_docs() -> None:
    """Done on the first ``df.vision`` (not at import, to keep ``import visionkit`` light):
    the parameter docs of ``ask`` (written once, in ``AskOptions``)."""
    from .query.options import parameters_doc

    for method in (VisionAccessor.ask, VisionAccessor.ask_async):
        method.__doc__ = (method.__doc__ or "") + parameters_doc(indent=8)
