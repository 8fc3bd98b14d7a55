"""Run a checkpoint's model through PyTorch on batches of uint8 RGB tiles and return
class probabilities (:class:`TorchPredictor`). Choosing a backend and carrying a model
to workers: :mod:`wsi_seg.inference.backends` (re-exported here)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsi_seg.data.transforms import normalize
from wsi_seg.inference.backends import BACKENDS, ModelSpec, make_predictor  # noqa: F401 (re-exported)
from wsi_seg.models.checkpoint import load_checkpoint
from wsi_seg.models.fuse import fold_batchnorm
from wsi_seg.models.shapes import INPUT_MULTIPLE


def pick_device(device: str | None = None) -> torch.device:
    """CUDA when available (or asked for), else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class TorchPredictor:
    """Preprocess with the checkpoint's normalisation, run the model in inference
    mode, upsample logits to the tile size when the model outputs at a stride,
    and return softmax probabilities ``(N, C, H, W)`` float32 on the CPU.

    ``optimize`` (default on) runs a copy of the model with BatchNorms folded into
    the convolutions before them (:func:`wsi_seg.models.fuse.fold_batchnorm`;
    outputs agree with the unfolded model to float rounding)."""

    def __init__(self, model: nn.Module, meta: Mapping[str, Any], *, device: str | torch.device | None = None,
                 optimize: bool = True):
        self.device = pick_device(device) if not isinstance(device, torch.device) else device
        self.optimized = bool(optimize)
        if optimize:
            model = fold_batchnorm(model)
        self.model = model.to(self.device).eval()
        self.meta = dict(meta)
        self.normalization = self.meta["normalization"]
        self.num_classes = int(self.meta["model"]["num_classes"])
        self.input_multiple = INPUT_MULTIPLE[self.meta["model"]["name"]]

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, *, device: str | None = None,
                        optimize: bool = True) -> "TorchPredictor":
        model, meta = load_checkpoint(Path(path))
        return cls(model, meta, device=device, optimize=optimize)

    def preprocess(self, tiles: np.ndarray) -> torch.Tensor:
        batch = np.stack([normalize(t, self.normalization) for t in tiles])
        return torch.from_numpy(batch)

    @torch.inference_mode()
    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        x = self.preprocess(tiles).to(self.device)
        logits = self.model(x)
        if logits.shape[2:] != x.shape[2:]:
            logits = F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False)
        return torch.softmax(logits.float(), dim=1).cpu().numpy()
