"""visionkit: image sets in pandas DataFrames, token estimates, encoding, vision queries.

Usage::

    import visionkit as vk
    df = vk.read_images("datasets/")
    df.vision.estimate_tokens()          # tokens per image for inference.net
    uris = df.vision.encode()            # data URIs the provider accepts
    result = df.vision.ask("Describe this image.")   # answers, cached and resumable
"""

from __future__ import annotations

from . import stats, tokens
from .accessor import VisionAccessor
from .annotation import (
    Agreement,
    BoxAgreement,
    RaterAgreement,
    agreement,
    box_agreement,
    cohen_kappa,
    fleiss_kappa,
    krippendorff_alpha,
    plot_agreement,
    plot_box_agreement,
    plot_class_agreement,
    plot_rater_agreement,
    rater_agreement,
)
from .annotation.savefile import read_annotations
from .ask import ask, ask_async
from .cache import Cache
from .client import Client, OfflineWarning, connect
from .display import thumbnail
from .encode import encode_image
from .errors import BudgetExceeded, ImageError, MissingAPIKey, RequestError, VisionError
from .imageinfo import inspect_images, read_images
from .plots import plot_token_curve, plot_tokens, plot_usage
from .profiles import Provider, estimate_tokens, get_provider, providers, register_provider

__version__ = "0.1.0"

__all__ = [
    "Agreement",
    "Annotator",
    "BoxAgreement",
    "BudgetExceeded",
    "Cache",
    "Client",
    "Gallery",
    "ImageError",
    "MissingAPIKey",
    "OfflineWarning",
    "Provider",
    "RaterAgreement",
    "RequestError",
    "TokenExplorer",
    "VisionAccessor",
    "VisionError",
    "agreement",
    "ask",
    "ask_async",
    "box_agreement",
    "cohen_kappa",
    "connect",
    "encode_image",
    "estimate_tokens",
    "fleiss_kappa",
    "get_provider",
    "inspect_images",
    "krippendorff_alpha",
    "plot_agreement",
    "plot_box_agreement",
    "plot_class_agreement",
    "plot_rater_agreement",
    "plot_token_curve",
    "plot_tokens",
    "plot_usage",
    "providers",
    "rater_agreement",
    "read_annotations",
    "read_images",
    "register_provider",
    "stats",
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
