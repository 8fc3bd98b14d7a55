"""Cityscapes in its official layout: image/label pairs, label ids, categories.

Layout (``ROOT`` is the folder holding ``leftImg8bit`` and ``gtFine``)::

    ROOT/leftImg8bit/{train,val,test}/<city>/<frame>_leftImg8bit.png
    ROOT/gtFine/{train,val,test}/<city>/<frame>_gtFine_labelIds.png

Labels are read from the ``labelIds`` PNGs and mapped to the 19 official train
ids; every other label id (void, and the classes not evaluated such as parking
or caravan) becomes 255 (ignored). The ESPNet authors' released weights have a
20th class, 19 = background: their training turned the ignored pixels into that
class, which :func:`label_lookup` reproduces with ``num_classes=20``.

Categories (the coarse level of Table 4 of the ESPNet paper) group the train
ids: flat, construction, object, nature, sky, human, vehicle. Background is not
a category; see :func:`category_iou`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsi_seg.errors import InputError

__all__ = ["LABELS", "CATEGORIES", "SPLITS", "label_lookup", "cityscapes_pairs", "CityscapesLabels",
           "category_matrix", "category_iou"]

SPLITS = ("train", "val", "test")
IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"

# (label id, name, train id or 255, category) of the official Cityscapes label table.
LABELS = (
    (0, "unlabeled", 255, "void"), (1, "ego vehicle", 255, "void"), (2, "rectification border", 255, "void"),
    (3, "out of roi", 255, "void"), (4, "static", 255, "void"), (5, "dynamic", 255, "void"),
    (6, "ground", 255, "void"), (7, "road", 0, "flat"), (8, "sidewalk", 1, "flat"), (9, "parking", 255, "flat"),
    (10, "rail track", 255, "flat"), (11, "building", 2, "construction"), (12, "wall", 3, "construction"),
    (13, "fence", 4, "construction"), (14, "guard rail", 255, "construction"), (15, "bridge", 255, "construction"),
    (16, "tunnel", 255, "construction"), (17, "pole", 5, "object"), (18, "polegroup", 255, "object"),
    (19, "traffic light", 6, "object"), (20, "traffic sign", 7, "object"), (21, "vegetation", 8, "nature"),
    (22, "terrain", 9, "nature"), (23, "sky", 10, "sky"), (24, "person", 11, "human"), (25, "rider", 12, "human"),
    (26, "car", 13, "vehicle"), (27, "truck", 14, "vehicle"), (28, "bus", 15, "vehicle"),
    (29, "caravan", 255, "vehicle"), (30, "trailer", 255, "vehicle"), (31, "train", 16, "vehicle"),
    (32, "motorcycle", 17, "vehicle"), (33, "bicycle", 18, "vehicle"),
)

# The seven categories and the train ids in each.
CATEGORIES = (
    ("flat", (0, 1)), ("construction", (2, 3, 4)), ("object", (5, 6, 7)), ("nature", (8, 9)), ("sky", (10,)),
    ("human", (11, 12)), ("vehicle", (13, 14, 15, 16, 17, 18)),
)


def label_lookup(num_classes: int = 19, ignore_index: int = 255) -> np.ndarray:
    """A 256-entry uint8 table from label id to train id. ``num_classes=19``: the
    official mapping, unmapped ids -> ``ignore_index``; ``num_classes=20``: the
    ESPNet authors' variant, unmapped ids -> 19 (background)."""
    if num_classes not in (19, 20):
        raise InputError(f"Cityscapes has 19 classes (or 20 with background), not {num_classes}")
    fill = 19 if num_classes == 20 else ignore_index
    table = np.full(256, fill, np.uint8)
    for label_id, _, train_id, _ in LABELS:
        if train_id != 255:
            table[label_id] = train_id
    return table


class CityscapesLabels:
    """Reads a ``*_gtFine_labelIds.png`` as (H, W) uint8 train ids (picklable, for workers)."""

    def __init__(self, num_classes: int = 19, ignore_index: int = 255):
        self.num_classes = num_classes
        self.table = label_lookup(num_classes, ignore_index)

    def __call__(self, path: Path) -> np.ndarray:
        from PIL import Image

        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16"):
                raise InputError(f"{path}: expected a single-channel label id PNG, got mode {im.mode}")
            ids = np.asarray(im)
        if ids.max(initial=0) > 255 or ids.min(initial=0) < 0:
            raise InputError(f"{path}: label ids outside 0..255")
        return self.table[ids.astype(np.uint8)]


def cityscapes_pairs(root: str | Path, split: str) -> list[tuple[Path, Path]]:
    """``(image, labelIds)`` paths of a split, sorted by city and frame. A missing
    split folder or a missing label file is an :class:`InputError` naming it."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: dataset root not found")
    images_dir = root / "leftImg8bit" / split
    if not images_dir.is_dir():
        raise InputError(f"{images_dir}: split folder not found (expected the official Cityscapes layout "
                         f"leftImg8bit/{{train,val,test}}/<city>/*{IMAGE_SUFFIX})")
    images = sorted(images_dir.glob(f"*/*{IMAGE_SUFFIX}"))
    if not images:
        raise InputError(f"{images_dir}: no *{IMAGE_SUFFIX} images in its city folders")
    pairs = []
    for image in images:
        frame = image.name[:-len(IMAGE_SUFFIX)]
        label = root / "gtFine" / split / image.parent.name / f"{frame}{LABEL_SUFFIX}"
        if not label.is_file():
            raise InputError(f"{label}: label file not found (for {image})")
        pairs.append((image, label))
    return pairs


def category_matrix(matrix: np.ndarray) -> np.ndarray:
    """Sum a train-id confusion matrix ``[true, pred]`` (19 or 20 classes) into an
    8 x 8 category matrix: the seven categories, then index 7 for background."""
    matrix = np.asarray(matrix)
    n = matrix.shape[0]
    if matrix.shape != (n, n) or n not in (19, 20):
        raise ValueError(f"expected a 19x19 or 20x20 Cityscapes confusion matrix, got {matrix.shape}")
    to_category = np.full(n, len(CATEGORIES), np.int64)
    for index, (_, ids) in enumerate(CATEGORIES):
        to_category[list(ids)] = index
    k = len(CATEGORIES) + 1
    out = np.zeros((k, k), np.int64)
    np.add.at(out, (to_category[:, None].repeat(n, 1), to_category[None, :].repeat(n, 0)), matrix)
    return out


def category_iou(matrix: np.ndarray) -> dict[str, float | None]:
    """IoU of each of the seven categories from a train-id confusion matrix.

    Background is not a category: a pixel of a category predicted as background
    is a miss of that category; pixels whose truth is background do not count
    (they are void in the official evaluation). ``None`` for a category absent
    from both truth and prediction."""
    cm = category_matrix(matrix).astype(np.float64)
    k = len(CATEGORIES)
    result: dict[str, float | None] = {}
    for index, (name, _) in enumerate(CATEGORIES):
        tp = cm[index, index]
        fn = cm[index].sum() - tp
        fp = cm[:k, index].sum() - tp
        union = tp + fn + fp
        result[name] = float(tp / union) if union > 0 else None
    return result
