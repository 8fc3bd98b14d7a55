"""Which engine runs a model: PyTorch for wsi-seg checkpoints, onnxruntime for ONNX
exports. Nothing here imports either engine: a process that predicts with the ONNX
backend never loads PyTorch (a smaller footprint on cluster workers and small machines).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from wsi_seg.errors import InputError

BACKENDS = ("torch", "onnx")


def make_predictor(model_path: str | os.PathLike, *, backend: str = "torch", device: str | None = None,
                   optimize: bool = True, threads: int | None = None, tta: str = "none"):
    """A predictor for ``model_path``: a wsi-seg checkpoint run by PyTorch (``backend="torch"``)
    or an ONNX file from ``wsi-seg export-onnx`` run by onnxruntime (``backend="onnx"``).
    ``threads`` sets onnxruntime's intra-op threads (torch's are set per process, by the caller).
    ``tta`` ("none", "flips", "d4") averages each tile's output over flips
    (:class:`~wsi_seg.inference.tta.FlipAveraging`)."""
    from wsi_seg.inference.tta import TTA_MODES, FlipAveraging

    if tta not in TTA_MODES:
        raise InputError(f"unknown test-time augmentation {tta!r}; choose from {', '.join(TTA_MODES)}")
    predictor = _load(Path(model_path), backend=backend, device=device, optimize=optimize, threads=threads)
    return predictor if tta == "none" else FlipAveraging(predictor, tta)


def _load(path: Path, *, backend: str, device: str | None, optimize: bool, threads: int | None):
    if backend == "torch":
        if path.suffix.lower() == ".onnx":
            raise InputError(f"{path}: an ONNX file needs --backend onnx")
        from wsi_seg.inference.predictor import TorchPredictor

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
    tta: str = "none"

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    def load(self, *, threads: int | None = None):
        """The predictor, loaded in this process."""
        return make_predictor(self.path, backend=self.backend, device=self.device, optimize=self.optimize,
                              threads=threads, tta=self.tta)

    def probe(self):
        """The model loaded on this machine's CPU as stored, to check options against
        (tile multiple, classes) before any work is sent out."""
        return make_predictor(self.path, backend=self.backend, device="cpu", optimize=False, threads=1)
