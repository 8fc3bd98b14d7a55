"""PASCAL VOC 2012 segmentation in its official layout, optionally with SBD.

Layout (``ROOT`` is ``VOC2012``, or a folder holding ``VOC2012`` or
``VOCdevkit/VOC2012``)::

    ROOT/JPEGImages/<id>.jpg
    ROOT/SegmentationClass/<id>.png          palette PNG: pixel values are class ids
    ROOT/ImageSets/Segmentation/{train,val,trainval}.txt

21 classes (0 background ... 20 tvmonitor); 255 (the object borders) is ignored.

The Semantic Boundaries Dataset (Hariharan et al.) adds training images in its
release layout::

    SBD_ROOT/img/<id>.jpg, SBD_ROOT/cls/<id>.mat (GTcls.Segmentation), SBD_ROOT/{train,val}.txt

(``SBD_ROOT`` may also be the folder holding ``dataset/``.) With SBD the
training split is VOC train plus every SBD image (train and val) that is not in
VOC val, the usual "train_aug" set; VOC's own label is used where both have one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsi_seg.errors import InputError

__all__ = ["NUM_CLASSES", "voc_root", "voc_pairs", "read_voc_label"]

NUM_CLASSES = 21


def voc_root(root: str | Path) -> Path:
    """The folder holding ``JPEGImages`` (``root`` itself, ``root/VOC2012`` or ``root/VOCdevkit/VOC2012``)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: dataset root not found")
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise InputError(f"{root}: no JPEGImages folder (expected the PASCAL VOC layout JPEGImages/, "
                     f"SegmentationClass/, ImageSets/Segmentation/)")


def _ids(list_file: Path) -> list[str]:
    if not list_file.is_file():
        raise InputError(f"{list_file}: split list not found")
    ids = [line.split()[0] for line in list_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not ids:
        raise InputError(f"{list_file}: the split list is empty")
    return ids


def _sbd_root(root: str | Path) -> Path:
    root = Path(root)
    for candidate in (root, root / "dataset"):
        if (candidate / "img").is_dir() and (candidate / "cls").is_dir():
            return candidate
    raise InputError(f"{root}: no img/ and cls/ folders (expected the SBD layout dataset/img, dataset/cls)")


def voc_pairs(root: str | Path, split: str, *, sbd_root: str | Path | None = None) -> list[tuple[Path, Path]]:
    """``(image, label)`` paths of a split in list order. A missing split list or a
    missing image or label is an :class:`InputError` naming the first missing file.
    ``sbd_root`` adds SBD's images to the ``train`` split (see the module docstring)."""
    base = voc_root(root)
    ids = _ids(base / "ImageSets" / "Segmentation" / f"{split}.txt")
    pairs = []
    for item in ids:
        pairs.append(_existing_pair(base / "JPEGImages" / f"{item}.jpg", base / "SegmentationClass" / f"{item}.png",
                                    f"ImageSets/Segmentation/{split}.txt"))
    if sbd_root is not None and split == "train":
        sbd = _sbd_root(sbd_root)
        val_list = base / "ImageSets" / "Segmentation" / "val.txt"
        exclude = set(ids) | (set(_ids(val_list)) if val_list.is_file() else set())
        extra = []
        for name in ("train.txt", "val.txt"):
            extra += [i for i in _ids(sbd / name) if i not in exclude]
        for item in sorted(set(extra)):
            pairs.append(_existing_pair(sbd / "img" / f"{item}.jpg", sbd / "cls" / f"{item}.mat",
                                        f"{sbd.name}/train.txt or val.txt"))
    return pairs


def _existing_pair(image: Path, label: Path, listed_in: str) -> tuple[Path, Path]:
    """The pair, or an :class:`InputError` naming the first of the two that is missing."""
    for path, kind in ((image, "image"), (label, "label")):
        if not path.is_file():
            raise InputError(f"{path}: {kind} file not found (listed in {listed_in})")
    return image, label


def read_voc_label(path: Path) -> np.ndarray:
    """(H, W) uint8 class ids from a VOC palette PNG (or a single-channel PNG) or an SBD ``.mat``."""
    path = Path(path)
    if path.suffix.lower() == ".mat":
        from scipy.io import loadmat

        try:
            gt = loadmat(path, squeeze_me=True, struct_as_record=False)["GTcls"]
            return np.asarray(gt.Segmentation, dtype=np.uint8)
        except (KeyError, AttributeError, ValueError, OSError) as exc:
            raise InputError(f"{path}: not an SBD class label file ({exc})") from None
    from PIL import Image

    with Image.open(path) as im:
        if im.mode not in ("P", "L"):
            raise InputError(f"{path}: expected a palette (P) or greyscale (L) PNG of class ids, got mode {im.mode}")
        return np.asarray(im, dtype=np.uint8)
