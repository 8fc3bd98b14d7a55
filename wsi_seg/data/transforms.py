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
from PIL import Image


def normalize(image: np.ndarray, normalization: Mapping[str, Any]) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 network input, no resizing."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    mean = np.asarray(normalization["mean"], np.float32)
    std = np.asarray(normalization["std"], np.float32)
    sources = (2, 1, 0) if normalization.get("channel_order", "RGB") == "BGR" else (0, 1, 2)
    if image.dtype == np.uint8:
        # the same float32 arithmetic done once per value (a 3 x 256 table), then looked up
        table = (np.arange(256, dtype=np.float32)[None, :] - mean[:, None]) / std[:, None]
        out = np.empty((3,) + image.shape[:2], np.float32)
        for channel, source in enumerate(sources):
            np.take(table[channel], image[..., source], out=out[channel])
        return out
    pixels = image.astype(np.float32)[..., list(sources)]
    return np.ascontiguousarray(((pixels - mean) / std).transpose(2, 0, 1))


def preprocess(image: np.ndarray, normalization: Mapping[str, Any],
               size: tuple[int, int] | None = None) -> np.ndarray:
    """Normalise an (H, W, 3) uint8 RGB image, resized to ``size`` = (width, height)
    the way the checkpoint's weights were trained when ``size`` is given."""
    if size is None or (image.shape[1], image.shape[0]) == tuple(size):
        return normalize(image, normalization)
    width, height = size
    if normalization.get("resize", "uint8-antialias") == "normalized-bilinear":
        import torch  # only this resampling needs it: ONNX-only inference runs without torch
        import torch.nn.functional as F

        chw = torch.from_numpy(normalize(image, normalization))[None]
        resized = F.interpolate(chw, size=(height, width), mode="bilinear", align_corners=False, antialias=False)
        return resized[0].numpy()
    resized = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
    return normalize(resized, normalization)
