"""Comparing a predicted label mask with a ground-truth mask, band by band.

Both masks are label TIFFs (or PNGs) of class ids. They may differ in
resolution by a factor (e.g. a mask predicted at 2 um/px against a level-0
truth): the prediction is resampled (nearest) onto the truth's grid, which
must have the same aspect ratio within 1%. The confusion matrix is streamed
over row bands of the truth, so memory stays bounded on any slide size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from wsi_seg.engine.metrics import ConfusionMatrix
from wsi_seg.errors import InputError

BAND_ROWS = 1024
ASPECT_TOLERANCE = 0.01


class _LabelRaster:
    """Level 0 of a label image, read in row windows without loading it whole."""

    def __init__(self, path: Path):
        self.path = path
        if not path.exists():
            raise InputError(f"{path}: no such file")
        if path.is_dir():
            raise InputError(f"{path}: is a directory, expected a label mask")
        suffix = path.suffix.lower()
        try:
            if suffix in (".tif", ".tiff"):
                import tifffile
                import zarr

                with tifffile.TiffFile(path) as tif:
                    page = tif.pages[0]
                    if page.samplesperpixel != 1:
                        raise InputError(f"{path}: not a label mask ({page.samplesperpixel} samples per pixel)")
                self._array = zarr.open(tifffile.imread(path, aszarr=True, level=0), mode="r")
            else:
                from PIL import Image

                with Image.open(path) as image:
                    if image.mode not in ("P", "L"):
                        raise InputError(f"{path}: not a label mask (image mode {image.mode})")
                    self._array = np.asarray(image)
        except InputError:
            raise
        except Exception as exc:  # unreadable file of any kind
            raise InputError(f"{path}: not a readable label mask ({exc})") from None
        self.height, self.width = int(self._array.shape[0]), int(self._array.shape[1])

    def rows(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self._array[start:stop])


@dataclass
class Evaluation:
    confusion: ConfusionMatrix
    class_names: list[str]
    pred: Path
    truth: Path
    scale: tuple[float, float]  # prediction pixels per truth pixel (x, y)

    def as_dict(self) -> dict:
        return {"pred": str(self.pred), "truth": str(self.truth), **self.confusion.as_dict(self.class_names)}


def _bands(truth: _LabelRaster) -> Iterator[tuple[int, int]]:
    for start in range(0, truth.height, BAND_ROWS):
        yield start, min(start + BAND_ROWS, truth.height)


def evaluate_masks(pred: str | os.PathLike, truth: str | os.PathLike, class_names: Sequence[str],
                   *, ignore_index: int | None = 255) -> Evaluation:
    """Confusion matrix of ``pred`` against ``truth`` over all truth pixels
    (truth pixels equal to ``ignore_index`` are skipped)."""
    pred_r, truth_r = _LabelRaster(Path(pred)), _LabelRaster(Path(truth))
    sx, sy = pred_r.width / truth_r.width, pred_r.height / truth_r.height
    if abs(sx / sy - 1) > ASPECT_TOLERANCE:
        raise InputError(f"{pred}: size {pred_r.width}x{pred_r.height} is not a scaled copy of the truth's "
                         f"{truth_r.width}x{truth_r.height} (aspect ratios differ)")
    n = len(class_names)
    cm = ConfusionMatrix(n, ignore_index=ignore_index)
    cols = np.minimum(((np.arange(truth_r.width) + 0.5) * sx).astype(np.int64), pred_r.width - 1)
    for start, stop in _bands(truth_r):
        truth_rows = truth_r.rows(start, stop)
        src = np.minimum(((np.arange(start, stop) + 0.5) * sy).astype(np.int64), pred_r.height - 1)
        pred_rows = pred_r.rows(int(src[0]), int(src[-1]) + 1)[src - src[0]][:, cols]
        for raster, values, path in ((pred_r, pred_rows, pred), (truth_r, truth_rows, truth)):
            valid = values if (ignore_index is None or raster is pred_r) else values[values != ignore_index]
            if valid.size and int(valid.max()) >= n:
                raise InputError(f"{path}: label value {int(valid.max())} is beyond the {n} classes "
                                 f"({', '.join(class_names)})")
        cm.update(pred_rows, truth_rows)
    return Evaluation(cm, list(class_names), Path(pred), Path(truth), (sx, sy))


def format_table(evaluation: Evaluation) -> str:
    """A per-class table: IoU, Dice, pixel counts; then mIoU and pixel accuracy."""
    cm = evaluation.confusion
    iou, dice = cm.iou(), cm.dice()
    truth_px = cm.matrix.sum(axis=1)
    pred_px = cm.matrix.sum(axis=0)
    width = max(12, *(len(n) for n in evaluation.class_names))
    lines = [f"{'class':<{width}}  {'IoU':>6}  {'Dice':>6}  {'truth px':>12}  {'pred px':>12}"]
    for i, name in enumerate(evaluation.class_names):
        f = (lambda v: "   n/a" if np.isnan(v) else f"{v:6.3f}")
        lines.append(f"{name:<{width}}  {f(iou[i])}  {f(dice[i])}  {int(truth_px[i]):>12,}  {int(pred_px[i]):>12,}")
    lines.append(f"{'mIoU':<{width}}  {cm.miou():6.3f}")
    lines.append(f"{'pixel accuracy':<{width}}  {cm.pixel_accuracy():6.3f}")
    return "\n".join(lines)
