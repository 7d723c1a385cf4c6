"""Annotation data: agreement statistics, boxes, the save file, and exports.

One job per module: ``agreement`` (human labels vs a model's free-text answers),
``reliability`` (Cohen's kappa, Fleiss' kappa, Krippendorff's alpha for several raters),
``boxes`` (the box cell format, IoU matching, precision/recall), ``proposals`` (boxes from a
vision model, mapped onto the full-size image), ``exports`` (COCO, YOLO, Hugging Face datasets,
long form), ``plots`` (their figures),
``savefile`` (the annotators' long-form save file). The widgets that make the data live in
``visionkit.widgets``.
"""

from __future__ import annotations

from .agreement import Agreement, agreement, match_label, normalise
from .boxes import BoxAgreement, box_agreement, iou, match_boxes, parse_boxes
from .exports import to_coco, to_hf_dataset, to_long, to_yolo
from .plots import plot_agreement, plot_box_agreement, plot_class_agreement, plot_rater_agreement
from .proposals import BOX_SCHEMA, boxes_from_answer, propose_boxes
from .reliability import (
    RaterAgreement,
    cohen_kappa,
    fleiss_kappa,
    krippendorff_alpha,
    rater_agreement,
)
from .savefile import read_annotations

__all__ = [
    "BOX_SCHEMA",
    "Agreement",
    "BoxAgreement",
    "RaterAgreement",
    "agreement",
    "box_agreement",
    "boxes_from_answer",
    "cohen_kappa",
    "fleiss_kappa",
    "iou",
    "krippendorff_alpha",
    "match_boxes",
    "match_label",
    "normalise",
    "parse_boxes",
    "plot_agreement",
    "plot_box_agreement",
    "plot_class_agreement",
    "plot_rater_agreement",
    "propose_boxes",
    "rater_agreement",
    "read_annotations",
    "to_coco",
    "to_hf_dataset",
    "to_long",
    "to_yolo",
]
