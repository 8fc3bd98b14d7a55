"""Facts about the ESPNet authors' released weights: their class lists, colours
and input normalisation, and the conversion of their files into wsi-seg
checkpoints."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Mapping

from wsi_seg.errors import CheckpointError, InputError
from wsi_seg.models.checkpoint import (
    IMAGENET_NORMALIZATION,
    torch_load_safely,
    default_colors,
    describe_mismatch,
    make_checkpoint,
)
from wsi_seg.models.foreign import CHECKPOINT_FILTERS
from wsi_seg.models.registry import create_model, resolve_hparams

# Cityscapes train ids; the released ESPNet/ESPNetv2 city weights add class 19,
# "background" (void pixels trained as a class).
CITYSCAPES_CLASSES = (
    ("road", (128, 64, 128)), ("sidewalk", (244, 35, 232)), ("building", (70, 70, 70)),
    ("wall", (102, 102, 156)), ("fence", (190, 153, 153)), ("pole", (153, 153, 153)),
    ("traffic light", (250, 170, 30)), ("traffic sign", (220, 220, 0)), ("vegetation", (107, 142, 35)),
    ("terrain", (152, 251, 152)), ("sky", (70, 130, 180)), ("person", (220, 20, 60)),
    ("rider", (255, 0, 0)), ("car", (0, 0, 142)), ("truck", (0, 0, 70)), ("bus", (0, 60, 100)),
    ("train", (0, 80, 100)), ("motorcycle", (0, 0, 230)), ("bicycle", (119, 11, 32)),
    ("background", (0, 0, 0)),
)
VOC_CLASS_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

# ESPNet (github sacmehta/ESPNet): BGR, 0-255 statistics, then the standardised
# image divided by 255 (so std is multiplied by 255 here); resized as a float image.
ESPNET_CITYSCAPES_NORMALIZATION = {
    "mean": [72.3923111, 82.90893555, 73.15840149],
    "std": [45.3192215 * 255, 46.15289307 * 255, 44.91483307 * 255],
    "channel_order": "BGR",
    "resize": "normalized-bilinear",
}

DATASETS = ("cityscapes", "voc")


def dataset_classes(dataset: str | None, num_classes: int) -> tuple[list[str], list[list[int]]]:
    """Class names and colours for a dataset's released weights (generic names otherwise)."""
    if dataset == "cityscapes":
        if num_classes not in (19, 20):
            raise InputError(f"Cityscapes weights have 19 or 20 classes, not {num_classes}")
        chosen = CITYSCAPES_CLASSES[:num_classes]
        return [n for n, _ in chosen], [list(c) for _, c in chosen]
    if dataset == "voc":
        if num_classes != len(VOC_CLASS_NAMES):
            raise InputError(f"PASCAL VOC weights have {len(VOC_CLASS_NAMES)} classes, not {num_classes}")
        return list(VOC_CLASS_NAMES), default_colors(num_classes)
    if dataset is not None:
        raise InputError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    return [f"class_{i}" for i in range(num_classes)], default_colors(num_classes)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_weights(src: str | os.PathLike, *, arch: str, num_classes: int, hparams: Mapping[str, Any] | None = None,
                    dataset: str | None = None) -> dict:
    """Read an authors' weight file, map its keys, check it fits ``arch`` strictly,
    and return a wsi-seg checkpoint dict (not yet saved)."""
    src = Path(src)
    if arch not in CHECKPOINT_FILTERS:
        raise InputError(f"unknown --arch {arch!r}; choose from {', '.join(CHECKPOINT_FILTERS)}")
    obj = torch_load_safely(src)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(hasattr(v, "shape") for v in obj.values()):
        raise CheckpointError(f"{src}: not a PyTorch state_dict of tensors")
    try:
        hp = resolve_hparams(arch, **dict(hparams or {}))
        model = create_model(arch, num_classes, **hp)
    except ValueError as exc:
        raise InputError(f"{src}: {exc}") from None
    state_dict = CHECKPOINT_FILTERS[arch](obj)
    problems = describe_mismatch(model, state_dict)
    if problems:
        described = ", ".join(f"{k}={v}" for k, v in hp.items())
        raise CheckpointError(f"{src}: does not fit {arch}({described}, classes={num_classes}): {problems}")
    model.load_state_dict(state_dict, strict=True)
    names, colors = dataset_classes(dataset, num_classes)
    normalization = IMAGENET_NORMALIZATION if arch == "espnetv2" else ESPNET_CITYSCAPES_NORMALIZATION
    return make_checkpoint(arch, num_classes, hp, model.state_dict(), class_names=names, class_colors=colors,
                           normalization=normalization, source=f"{src.name} sha256:{_file_sha256(src)}")
