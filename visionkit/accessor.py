"""The ``df.vision`` DataFrame accessor: validates the image column, delegates, keeps the index.

Registered when ``visionkit`` is imported::

    import visionkit as vk
    df = vk.read_images("datasets/images/")
    df.vision.estimate_tokens()
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from .providers import DEFAULT_PROVIDER

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from .images.thumbnails import ImageGrid
    from .providers import Provider
    from .widgets import Annotator, Gallery

__all__ = ["VisionAccessor"]


@pd.api.extensions.register_dataframe_accessor("vision")
class VisionAccessor:
    """Image-set methods on any DataFrame with an image column (``image`` or ``path``)."""

    def __init__(self, df: pd.DataFrame) -> None:
        _borrow_ask_signatures()
        self._df = df

    def _column(self, column: str | None) -> str:
        """The image column: ``column`` if given, else ``image`` if present, else ``path``."""
        from .images.cells import image_column

        return image_column(self._df, column)

    def estimate_tokens(
        self, provider: str | Provider = DEFAULT_PROVIDER, *, column: str | None = None
    ) -> pd.Series:
        """Estimated image tokens per row, as an ``Int64`` Series (NA where the size is unknown).

        Uses the ``width``/``height`` columns when present (as ``read_images`` gives them),
        otherwise inspects the image column.
        """
        from .providers import estimate_tokens

        df = self._df
        if column is None and {"width", "height"} <= set(df.columns):
            sizes = df
        else:
            sizes = self.inspect(column=column)
        out = estimate_tokens(sizes["width"], sizes["height"], provider)
        return out.rename("estimated_tokens")

    def inspect(self, *, column: str | None = None) -> pd.DataFrame:
        """The same columns as ``read_images`` for this DataFrame's image column, same index."""
        from .images.read import inspect_images

        col = self._column(column)
        return inspect_images(self._df[col])

    def plot_tokens(
        self,
        provider: str | Provider | None = None,
        *,
        column: str | None = None,
        resize_to: int | str | None = "floor",
        ax: Axes | None = None,
        **kwargs: Any,
    ) -> Axes:
        """Each image at (width, height) over the provider's token map; returns the Axes.

        See :func:`visionkit.plots.plot_tokens`. Uses ``width``/``height`` when present,
        otherwise inspects the image column.
        """
        from .plots import plot_tokens

        data = self._df
        if column is not None or not {"width", "height"} <= set(data.columns):
            data = self.inspect(column=column) if len(data) else data
        return plot_tokens(data, provider, resize_to=resize_to, ax=ax, **kwargs)

    def ask(self, prompt: str, **kwargs: Any) -> pd.DataFrame:
        """Ask a vision model about each row's image; see ``visionkit.ask`` for the options.

        >>> result = df.vision.ask("Is this a {label}?", concurrency=16)   # doctest: +SKIP
        >>> df.drop(columns="error").join(result)  # ask's error covers it   # doctest: +SKIP
        """
        from .query.ask import ask

        return ask(self._df, prompt, **kwargs)

    async def ask_async(self, prompt: str, **kwargs: Any) -> pd.DataFrame:
        """``await df.vision.ask_async(prompt, ...)``: ``ask`` in the caller's event loop."""
        from .query.ask import ask_async

        return await ask_async(self._df, prompt, **kwargs)

    def submit(self, prompt: str, **kwargs: Any) -> Any:
        """Submit one batch-API request per row: ``job = df.vision.submit(prompt)``; see
        ``visionkit.batch.submit`` for the options, ``job.wait()`` and ``job.result()``."""
        from .batch import submit

        return submit(self._df, prompt, **kwargs)

    def encode(
        self,
        provider: str | Provider = DEFAULT_PROVIDER,
        *,
        column: str | None = None,
        **kwargs: Any,
    ) -> pd.Series:
        """A Series of ``data:`` URIs the provider accepts, same index (NA where a row fails).

        Takes ``visionkit.images.encode.encode_series``' options (shown by help() and
        Shift+Tab), plus ``column``. One warning names the failing rows; ``errors="raise"``
        raises ``ImageError`` naming the first. EXIF (GPS included), XMP and comments are not
        sent unless ``strip_metadata=False``. ``progress=False`` hides the progress bar (shown
        only when encoding takes over a second).
        """
        from .images.encode import encode_series

        return encode_series(self._df[self._column(column)], provider=provider, **kwargs)

    def show(
        self,
        n: int | None = None,
        caption: str | Sequence[str] | None = None,
        *,
        size: int = 160,
        column: str | None = None,
    ) -> ImageGrid:
        """An inline HTML grid of thumbnails (the first ``n``, default 36) for notebooks.

        ``caption``: a column or list of columns to print under each image (default: the
        row label and file name). Unreadable images show as labelled placeholder tiles.
        """
        from .images.thumbnails import caption_frame, show_images

        images = self._df[self._column(column)]
        return show_images(images, n=n, captions=caption_frame(self._df, caption), size=size)

    def gallery(
        self,
        caption: str | Sequence[str] | None = None,
        *,
        column: str | None = None,
        **kwargs: Any,
    ) -> Gallery:
        """A paged, filterable, selectable ``visionkit.Gallery`` of this DataFrame's images."""
        from .widgets import Gallery

        return Gallery(self._df, column=self._column(column), caption=caption, **kwargs)

    def annotate(
        self,
        column: str = "label",
        options: Sequence[str] | None = None,
        *,
        image_column: str | None = None,
        **kwargs: Any,
    ) -> Annotator:
        """A ``visionkit.Annotator`` writing labels to ``df[column]`` (in place)."""
        from .widgets import Annotator

        return Annotator(
            self._df, column, options, image_column=self._column(image_column), **kwargs
        )


def _borrow_signature(
    method: Any, function: Any, *, doc: bool = True, column: bool = False, first: str = ""
) -> None:
    """Give ``method`` the parameters (and docstring) of ``function`` less its first one, the
    data, so help() and Jupyter's Shift+Tab show every option in one place. ``column`` adds
    the accessor's own ``column=`` keyword; ``first`` names a keyword the method also takes
    positionally (``df.vision.encode("openai")``)."""
    sig = inspect.signature(function)
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    rest = list(sig.parameters.values())[1:]
    lead = [p.replace(kind=p.POSITIONAL_OR_KEYWORD) for p in rest if p.name == first]
    params += lead + [p for p in rest if p.name != first]
    if column:
        keyword = inspect.Parameter(
            "column", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="str | None"
        )
        at = next((i for i, p in enumerate(params) if p.kind is p.VAR_KEYWORD), len(params))
        params.insert(at, keyword)
    method.__signature__ = sig.replace(parameters=params)
    if doc:
        method.__doc__ = function.__doc__


@functools.cache
def _borrow_ask_signatures() -> None:
    """Done on the first ``df.vision`` (not at import: ``ask`` pulls in the query engine)."""
    from .batch import submit
    from .images.encode import encode_series
    from .query.ask import ask, ask_async

    _borrow_signature(VisionAccessor.ask, ask)
    _borrow_signature(VisionAccessor.ask_async, ask_async)
    _borrow_signature(VisionAccessor.submit, submit)
    _borrow_signature(
        VisionAccessor.encode, encode_series, doc=False, column=True, first="provider"
    )
