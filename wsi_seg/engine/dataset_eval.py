"""Evaluate a checkpoint on a split of Cityscapes or PASCAL VOC.

Each image is labelled the checkpoint's way (at ``resize`` = (width, height)
when given, else at its own size) and the label map is brought back to the
ground truth's size with nearest-neighbour resampling, so the metrics are
counted at the dataset's full resolution, as the official evaluations do.

Cityscapes: void pixels are ignored, always (the official protocol), also for
the ESPNet authors' 20-class weights; their class 19 (background) is then not
evaluated: a pixel predicted as background is a miss of its true class. The
class-wise mIoU is the mean over the 19 classes, the category-wise mIoU the
mean over the 7 categories (:func:`wsi_seg.data.cityscapes.category_iou`).
PASCAL VOC: 21 classes, the 255 borders ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from wsi_seg.data.image_pairs import ImagePairs, read_image
from wsi_seg.engine.metrics import ConfusionMatrix
from wsi_seg.errors import InputError

__all__ = ["DatasetEvaluation", "evaluate_pairs", "format_report"]


@dataclass
class DatasetEvaluation:
    dataset: str
    split: str
    images: int
    class_names: list[str]            # the evaluated classes
    matrix: np.ndarray                # [true, pred] over every class of the model
    resize: tuple[int, int] | None
    categories: dict[str, float | None] = field(default_factory=dict)

    @property
    def evaluated(self) -> int:
        return len(self.class_names)

    def iou(self) -> np.ndarray:
        cm = ConfusionMatrix(self.matrix.shape[0], ignore_index=None)
        cm.matrix[...] = self.matrix
        return cm.iou()[:self.evaluated]

    def miou(self) -> float:
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def category_miou(self) -> float | None:
        values = [v for v in self.categories.values() if v is not None]
        return float(np.mean(values)) if values else None

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else float("nan")

    def as_dict(self) -> dict[str, Any]:
        def clean(x):
            return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)

        out = {"dataset": self.dataset, "split": self.split, "images": self.images,
               "resize": list(self.resize) if self.resize else None,
               "miou": clean(self.miou()), "pixel_accuracy": clean(self.pixel_accuracy()),
               "iou": {n: clean(v) for n, v in zip(self.class_names, self.iou())},
               "support": {n: int(v) for n, v in zip(self.class_names, self.matrix.sum(1))},
               "class_names": self.class_names, "matrix": self.matrix.tolist()}
        if self.categories:
            out["category_miou"] = clean(self.category_miou())
            out["category_iou"] = dict(self.categories)
        return out


def evaluate_pairs(predictor, pairs: ImagePairs, class_names: Sequence[str], *,
                   resize: tuple[int, int] | None = None, ignore_index: int = 255, tile: int = 1024,
                   overlap: int = 128, progress: bool = False) -> DatasetEvaluation:
    """Run ``predictor`` on every pair and accumulate the confusion matrix."""
    from PIL import Image
    from tqdm.auto import tqdm

    from wsi_seg.inference.image import label_image

    num_classes = predictor.num_classes
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for a {num_classes}-class model")
    evaluated = list(class_names)
    if pairs.dataset == "cityscapes":
        evaluated = evaluated[:19]  # class 19 (background) of the 20-class weights is not evaluated
    cm = ConfusionMatrix(num_classes, ignore_index=ignore_index)
    for image_path, label_path in tqdm(pairs.pairs, desc=f"{pairs.dataset} {pairs.split}", unit="image",
                                       disable=not progress, leave=False):
        image, truth = read_image(image_path), pairs.read_label(label_path)
        if image.shape[:2] != truth.shape:
            raise InputError(f"{label_path}: label is {truth.shape[1]}x{truth.shape[0]} but its image "
                             f"{image_path} is {image.shape[1]}x{image.shape[0]}")
        labels = label_image(image, predictor, resize=resize, tile=tile, overlap=overlap)
        if labels.shape != truth.shape:
            labels = np.asarray(Image.fromarray(labels).resize((truth.shape[1], truth.shape[0]), Image.NEAREST))
        valid = truth[truth != ignore_index]
        if valid.size and int(valid.max()) >= len(evaluated):
            raise InputError(f"{label_path}: holds class id {int(valid.max())}, but the model has "
                             f"{len(evaluated)} evaluated classes")
        cm.update(labels, truth)
    categories = {}
    if pairs.dataset == "cityscapes":
        from wsi_seg.data.cityscapes import category_iou

        categories = category_iou(cm.matrix)
    return DatasetEvaluation(pairs.dataset, pairs.split, len(pairs), evaluated, cm.matrix.copy(), resize, categories)


def format_report(result: DatasetEvaluation) -> str:
    """A plain-text table: per-class IoU and support, mIoU, and the categories for Cityscapes."""
    def pct(v):
        return "   n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:6.2f}"

    size = f" at {result.resize[0]}x{result.resize[1]}" if result.resize else " at full size"
    width = max(len(n) for n in result.class_names + list(result.categories) + ["pixel accuracy", "mIoU (category)"])
    lines = [f"{result.dataset} {result.split}: {result.images} image(s){size}", "",
             f"{'class':<{width}}  IoU %   pixels"]
    support = result.matrix.sum(1)
    for name, iou, count in zip(result.class_names, result.iou(), support):
        lines.append(f"{name:<{width}}  {pct(float(iou))}  {int(count)}")
    lines.append(f"{'mIoU (class)':<{width}}  {pct(result.miou())}")
    lines.append(f"{'pixel accuracy':<{width}}  {pct(result.pixel_accuracy())}")
    if result.categories:
        lines += ["", f"{'category':<{width}}  IoU %"]
        lines += [f"{name:<{width}}  {pct(v)}" for name, v in result.categories.items()]
        lines.append(f"{'mIoU (category)':<{width}}  {pct(result.category_miou())}")
    return "\n".join(lines)
