"""Review exports for pathologists: overview image, area table, QuPath GeoJSON,
a pyramidal overlay TIFF and a static web viewer (``wsi-seg export``)."""

from wsi_seg.review.areas import ClassArea, class_areas
from wsi_seg.review.classes import ClassList, classes_from_checkpoint, default_classes
from wsi_seg.review.export import ExportOptions, ReviewResult, export_review

__all__ = [
    "ClassArea",
    "ClassList",
    "ExportOptions",
    "ReviewResult",
    "class_areas",
    "classes_from_checkpoint",
    "default_classes",
    "export_review",
]
