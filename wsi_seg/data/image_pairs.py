"""Image/label file pairs (Cityscapes, PASCAL VOC) as a torch Dataset.

:func:`open_pairs` finds a split's pairs in a dataset's official layout and
the reader that turns its label files into class ids; :class:`ImagePairDataset`
reads them, resizes to a fixed size (image bilinear, label nearest), augments
and normalises like the patch dataset. Items are addressed by an integer or an
``(index, seed)`` pair, the seed driving that sample's augmentation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch.utils.data import Dataset

from wsi_seg.data.transforms import normalize
from wsi_seg.errors import InputError

__all__ = ["IMAGE_DATASETS", "ImagePairs", "ImagePairDataset", "open_pairs", "read_image", "pairs_histogram"]

IMAGE_DATASETS = ("cityscapes", "voc")
LabelReader = Callable[[Path], np.ndarray]
Transform = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


@dataclass
class ImagePairs:
    """One split of a dataset: ``(image, label)`` paths and the label reader."""

    dataset: str
    split: str
    pairs: list[tuple[Path, Path]]
    read_label: LabelReader

    def __len__(self) -> int:
        return len(self.pairs)


def open_pairs(dataset: str, root: str | Path, split: str, num_classes: int, *, ignore_index: int = 255,
               sbd_root: str | Path | None = None, void_as_background: bool = True) -> ImagePairs:
    """The pairs of ``split`` of ``dataset`` under ``root``. Cityscapes with 20
    classes maps void to class 19 (the ESPNet authors' training labels) unless
    ``void_as_background`` is False (evaluation: void ignored, as officially)."""
    if dataset == "cityscapes":
        from wsi_seg.data.cityscapes import CityscapesLabels, cityscapes_pairs

        if num_classes not in (19, 20):
            raise InputError(f"Cityscapes has 19 classes (20 with background), but {num_classes} were given")
        if sbd_root is not None:
            raise InputError("sbd_root applies to PASCAL VOC, not Cityscapes")
        reader = CityscapesLabels(num_classes if void_as_background else 19, ignore_index)
        return ImagePairs(dataset, split, cityscapes_pairs(root, split), reader)
    if dataset == "voc":
        from wsi_seg.data.voc import NUM_CLASSES, read_voc_label, voc_pairs

        if num_classes != NUM_CLASSES:
            raise InputError(f"PASCAL VOC has {NUM_CLASSES} classes, but {num_classes} were given")
        return ImagePairs(dataset, split, voc_pairs(root, split, sbd_root=sbd_root), read_voc_label)
    raise InputError(f"unknown dataset {dataset!r}; choose from {', '.join(IMAGE_DATASETS)}")


def read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"{path}: cannot read the image ({exc})") from None


def _resize(image: np.ndarray, label: np.ndarray, size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    if image.shape[:2] != label.shape:
        raise ValueError(f"image {image.shape[:2]} and label {label.shape} differ in size")
    if size is None or (image.shape[1], image.shape[0]) == tuple(size):
        return image, label
    image = np.asarray(Image.fromarray(image).resize(tuple(size), Image.BILINEAR))
    label = np.asarray(Image.fromarray(label).resize(tuple(size), Image.NEAREST))
    return image, label


def pairs_histogram(pairs: ImagePairs, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """Pixel counts per class over the labels of ``pairs`` (``ignore_index`` skipped);
    a class id outside ``[0, num_classes)`` is an :class:`InputError` naming the file."""
    counts = np.zeros(num_classes, np.int64)
    for _, label_path in pairs.pairs:
        found = np.bincount(pairs.read_label(label_path).reshape(-1), minlength=256)
        found[ignore_index] = 0
        bad = np.flatnonzero(found[num_classes:])
        if bad.size:
            raise InputError(f"{label_path}: holds class id {int(bad[0]) + num_classes}, but there are "
                             f"{num_classes} classes (ids 0..{num_classes - 1})")
        counts += found[:num_classes]
    return counts


class ImagePairDataset(Dataset):
    """``(image float32 (3, H, W), label int64 (H, W))`` for each pair, resized to
    ``size`` = (width, height) when given, then ``transform(image, label, rng)``."""

    def __init__(self, pairs: ImagePairs, *, normalization: Mapping[str, Any],
                 size: Sequence[int] | None = None, transform: Transform | None = None):
        self.pairs = pairs
        self.normalization = dict(normalization)
        self.size = tuple(int(v) for v in size) if size is not None else None
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The uint8 image and label of item ``index``, resized to ``size``."""
        image_path, label_path = self.pairs.pairs[index]
        image, label = read_image(image_path), self.pairs.read_label(label_path)
        if image.shape[:2] != label.shape:
            raise InputError(f"{label_path}: label is {label.shape[1]}x{label.shape[0]} but its image "
                             f"{image_path} is {image.shape[1]}x{image.shape[0]}")
        return _resize(image, label, self.size)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        if not 0 <= int(index) < len(self):
            raise IndexError(index)
        image, label = self.read(int(index))
        if self.transform is not None:
            image, label = self.transform(image, label, np.random.default_rng(seed))
        return (torch.from_numpy(normalize(np.ascontiguousarray(image), self.normalization)),
                torch.from_numpy(np.ascontiguousarray(label).astype(np.int64)))
