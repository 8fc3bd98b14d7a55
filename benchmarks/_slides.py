"""Shared set-up for the benchmarks: cached synthetic slides and an untrained checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from wsi_seg.models import create_model
from wsi_seg.models.checkpoint import make_checkpoint, save_checkpoint
from wsi_seg.synth import BIOPSY_CLASSES, synthesize_slide

CACHE = Path(os.environ.get("WSI_SEG_BENCH_DIR", "/tmp/wsi-seg-bench"))


def synthetic_slide(width: int, height: int, seed: int = 0) -> Path:
    """A synthetic biopsy of that size at 0.5 um/px, made once and cached."""
    CACHE.mkdir(parents=True, exist_ok=True)
    svs, _ = synthesize_slide(CACHE, f"bench_{width}x{height}_s{seed}", width=width, height=height, mpp=0.5,
                              seed=seed)
    return svs


def untrained_checkpoint(name: str = "espnet", mpp: float = 1.0, **hparams) -> Path:
    """An ESPNet checkpoint with fixed random weights: speed and memory do not depend on training."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{name}_mpp{mpp:g}.pt"
    if not path.exists():
        torch.manual_seed(0)
        model = create_model(name, len(BIOPSY_CLASSES), **hparams)
        ckpt = make_checkpoint(name, len(BIOPSY_CLASSES), hparams, model.state_dict(),
                               class_names=[n for n, _ in BIOPSY_CLASSES],
                               class_colors=[c for _, c in BIOPSY_CLASSES], mpp=mpp, patch_size=512)
        save_checkpoint(ckpt, path)
    return path
