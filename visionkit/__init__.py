"""visionkit: image sets in pandas DataFrames, token estimates, encoding, vision queries.

Usage:

    import visionkit as vk
    df = vk.read_images("datasets/images/")
    df.vision.estimate_tokens()          # tokens per image for inference.net
    uris = df.vision.encode()            # data URIs the provider accepts
    result = df.vision.ask("Describe this image.")   # answers, cached and resumable
    job = df.vision.submit("Describe this image.")   # the same as a batch job (cheaper, later)

This module is the public facade and nothing else. ``import visionkit`` loads the exception
tree and the provider profiles; ``df.vision`` is registered as soon as pandas is loaded
(``visionkit._register``), and every other name is imported on first use, so ``import
visionkit`` and ``visionkit --help`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._register import register_accessor
from .errors import (
    BatchWarning,
    BudgetExceeded,
    CacheError,
    CacheWarning,
    EncodeWarning,
    ImageError,
    MissingAPIKey,
    OfflineWarning,
    ReadImagesWarning,
    ReplayError,
    ReplayWarning,
    RequestError,
    RowError,
    VisionError,
)
from .providers import (
    Price,
    Provider,
    estimate_tokens,
    get_provider,
    providers,
    register_provider,
    set_price,
)

__version__ = "0.1.0"

# public name -> the module that defines it (imported on first use)
_LAZY = {
    "Agreement": ".annotation",
    "BoxAgreement": ".annotation",
    "RaterAgreement": ".annotation",
    "agreement": ".annotation",
    "box_agreement": ".annotation",
    "cohen_kappa": ".annotation",
    "fleiss_kappa": ".annotation",
    "krippendorff_alpha": ".annotation",
    "plot_agreement": ".annotation",
    "plot_box_agreement": ".annotation",
    "plot_class_agreement": ".annotation",
    "plot_rater_agreement": ".annotation",
    "rater_agreement": ".annotation",
    "read_annotations": ".annotation",
    "propose_boxes": ".annotation",
    "BOX_SCHEMA": ".annotation",
    "to_coco": ".annotation",
    "to_hf_dataset": ".annotation",
    "to_long": ".annotation",
    "to_yolo": ".annotation",
    "ask": ".query.ask",
    "BatchJob": ".batch",
    "Job": ".batch",
    "batch_jobs": ".batch",
    "submit": ".batch.submit",
    "ask_async": ".query.ask",
    "Cache": ".query.cache",
    "Client": ".query.client",
    "connect": ".query.client",
    "encode_image": ".images.encode",
    "Evaluation": ".evaluation",
    "evaluate": ".evaluation",
    "inspect_images": ".images.read",
    "read_images": ".images.read",
    "set_storage_options": ".images.remote",
    "thumbnail": ".images.thumbnails",
    "plot_token_curve": ".plots",
    "plot_tokens": ".plots",
    "plot_usage": ".plots",
    "Annotator": ".widgets",
    "BoxAnnotator": ".widgets",
    "Gallery": ".widgets",
    "TokenExplorer": ".widgets",
    "VisionAccessor": ".accessor",
    "state": "._state",
    "reset_state": "._state",
}
_SUBMODULES = ("costs", "offline", "tokens")

register_accessor()  # df.vision, once pandas is loaded

__all__ = [
    "BOX_SCHEMA",
    "Agreement",
    "Annotator",
    "BatchJob",
    "BatchWarning",
    "BoxAgreement",
    "BoxAnnotator",
    "BudgetExceeded",
    "Cache",
    "CacheError",
    "CacheWarning",
    "Client",
    "EncodeWarning",
    "Evaluation",
    "Gallery",
    "ImageError",
    "Job",
    "MissingAPIKey",
    "OfflineWarning",
    "Price",
    "Provider",
    "RaterAgreement",
    "ReadImagesWarning",
    "ReplayError",
    "ReplayWarning",
    "RequestError",
    "RowError",
    "TokenExplorer",
    "VisionAccessor",
    "VisionError",
    "agreement",
    "ask",
    "ask_async",
    "batch_jobs",
    "box_agreement",
    "cohen_kappa",
    "connect",
    "costs",
    "encode_image",
    "estimate_tokens",
    "evaluate",
    "fleiss_kappa",
    "get_provider",
    "inspect_images",
    "krippendorff_alpha",
    "offline",
    "plot_agreement",
    "plot_box_agreement",
    "plot_class_agreement",
    "plot_rater_agreement",
    "plot_token_curve",
    "plot_tokens",
    "plot_usage",
    "propose_boxes",
    "providers",
    "rater_agreement",
    "read_annotations",
    "read_images",
    "register_provider",
    "reset_state",
    "set_price",
    "set_storage_options",
    "state",
    "submit",
    "thumbnail",
    "to_coco",
    "to_hf_dataset",
    "to_long",
    "to_yolo",
    "tokens",
]

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time these load lazily
    from . import costs, offline, tokens
    from ._state import reset_state, state
    from .accessor import VisionAccessor
    from .annotation import (
        BOX_SCHEMA,
        Agreement,
        BoxAgreement,
        RaterAgreement,
        box_agreement,
        cohen_kappa,
        fleiss_kappa,
        krippendorff_alpha,
        plot_agreement,
        plot_box_agreement,
        plot_class_agreement,
        plot_rater_agreement,
        propose_boxes,
        rater_agreement,
        read_annotations,
        to_coco,
        to_hf_dataset,
        to_long,
        to_yolo,
    )

    # Not through their packages: each has a submodule of the same name, which mypy may bind
    # instead of the function.
    from .annotation.agreement import agreement
    from .batch import BatchJob, Job, batch_jobs
    from .batch.submit import submit
    from .evaluation import Evaluation, evaluate
    from .images.encode import encode_image
    from .images.read import inspect_images, read_images
    from .images.remote import set_storage_options
    from .images.thumbnails import thumbnail
    from .plots import plot_token_curve, plot_tokens, plot_usage
    from .query.ask import ask, ask_async
    from .query.cache import Cache
    from .query.client import Client, connect
    from .widgets import Annotator, BoxAnnotator, Gallery, TokenExplorer


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'visionkit' has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
