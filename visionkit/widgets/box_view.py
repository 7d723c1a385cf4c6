"""``BoxView``: the BoxAnnotator's front end (``box_view.js``), and the traits it shares with it.

The browser draws the image (a preview of at most ``zoom_size`` px), the boxes, the model's
proposals and the other annotators' boxes, and turns the mouse into boxes in full-size
displayed pixels; zoom and pan (``VIEW_ACTIONS``) happen there alone. What it sends back
(a box drawn, moved, resized or picked; a key) the ``BoxAnnotator`` handles in Python.
"""

from __future__ import annotations

import anywidget
import traitlets

from ._assets import css, esm

__all__ = ["VIEW_ACTIONS", "BoxView"]

# Handled in the browser alone (they change the view, not the data).
VIEW_ACTIONS = ("zoom_in", "zoom_out", "zoom_reset", "pan")


class BoxView(anywidget.AnyWidget):
    """The BoxAnnotator's front end: the image, the boxes, the mouse and the keyboard."""

    _esm = esm("_keys.js", "box_view.js")
    _css = css("annotator.css", "box_view.css")

    image = traitlets.Bytes(b"").tag(sync=True)
    mime = traitlets.Unicode("").tag(sync=True)
    image_error = traitlets.Unicode("").tag(sync=True)
    natural_width = traitlets.Int(0).tag(sync=True)  # the full displayed size: box units
    natural_height = traitlets.Int(0).tag(sync=True)
    view_size = traitlets.Int(560).tag(sync=True)
    boxes = traitlets.List(traitlets.Dict()).tag(sync=True)
    suggestions = traitlets.List(traitlets.Dict()).tag(sync=True)
    others = traitlets.List(traitlets.Dict()).tag(sync=True)
    labels = traitlets.List(traitlets.Unicode()).tag(sync=True)
    current_label = traitlets.Unicode("").tag(sync=True)
    selected = traitlets.Int(-1).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    progress = traitlets.Unicode("").tag(sync=True)
    message = traitlets.Unicode("").tag(sync=True)
    message_kind = traitlets.Unicode("info").tag(sync=True)
    bindings = traitlets.Dict().tag(sync=True)  # key -> action
    key_help = traitlets.Unicode("").tag(sync=True)
    row_id = traitlets.Int(0).tag(sync=True)
