"""visionkit: image sets in pandas DataFrames, token estimates, encoding, vision queries.

Usage::

    import visionkit as vk
    df = vk.read_images("datasets/")
    df.vision.estimate_tokens()          # tokens per image for inference.net
    uris = df.vision.encode()            # data URIs the provider accepts
"""

from __future__ import annotations

from . import tokens
from .accessor import VisionAccessor
from .agreement import Agreement, agreement, plot_agreement
from .display import thumbnail
from .encode import encode_image
from .errors import BudgetExceeded, ImageError, MissingAPIKey, RequestError, VisionError
from .imageinfo import inspect_images, read_images
from .profiles import Provider, estimate_tokens, get_provider, providers, register_provider

__version__ = "0.1.0"

__all__ = [
    "Agreement",
    "Annotator",
    "BudgetExceeded",
    "Gallery",
    "ImageError",
    "MissingAPIKey",
    "Provider",
    "RequestError",
    "TokenExplorer",
    "VisionAccessor",
    "VisionError",
    "agreement",
    "encode_image",
    "estimate_tokens",
    "get_provider",
    "inspect_images",
    "plot_agreement",
    "providers",
    "read_images",
    "register_provider",
    "thumbnail",
    "tokens",
]

_WIDGETS = ("Annotator", "Gallery", "TokenExplorer")


def __getattr__(name: str):
    # The widgets import ipywidgets and anywidget; load them on first use, not on import.
    if name in _WIDGETS:
        from . import widgets

        return getattr(widgets, name)
    raise AttributeError(f"module 'visionkit' has no attribute {name!r}")
