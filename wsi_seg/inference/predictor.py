"""Run a checkpoint's model on batches of uint8 RGB tiles and return class probabilities."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsi_seg.data.transforms import normalize
from wsi_seg.errors import InputError
from wsi_seg.models.checkpoint import load_checkpoint
from wsi_seg.models.fuse import fold_batchnorm
from wsi_seg.models.registry import INPUT_MULTIPLE


def pick_device(device: str | None = None) -> torch.device:
    """CUDA when available (or asked for), else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


BACKENDS = ("torch", "onnx")


def make_predictor(model_path: str | os.PathLike, *, backend: str = "torch", device: str | None = None,
                   optimize: bool = True, threads: int | None = None):
    """A predictor for ``model_path``: a wsi-seg checkpoint run by PyTorch (``backend="torch"``)
    or an ONNX file from ``wsi-seg export-onnx`` run by onnxruntime (``backend="onnx"``).
    ``threads`` sets onnxruntime's intra-op threads (torch's are set per process, by the caller)."""
    path = Path(model_path)
    if backend == "torch":
        if path.suffix.lower() == ".onnx":
            raise InputError(f"{path}: an ONNX file needs --backend onnx")
        return TorchPredictor.from_checkpoint(path, device=device, optimize=optimize)
    if backend == "onnx":
        if path.suffix.lower() != ".onnx":
            raise InputError(f"{path}: --backend onnx takes an .onnx file from `wsi-seg export-onnx`")
        from wsi_seg.inference.onnx_backend import OnnxPredictor

        return OnnxPredictor(path, device=device, threads=threads)
    raise InputError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")


@dataclass(frozen=True)
class ModelSpec:
    """What :func:`make_predictor` needs, as plain values: the form in which a model
    travels to the workers of a cluster, each of which loads it itself."""

    path: Path
    backend: str = "torch"
    device: str | None = None
    optimize: bool = True

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    def load(self, *, threads: int | None = None):
        """The predictor, loaded in this process."""
        return make_predictor(self.path, backend=self.backend, device=self.device, optimize=self.optimize,
                              threads=threads)

    def probe(self):
        """The model loaded on this machine's CPU as stored, to check options against
        (tile multiple, classes) before any work is sent out."""
        return make_predictor(self.path, backend=self.backend, device="cpu", optimize=False, threads=1)


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
