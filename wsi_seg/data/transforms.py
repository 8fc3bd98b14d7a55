"""Turning uint8 RGB images into network inputs as a checkpoint's normalisation says.

The two families of released weights were trained with different pipelines
(see :mod:`wsi_seg.models.checkpoint`): ESPNet standardises BGR pixels with
0-255 statistics and then resizes the float image bilinearly (OpenCV
INTER_LINEAR, no antialiasing); ESPNetv2 resizes the uint8 RGB image with
Pillow's antialiased bilinear filter and then standardises. Both are expressed
here as ``(pixel[channel_order] - mean) / std`` in 0-255 units.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def normalize(image: np.ndarray, normalization: Mapping[str, Any]) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 network input, no resizing."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    pixels = image.astype(np.float32)
    if normalization.get("channel_order", "RGB") == "BGR":
        pixels = pixels[..., ::-1]
    mean = np.asarray(normalization["mean"], np.float32)
    std = np.asarray(normalization["std"], np.float32)
    return np.ascontiguousarray(((pixels - mean) / std).transpose(2, 0, 1))


def preprocess(image: np.ndarray, normalization: Mapping[str, Any],
               size: tuple[int, int] | None = None) -> np.ndarray:
    """Normalise an (H, W, 3) uint8 RGB image, resized to ``size`` = (width, height)
    the way the checkpoint's weights were trained when ``size`` is given."""
    if size is None or (image.shape[1], image.shape[0]) == tuple(size):
        return normalize(image, normalization)
    width, height = size
    if normalization.get("resize", "uint8-antialias") == "normalized-bilinear":
        chw = torch.from_numpy(normalize(image, normalization))[None]
        resized = F.interpolate(chw, size=(height, width), mode="bilinear", align_corners=False, antialias=False)
        return resized[0].numpy()
    resized = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
    return normalize(resized, normalization)
