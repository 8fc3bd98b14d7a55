"""Segmentation metrics from one confusion matrix.

A :class:`ConfusionMatrix` accumulates ``matrix[true, pred]`` pixel counts
with a single ``bincount`` per update (the torchvision reference habit);
IoU, Dice and pixel accuracy are derived from it. Matrices from several
batches, workers or ranks combine by addition (:meth:`merge`, or an
all-reduce of :attr:`matrix`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

__all__ = ["ConfusionMatrix"]


def _as_numpy(values) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().cpu().numpy()
    return np.asarray(values)


class ConfusionMatrix:
    """Pixel counts ``matrix[true, pred]`` over ``num_classes`` classes.

    Target pixels equal to ``ignore_index`` are skipped. Class ids outside
    ``[0, num_classes)`` (in prediction or target) raise ``ValueError``.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255):
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def reset(self) -> None:
        self.matrix[...] = 0

    def update(self, pred, target) -> None:
        """Add the pixels of one batch; ``pred`` and ``target`` hold class ids
        and have the same shape (any shape)."""
        pred = _as_numpy(pred)
        target = _as_numpy(target)
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {pred.shape} differs from target shape {target.shape}")
        pred = pred.reshape(-1).astype(np.int64, copy=False)
        target = target.reshape(-1).astype(np.int64, copy=False)
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            if not keep.all():
                pred = pred[keep]
                target = target[keep]
        n = self.num_classes
        for what, values in (("target", target), ("prediction", pred)):
            if values.size and (values.min() < 0 or values.max() >= n):
                bad = values[(values < 0) | (values >= n)][0]
                raise ValueError(f"{what} class id {int(bad)} is outside [0, {n})")
        counts = np.bincount(target * n + pred, minlength=n * n)
        self.matrix += counts.reshape(n, n)

    def merge(self, other: "ConfusionMatrix") -> None:
        """Add another matrix over the same classes."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge a {other.num_classes}-class matrix into a {self.num_classes}-class one")
        self.matrix += other.matrix

    @property
    def total(self) -> int:
        return int(self.matrix.sum())

    def iou(self) -> np.ndarray:
        """Per-class intersection over union; nan for a class absent from
        both prediction and target."""
        m = self.matrix.astype(np.float64)
        tp = np.diag(m)
        union = m.sum(0) + m.sum(1) - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)

    def miou(self) -> float:
        """Mean IoU over classes that occur (nan-mean); nan for an empty matrix."""
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def dice(self) -> np.ndarray:
        """Per-class Dice (F1) coefficient; nan for classes absent in both."""
        m = self.matrix.astype(np.float64)
        tp = np.diag(m)
        denom = m.sum(0) + m.sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), np.nan)

    def pixel_accuracy(self) -> float:
        """Fraction of counted pixels predicted correctly; nan when empty."""
        total = self.matrix.sum()
        return float(np.trace(self.matrix) / total) if total else float("nan")

    def as_dict(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """A JSON-ready summary (nan becomes ``None``)."""
        names = list(class_names) if class_names is not None else [str(i) for i in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise ValueError(f"{len(names)} class names for {self.num_classes} classes")

        def clean(x: float):
            x = float(x)
            return None if math.isnan(x) else x

        iou, dice = self.iou(), self.dice()
        return {
            "miou": clean(self.miou()),
            "pixel_accuracy": clean(self.pixel_accuracy()),
            "pixels": self.total,
            "iou": {name: clean(v) for name, v in zip(names, iou)},
            "dice": {name: clean(v) for name, v in zip(names, dice)},
            "support": {name: int(v) for name, v in zip(names, self.matrix.sum(1))},
            "class_names": names,
            "matrix": self.matrix.tolist(),
        }

    def __repr__(self) -> str:
        return f"ConfusionMatrix(num_classes={self.num_classes}, pixels={self.total}, miou={self.miou():.4f})"
