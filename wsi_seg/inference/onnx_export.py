"""Export a wsi-seg checkpoint to ONNX with dynamic batch, height and width.

The ONNX file is self-contained: the checkpoint's meta (model name and
hyper-parameters, class names and colours, normalisation, mpp, patch size,
source) travels as JSON in the model's ``metadata_props`` under
:data:`META_KEY`, so ``wsi-seg predict --backend onnx --model model.onnx``
needs nothing else.

The graph is written by PyTorch's TorchScript-based exporter at opset
:data:`OPSET` (17). ESPNetv2's pyramid pooling resizes and average-pools to
sizes that depend on the input size, which that exporter can only write for a
fixed input size; for export, each :class:`~wsi_seg.models.layers.PyramidPool`
is swapped for :class:`ExportablePyramidPool`, which computes the same
adaptive average pooling and align-corners bilinear resizing as products with
pooling/interpolation matrices built from the runtime shape.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from wsi_seg.errors import InputError
from wsi_seg.inference.onnx_backend import INPUT_NAME, META_KEY
from wsi_seg.io.atomic import replacing
from wsi_seg.models.checkpoint import load_checkpoint
from wsi_seg.models.layers import PyramidPool
from wsi_seg.models.shapes import INPUT_MULTIPLE

OPSET = 17
OUTPUT_NAME = "logits"
# The meta fields an ONNX file carries (everything in a checkpoint but weights and training state).
META_FIELDS = ("format", "format_version", "model", "classes", "normalization", "mpp", "patch_size", "source")


def _size(x: torch.Tensor, dim: int) -> torch.Tensor:
    """The size of ``dim`` as a 0-d int64 tensor, so that tracing keeps it dynamic."""
    return torch._shape_as_tensor(x)[dim]


def _pool_matrix(n_in: torch.Tensor, n_out: torch.Tensor, device) -> torch.Tensor:
    """(n_out, n_in) matrix of adaptive average pooling along one axis:
    row i averages inputs floor(i n_in / n_out) .. ceil((i + 1) n_in / n_out) - 1."""
    i = torch.arange(n_out, device=device)
    j = torch.arange(n_in, device=device)
    start = torch.div(i * n_in, n_out, rounding_mode="floor")
    end = torch.div((i + 1) * n_in + n_out - 1, n_out, rounding_mode="floor")
    inside = (j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])
    return inside.float() / (end - start)[:, None].float()


def _resize_matrix(n_in: torch.Tensor, n_out: torch.Tensor, device) -> torch.Tensor:
    """(n_out, n_in) matrix of bilinear interpolation with align_corners=True along one axis
    (n_out > 1)."""
    i = torch.arange(n_out, device=device).float()
    j = torch.arange(n_in, device=device)
    src = i * (n_in - 1).float() / (n_out - 1).float()
    lo = torch.floor(src)
    frac = src - lo
    lo = lo.long()
    hi = torch.minimum(lo + 1, n_in - 1)
    return ((j[None, :] == lo[:, None]).float() * (1 - frac)[:, None]
            + (j[None, :] == hi[:, None]).float() * frac[:, None])


def _separable(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Apply an (h_out, h) matrix along H and a (w_out, w) matrix along W of (N, C, h, w)."""
    return torch.matmul(torch.matmul(rows, x), cols.transpose(0, 1))


class ExportablePyramidPool(nn.Module):
    """:class:`PyramidPool` with shape-dependent pooling and resizing written as
    matrix products, so the exported graph keeps dynamic height and width."""

    def __init__(self, pool: PyramidPool):
        super().__init__()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pool
        x = p.project(x)
        h, w = _size(x, 2), _size(x, 3)
        pyramid = []
        for scale, stage in zip(p.scales, p.stages):
            if scale == 1:
                pyramid.append(stage(x))
                continue
            sh = torch.clamp(torch.ceil(h.float() * scale), min=5).long()
            sw = torch.clamp(torch.ceil(w.float() * scale), min=5).long()
            if scale > 1:
                up = _separable(x, _resize_matrix(h, sh, x.device), _resize_matrix(w, sw, x.device))
                y = _separable(stage(up), _pool_matrix(sh, h, x.device), _pool_matrix(sw, w, x.device))
            else:
                down = _separable(x, _pool_matrix(h, sh, x.device), _pool_matrix(w, sw, x.device))
                y = _separable(stage(down), _resize_matrix(sh, h, x.device), _resize_matrix(sw, w, x.device))
            pyramid.append(y)
        y = p.merge_norm(torch.cat(pyramid, 1))
        b, c, hh, ww = y.shape
        n = len(p.scales)
        y = y.view(b, n, c // n, hh, ww).transpose(1, 2).reshape(b, c, hh, ww)
        y = p.out(p.merge(y))
        return p.out_norm(y) if p.out_norm is not None else y


def exportable(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every PyramidPool made exportable."""
    model = copy.deepcopy(model).eval()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, PyramidPool):
                setattr(parent, name, ExportablePyramidPool(child))
    return model


def onnx_meta(meta: Mapping[str, Any]) -> dict:
    """The JSON-safe part of a checkpoint's meta stored in the ONNX file."""
    return {k: meta[k] for k in META_FIELDS if k in meta}


def export_model(model: nn.Module, meta: Mapping[str, Any], path: str | os.PathLike, *, opset: int = OPSET,
                 sample_size: int | None = None) -> Path:
    """Write ``model`` (with its checkpoint ``meta``) as ONNX to ``path``, atomically."""
    import onnx  # noqa: F401  (the exporter needs it; fail early with the extra's name)

    path = Path(path)
    multiple = INPUT_MULTIPLE[meta["model"]["name"]]
    side = sample_size or 4 * multiple
    sample = torch.zeros(1, 3, side, side)
    axes = {0: "batch", 2: "height", 3: "width"}
    with replacing(path) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(exportable(model), (sample,), str(tmp), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes}, do_constant_folding=True)
        _attach_meta(tmp, meta)
    return path


def _attach_meta(path: Path, meta: Mapping[str, Any]) -> None:
    import onnx

    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key = META_KEY
    entry.value = json.dumps(onnx_meta(meta))
    proto.producer_name = "wsi-seg"
    # shape inference loses the class axis behind ESPNetv2's final resize: state it
    channels = proto.graph.output[0].type.tensor_type.shape.dim[1]
    channels.Clear()
    channels.dim_value = int(meta["model"]["num_classes"])
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def export_checkpoint(checkpoint: str | os.PathLike, path: str | os.PathLike, *, opset: int = OPSET) -> Path:
    """Load a wsi-seg checkpoint (safely: no pickled code) and export it to ONNX at ``path``."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected an .onnx file path")
    if not path.parent.is_dir():
        raise InputError(f"{path}: folder {path.parent} does not exist")
    model, meta = load_checkpoint(Path(checkpoint))
    return export_model(model, meta, path, opset=opset)
