"""Notebook widgets: ``Gallery`` (browse), ``Annotator`` (label), ``BoxAnnotator`` (regions),
``TokenExplorer`` (costs).

Importing this package needs ``ipywidgets`` and ``anywidget`` (both visionkit dependencies);
``import visionkit`` alone does not import them: ``vk.Gallery`` loads this package on first use.
"""

from __future__ import annotations

from .annotator import Annotator
from .box_annotator import BoxAnnotator
from .gallery import Gallery
from .token_explorer import TokenExplorer, fit_budget

__all__ = ["Annotator", "BoxAnnotator", "Gallery", "TokenExplorer", "fit_budget"]
