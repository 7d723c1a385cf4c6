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
from .errors import BudgetExceeded, ImageError, MissingAPIKey, RequestError, VisionError
from .imageinfo import inspect_images, read_images
from .profiles import Provider, estimate_tokens, get_provider, providers, register_provider

__version__ = "0.1.0"

__all__ = [
    "BudgetExceeded",
    "ImageError",
    "MissingAPIKey",
    "Provider",
    "RequestError",
    "VisionAccessor",
    "VisionError",
    "estimate_tokens",
    "get_provider",
    "inspect_images",
    "providers",
    "read_images",
    "register_provider",
    "tokens",
]
