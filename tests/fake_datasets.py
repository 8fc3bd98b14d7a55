"""Tiny Cityscapes and PASCAL VOC trees in the official layouts, with known labels.

Images are coloured by class (plus a little noise), so a model can learn them
in a few steps; labels follow fixed layouts whose pixel counts tests can predict.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# Cityscapes: label id -> colour of the fake image.
CITY_COLORS = {23: (70, 130, 180), 11: (70, 70, 70), 21: (107, 142, 35), 7: (128, 64, 128), 26: (0, 0, 142),
               9: (250, 170, 160), 1: (10, 10, 10)}
CITY_SIZE = (128, 64)  # width, height
CITY_FRAMES = {"train": [("aachen", 0), ("aachen", 1), ("bochum", 0)], "val": [("frankfurt", 0), ("lindau", 0)],
               "test": [("berlin", 0)]}


def city_label_ids(shift: int = 0) -> np.ndarray:
    """(64, 128) label ids: sky, building | vegetation, road with a car, a parking strip, the ego vehicle."""
    ids = np.empty((64, 128), np.uint8)
    ids[:16] = 23                      # sky -> 10
    ids[16:32, :64] = 11               # building -> 2
    ids[16:32, 64:] = 21               # vegetation -> 8
    ids[32:56] = 7                     # road -> 0
    ids[36:48, 16 + shift:48 + shift] = 26  # car -> 13
    ids[32:56, 120:] = 9               # parking -> ignored (255)
    ids[56:] = 1                       # ego vehicle -> void (255, or 19 = background)
    return ids


def _image(ids: np.ndarray, colors: dict[int, tuple[int, int, int]], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    table = np.zeros((256, 3), np.int16)
    for key, color in colors.items():
        table[key] = color
    image = table[ids] + rng.integers(-8, 9, ids.shape + (3,))
    return np.clip(image, 0, 255).astype(np.uint8)


def make_cityscapes(root: Path) -> Path:
    for split, frames in CITY_FRAMES.items():
        for i, (city, frame) in enumerate(frames):
            stem = f"{city}_{frame:06d}_000019"
            ids = city_label_ids(shift=8 * i)
            images = root / "leftImg8bit" / split / city
            labels = root / "gtFine" / split / city
            images.mkdir(parents=True, exist_ok=True)
            labels.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_image(ids, CITY_COLORS, seed=i)).save(images / f"{stem}_leftImg8bit.png")
            Image.fromarray(ids, mode="L").save(labels / f"{stem}_gtFine_labelIds.png")
            Image.fromarray(ids, mode="L").save(labels / f"{stem}_gtFine_instanceIds.png")  # ignored
    return root


# VOC: class id -> colour of the fake image (255 = the object borders).
VOC_COLORS = {0: (30, 30, 30), 15: (200, 160, 120), 12: (120, 80, 40), 255: (200, 160, 120)}
VOC_IDS = {"train": ["2007_000032", "2007_000039", "2008_000002"], "val": ["2007_000033", "2009_000001"]}


def voc_label(index: int, size: tuple[int, int]) -> np.ndarray:
    """Background, a person box with a 255 border, a dog box in odd images."""
    width, height = size
    label = np.zeros((height, width), np.uint8)
    label[8:40, 8:40] = 255
    label[10:38, 10:38] = 15
    if index % 2:
        label[height - 20:height - 4, width - 30:width - 6] = 12
    return label


def _palette() -> list[int]:
    from wsi_seg.models.checkpoint import default_colors

    colors = np.zeros((256, 3), np.uint8)
    colors[:21] = default_colors(21)
    colors[255] = (224, 224, 192)
    return colors.reshape(-1).tolist()


def make_voc(root: Path) -> Path:
    base = root / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    sizes = [(96, 64), (80, 72)]
    for split, ids in VOC_IDS.items():
        (base / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
        for i, item in enumerate(ids):
            label = voc_label(i, sizes[i % 2])
            Image.fromarray(_image(label, VOC_COLORS, seed=i)).save(base / "JPEGImages" / f"{item}.jpg", quality=95)
            png = Image.fromarray(label, mode="L").convert("P")
            png.putpalette(_palette())
            png.save(base / "SegmentationClass" / f"{item}.png")
    return base


def make_sbd(root: Path) -> Path:
    """An SBD release with one image also in VOC train, one in VOC val and two new ones."""
    from scipy.io import savemat

    dataset = root / "dataset"
    (dataset / "img").mkdir(parents=True)
    (dataset / "cls").mkdir()
    train, val = ["2007_000032", "2010_000001"], ["2007_000033", "2010_000002"]
    (dataset / "train.txt").write_text("\n".join(train) + "\n")
    (dataset / "val.txt").write_text("\n".join(val) + "\n")
    for i, item in enumerate(train + val):
        label = voc_label(i + 1, (96, 64))
        Image.fromarray(_image(label, VOC_COLORS, seed=i)).save(dataset / "img" / f"{item}.jpg")
        savemat(dataset / "cls" / f"{item}.mat", {"GTcls": {"Segmentation": label, "CategoriesPresent": [15]}})
    return root
