"""Prediction on ordinary images (PNG, JPEG): a class-id PNG and a colour view.

The checkpoint's preprocessing is applied (its normalisation and, with
``resize``, its way of resizing: on the normalised float image for the ESPNet
authors' weights, on uint8 with Pillow's antialiased bilinear filter for
ESPNetv2 and wsi-seg's own runs). Without ``resize`` the image is labelled at
its own size, in one pass when it fits a tile and with overlapping tiles
otherwise; with ``resize`` = (width, height) the label has that size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from wsi_seg.data.image_pairs import read_image
from wsi_seg.data.transforms import preprocess
from wsi_seg.errors import InputError, OutputError

__all__ = ["IMAGE_SUFFIXES", "ImagePrediction", "label_image", "predict_image_file", "color_path", "parse_size",
           "write_label_png", "write_color_png"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class ImagePrediction:
    output: Path
    color: Path | None
    size: tuple[int, int]  # (width, height) of the label image
    input_size: tuple[int, int]


def _forward_normalized(predictor, x: np.ndarray) -> np.ndarray:
    """Class probabilities (C, H, W) of one normalised (3, H, W) input, padded with
    zeros (the mean) to the model's input multiple and cropped back."""
    _, height, width = x.shape
    m = predictor.input_multiple
    pad_h, pad_w = -height % m, -width % m
    tensor = torch.from_numpy(np.ascontiguousarray(x))[None]
    if pad_h or pad_w:
        tensor = F.pad(tensor, (0, pad_w, 0, pad_h))
    with torch.inference_mode():
        logits = predictor.model(tensor.to(predictor.device)).float()
        if logits.shape[2:] != tensor.shape[2:]:
            logits = F.interpolate(logits, size=tensor.shape[2:], mode="bilinear", align_corners=False)
        return logits[0, :, :height, :width].cpu().numpy()


def label_image(image: np.ndarray, predictor, *, resize: tuple[int, int] | None = None, tile: int = 1024,
                overlap: int = 128, batch_size: int = 4) -> np.ndarray:
    """(H, W) uint8 class ids of an (H, W, 3) uint8 RGB image (``resize``: of the
    image resized to (width, height) the checkpoint's way)."""
    from wsi_seg.inference.tiles import predict_image

    height, width = image.shape[:2]
    if resize is not None or max(height, width) <= tile:
        x = preprocess(image, predictor.normalization, tuple(resize) if resize is not None else None)
        return _forward_normalized(predictor, x).argmax(0).astype(np.uint8)
    return predict_image(image, predictor, tile=tile, overlap=overlap, batch_size=batch_size)


def color_path(output: str | Path) -> Path:
    """Where ``--color`` writes the colour view of ``OUT.png``: ``OUT.color.png``."""
    output = Path(output)
    return output.with_name(f"{output.stem}.color.png")


def _atomic_save(image, path: Path) -> None:
    from wsi_seg.io.atomic import replacing

    with replacing(path, ".png") as tmp:
        image.save(tmp, format="PNG")


def write_label_png(labels: np.ndarray, path: Path, colors: list[list[int]]) -> None:
    """Class ids as a palette PNG (pixel value = class id, palette = class colours)."""
    from PIL import Image

    im = Image.fromarray(labels.astype(np.uint8), mode="L").convert("P")
    palette = np.zeros((256, 3), np.uint8)
    palette[:len(colors)] = np.asarray(colors, np.uint8)
    im.putpalette(palette.reshape(-1).tolist())
    _atomic_save(im, path)


def write_color_png(labels: np.ndarray, path: Path, colors: list[list[int]]) -> None:
    """An RGB image with each pixel in its class's colour."""
    from PIL import Image

    table = np.zeros((256, 3), np.uint8)
    table[:len(colors)] = np.asarray(colors, np.uint8)
    _atomic_save(Image.fromarray(table[labels]), path)


def parse_size(value: str) -> tuple[int, int]:
    """``"WxH"`` -> (width, height)."""
    try:
        width, height = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise InputError(f"--resize {value!r}: expected WIDTHxHEIGHT, e.g. 1024x512") from None
    if width <= 0 or height <= 0:
        raise InputError(f"--resize {value!r}: width and height must be positive")
    return width, height


def predict_image_file(image_path: str | Path, output: str | Path, predictor, *,
                       resize: tuple[int, int] | None = None, color: bool = False, tile: int = 1024,
                       overlap: int = 128, batch_size: int = 4, overwrite: bool = False) -> ImagePrediction:
    """Label ``image_path`` into the class-id PNG ``output`` (and ``OUT.color.png`` with ``color``)."""
    image_path, output = Path(image_path), Path(output)
    if not image_path.is_file():
        raise InputError(f"{image_path}: no such image file")
    if output.suffix.lower() != ".png":
        raise OutputError(f"{output}: the label image must be a .png file")
    if output.is_dir() or not output.parent.is_dir():
        raise OutputError(f"{output}: is a directory or its folder does not exist")
    targets = [output] + ([color_path(output)] if color else [])
    for target in targets:
        if target.exists() and not overwrite:
            raise OutputError(f"{target}: already exists (pass --overwrite to replace it)")
    image = read_image(image_path)
    labels = label_image(image, predictor, resize=resize, tile=tile, overlap=overlap, batch_size=batch_size)
    colors = predictor.meta["classes"]["colors"]
    write_label_png(labels, output, colors)
    if color:
        write_color_png(labels, targets[1], colors)
    return ImagePrediction(output, targets[1] if color else None, (labels.shape[1], labels.shape[0]),
                           (image.shape[1], image.shape[0]))
