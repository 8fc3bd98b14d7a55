"""The wsi-seg checkpoint: a plain dict saved with ``torch.save`` and read with
``weights_only=True``, so loading a file never runs code from it.

Layout (format version 1)::

    {
      "format": "wsi-seg-checkpoint", "format_version": 1,
      "model": {"name": "espnet", "num_classes": 8, "hparams": {...}},
      "state_dict": {...},
      "classes": {"names": [...], "colors": [[r, g, b], ...]},
      "normalization": {"mean": [..3], "std": [..3], "channel_order": "RGB" | "BGR",
                        "resize": "normalized-bilinear" | "uint8-antialias"},
      "mpp": float | None, "patch_size": int | None,
      "source": str,                      # where the weights came from
      "train_state": {...}                # optional: optimiser, epoch, step, ...
    }

Normalisation: the network input is ``(pixel[channel_order] - mean) / std``
with pixel values and mean/std in 0-255 units. ``resize`` records how the
weights' authors resized images (on the normalised float image, or on uint8
with antialiasing).
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from wsi_seg.errors import CheckpointError, InputError
from wsi_seg.io.atomic import replacing
from wsi_seg.models.registry import create_model, list_models, resolve_hparams

FORMAT = "wsi-seg-checkpoint"
FORMAT_VERSION = 1

IMAGENET_NORMALIZATION = {
    "mean": [0.485 * 255, 0.456 * 255, 0.406 * 255],
    "std": [0.229 * 255, 0.224 * 255, 0.225 * 255],
    "channel_order": "RGB",
    "resize": "uint8-antialias",
}


def make_checkpoint(model_name: str, num_classes: int, hparams: Mapping[str, Any],
                    state_dict: Mapping[str, torch.Tensor], *, class_names: Sequence[str],
                    class_colors: Sequence[Sequence[int]] | None = None,
                    normalization: Mapping[str, Any] | None = None, mpp: float | None = None,
                    patch_size: int | None = None, source: str = "", train_state: Mapping | None = None) -> dict:
    """Assemble a checkpoint dict (see the module docstring)."""
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
    colors = [list(map(int, c)) for c in class_colors] if class_colors is not None else default_colors(num_classes)
    if len(colors) != num_classes:
        raise ValueError(f"{len(colors)} class colours for {num_classes} classes")
    ckpt = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": {"name": model_name, "num_classes": int(num_classes),
                  "hparams": resolve_hparams(model_name, **dict(hparams))},
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "classes": {"names": list(class_names), "colors": colors},
        "normalization": dict(normalization or IMAGENET_NORMALIZATION),
        "mpp": None if mpp is None else float(mpp),
        "patch_size": None if patch_size is None else int(patch_size),
        "source": source,
    }
    if train_state is not None:
        ckpt["train_state"] = dict(train_state)
    return ckpt


def default_colors(n: int) -> list[list[int]]:
    """Distinct colours for n classes (class 0 black), the VOC bit-interleaving scheme."""
    colors = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colors.append([r, g, b])
    return colors


def save_checkpoint(ckpt: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write atomically: a temporary file in the same folder, then rename."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a checkpoint file path")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{path}: folder {parent} does not exist")
    with replacing(path) as tmp, open(tmp, "wb") as fh:
        torch.save(dict(ckpt), fh)
    return path


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Read and validate a checkpoint dict without building the model."""
    path = Path(path)
    obj = torch_load_safely(path)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        hint = " (a raw state_dict? convert it with `wsi-seg convert-weights`)" if isinstance(obj, dict) else ""
        raise CheckpointError(f"{path}: not a wsi-seg checkpoint{hint}")
    if obj.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {obj['format_version']} is newer than this wsi-seg "
                              f"understands ({FORMAT_VERSION}); upgrade wsi-seg")
    model = obj.get("model") or {}
    if model.get("name") not in list_models():
        raise CheckpointError(f"{path}: unknown model {model.get('name')!r}; known: {', '.join(list_models())}")
    return obj


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Build the model a checkpoint describes, load its weights strictly and
    return ``(model in eval mode, meta)``; ``meta`` is the checkpoint without
    its state_dict. A file that would need pickled code is refused, not run."""
    path = Path(path)
    ckpt = read_checkpoint(path)
    spec = ckpt["model"]
    try:
        model = create_model(spec["name"], spec["num_classes"], **spec.get("hparams", {}))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot build {spec['name']}: {exc}") from None
    load_state_dict_strict(model, ckpt["state_dict"], source=str(path))
    model.to(device).eval()
    meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    return model, meta


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str) -> None:
    """``load_state_dict(strict=True)`` with one readable error naming what does not fit."""
    problems = describe_mismatch(model, state_dict)
    if problems:
        raise CheckpointError(f"{source}: weights do not fit the model: {problems}")
    model.load_state_dict(state_dict, strict=True)


def describe_mismatch(model: nn.Module, state_dict: Mapping[str, torch.Tensor], limit: int = 4) -> str:
    """A one-line summary of missing/unexpected keys and shape mismatches ('' when it fits)."""
    own = model.state_dict()
    optional = {k for k in own if k.endswith("num_batches_tracked")}
    missing = [k for k in own if k not in state_dict and k not in optional]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
              for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    parts = []
    for label, items in (("shape mismatch", shapes), ("missing", missing), ("unexpected", unexpected)):
        if items:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            parts.append(f"{label} {len(items)}: " + ", ".join(items[:limit]) + more)
    return "; ".join(parts)


def load_matching(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Load every tensor whose key and shape fit (fine-tuning, e.g. another class
    count); return the model keys left at their fresh initialisation."""
    own = model.state_dict()
    fitting = {k: v for k, v in state_dict.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    model.load_state_dict(fitting, strict=False)
    return [k for k in own if k not in fitting and not k.endswith("num_batches_tracked")]


def _plain_pickle_imports(path: Path) -> bool:
    """Whether a plain (non-zip) pickle file names a global, i.e. would import code.

    Scans the opcodes with :mod:`pickletools`, which reads and never executes."""
    import pickletools

    try:
        with open(path, "rb") as fh:
            for opcode, _, _ in pickletools.genops(fh):
                if opcode.name in ("GLOBAL", "STACK_GLOBAL", "INST", "OBJ"):
                    return True
    except Exception:  # not a pickle stream at all
        return False
    return False


def torch_load_safely(path: Path) -> Any:
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file, not a checkpoint")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it then refuses anyway
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "GLOBAL" in text or _plain_pickle_imports(path):
            raise CheckpointError(f"{path}: refused: the file needs pickled code to load, which wsi-seg never "
                                  f"runs") from None
        reason = text.split("WeightsUnpickler error:")[-1].strip().splitlines()[0] if text.strip() else "unpickling"
        raise CheckpointError(f"{path}: not a readable checkpoint ({reason})") from None
    except Exception as exc:  # torch raises many types for files that are no checkpoint
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({first})") from None
