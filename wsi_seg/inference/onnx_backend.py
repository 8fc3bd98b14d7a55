"""Run an exported wsi-seg ONNX model through onnxruntime, with the interface of
:class:`~wsi_seg.inference.predictor.TorchPredictor` (``meta``, ``num_classes``,
``input_multiple``, ``__call__(tiles) -> (N, C, H, W)`` float32 probabilities).

onnxruntime is imported here only, when a predictor is built; without it the
error names the extra to install.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from wsi_seg.data.transforms import normalize
from wsi_seg.errors import InputError
from wsi_seg.inference.allocator import return_large_buffers
from wsi_seg.models.shapes import INPUT_MULTIPLE

#: The ONNX file layout :mod:`wsi_seg.inference.onnx_export` writes: the metadata key that
#: holds the checkpoint's meta (JSON) and the name of the graph's one input.
META_KEY = "wsi_seg"
INPUT_NAME = "input"

MISSING_EXTRA = "the onnx backend needs onnxruntime: pip install wsi-seg[onnx]"


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise InputError(MISSING_EXTRA) from None
    return onnxruntime


def pick_providers(ort, device: str | None = None) -> list[str]:
    """The CUDA provider when onnxruntime has it (and ``device`` does not ask for the CPU), then the CPU."""
    available = ort.get_available_providers()
    wants_cpu = device is not None and str(device).startswith("cpu")
    if "CUDAExecutionProvider" in available and not wants_cpu:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def read_onnx_meta(session, source: str) -> dict[str, Any]:
    """The wsi-seg meta stored in an ONNX file, checked against the graph it describes."""
    props = session.get_modelmeta().custom_metadata_map
    if META_KEY not in props:
        raise InputError(f"{source}: not a wsi-seg ONNX export (no {META_KEY!r} metadata); "
                         f"make one with `wsi-seg export-onnx CKPT -o model.onnx`")
    try:
        meta = json.loads(props[META_KEY])
        name = meta["model"]["name"]
        num_classes = int(meta["model"]["num_classes"])
        meta["normalization"]["mean"], meta["normalization"]["std"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{source}: unreadable wsi-seg metadata ({type(exc).__name__}: {exc})") from None
    if name not in INPUT_MULTIPLE:
        raise InputError(f"{source}: unknown model {name!r} in its metadata")
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME or len(outputs) != 1:
        raise InputError(f"{source}: the graph does not have the wsi-seg input/output layout")
    channels = outputs[0].shape[1] if len(outputs[0].shape) == 4 else None
    if not isinstance(channels, int) or channels != num_classes:
        raise InputError(f"{source}: the graph outputs {channels} classes but its metadata describes "
                         f"{num_classes} ({name}); the file does not belong to this model")
    return meta


class OnnxPredictor:
    """Preprocess with the exported checkpoint's normalisation, run the ONNX graph,
    upsample logits to the tile size when the model outputs at a stride, and
    return softmax probabilities ``(N, C, H, W)`` float32."""

    def __init__(self, path: str | os.PathLike, *, device: str | None = None, threads: int | None = None):
        ort = import_onnxruntime()
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        options = ort.SessionOptions()
        # onnxruntime's CPU arena keeps the largest activations of any run for the life of
        # the session; without it a long prediction holds one image's activations at a time
        options.enable_cpu_mem_arena = False
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options,
                                                providers=pick_providers(ort, device))
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"{path}: not a loadable ONNX model ({first})") from None
        self.path = path
        self._one_at_a_time = self.session.get_providers()[0] == "CPUExecutionProvider"
        if self._one_at_a_time:
            return_large_buffers()  # ~130 MiB less at the peak of a slide, at no cost in time (allocator.py)
        self.meta = read_onnx_meta(self.session, str(path))
        self.normalization = self.meta["normalization"]
        self.num_classes = int(self.meta["model"]["num_classes"])
        self.input_multiple = INPUT_MULTIPLE[self.meta["model"]["name"]]

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def preprocess(self, tiles: np.ndarray) -> np.ndarray:
        return np.stack([normalize(t, self.normalization) for t in tiles])

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Raw logits of a normalised (N, 3, H, W) float32 batch."""
        return self.session.run(None, {INPUT_NAME: np.ascontiguousarray(batch, np.float32)})[0]

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        if self._one_at_a_time and len(tiles) > 1:
            # On the CPU provider, tile by tile from normalisation to softmax: the same
            # arithmetic, about the same speed (benchmarks/model_latency.py), and one
            # tile's activations and buffers in memory at a time instead of N.
            first = self(tiles[:1])
            out = np.empty((len(tiles), *first.shape[1:]), dtype=np.float32)
            out[0] = first[0]
            del first  # not held while the next tile runs
            for index in range(1, len(tiles)):
                out[index] = self(tiles[index : index + 1])[0]
            return out
        x = self.preprocess(tiles)
        logits = self.logits(x).astype(np.float32, copy=False)
        if logits.shape[2:] != x.shape[2:]:
            logits = upsample_bilinear(logits, x.shape[2:])
        return softmax(logits, out=logits)  # the logits are this call's own array


def _bilinear_weights(source: int, target: int) -> np.ndarray:
    """(target, source) interpolation matrix of a half-pixel-centred bilinear resize
    (``align_corners=False``, source positions below 0 clamped to 0, as PyTorch does)."""
    position = (np.arange(target, dtype=np.float64) + 0.5) * (source / target) - 0.5
    position = np.maximum(position, 0.0)
    low = np.minimum(np.floor(position).astype(np.int64), source - 1)
    high = np.minimum(low + 1, source - 1)
    frac = position - low
    weights = np.zeros((target, source), dtype=np.float64)
    np.add.at(weights, (np.arange(target), low), 1.0 - frac)
    np.add.at(weights, (np.arange(target), high), frac)
    return weights.astype(np.float32)


def upsample_bilinear(logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, C, h, w) -> (N, C, H, W), bilinear with half-pixel centres."""
    rows = _bilinear_weights(logits.shape[2], int(size[0]))
    columns = _bilinear_weights(logits.shape[3], int(size[1]))
    return np.matmul(np.matmul(rows, logits), columns.T)


def softmax(logits: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """Softmax over the class axis (1) of (N, C, H, W) float32 logits, into ``out``
    (which may be ``logits`` itself) or a new array."""
    out = np.subtract(logits, logits.max(axis=1, keepdims=True), out=out)
    np.exp(out, out=out)
    out /= out.sum(axis=1, keepdims=True)
    return out
