"""The training loss: cross-entropy with ENet's inverse class-probability weights.

ENet (Paszke et al., 2016), used by the ESPNet paper: ``w_c = 1 / ln(c + p_c)``
with ``p_c`` the share of class ``c`` among labelled training pixels and
``c = 1.02``, which bounds the weights to ``[1 / ln(2.02), 1 / ln(1.02)]``
(about 1.42 to 50.5). Models with 1/8-resolution logits (ESPNet-A/B/C) are
trained against labels subsampled to their grid (nearest).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["enet_class_weights", "segmentation_loss", "downsample_labels"]


def enet_class_weights(counts, c: float = 1.02) -> torch.Tensor:
    """Per-class weights ``1 / ln(c + p)`` from per-class pixel counts."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or (counts < 0).any():
        raise ValueError("counts must be a 1-D array of non-negative pixel counts")
    total = counts.sum()
    if total <= 0:
        raise ValueError("the label histogram is empty (no labelled pixels)")
    if c <= 1.0:
        raise ValueError("c must be greater than 1")
    return torch.as_tensor(1.0 / np.log(c + counts / total), dtype=torch.float32)


def segmentation_loss(weights: torch.Tensor | None, ignore_index: int = 255) -> nn.CrossEntropyLoss:
    """Pixel-wise cross-entropy over ``(N, C, H, W)`` logits and ``(N, H, W)`` class ids."""
    return nn.CrossEntropyLoss(weight=weights, ignore_index=ignore_index)


def downsample_labels(labels: torch.Tensor, stride: int) -> torch.Tensor:
    """Nearest subsampling of ``(N, H, W)`` labels by ``stride``: the pixel nearest the
    centre of each ``stride`` x ``stride`` cell (no class ids are mixed)."""
    if stride == 1:
        return labels
    offset = stride // 2
    return labels[..., offset::stride, offset::stride].contiguous()
