"""Fixtures for prediction tests: a small synthetic slide and checkpoints."""

from __future__ import annotations

import pytest
import torch

from wsi_seg.models import create_model
from wsi_seg.models.checkpoint import make_checkpoint, save_checkpoint
from wsi_seg.synth import BIOPSY_CLASSES, synthesize_slide


@pytest.fixture(scope="session")
def small_slide(tmp_path_factory):
    """A 2048 x 1536 synthetic biopsy at 0.5 um/px: (svs, truth mask)."""
    return synthesize_slide(tmp_path_factory.mktemp("slide"), "biopsy", width=2048, height=1536, mpp=0.5, seed=7)


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory):
    """An untrained ESPNet checkpoint that runs at 2 um/px (values are arbitrary but deterministic)."""
    torch.manual_seed(0)
    model = create_model("espnet", len(BIOPSY_CLASSES), alpha3=1)
    ckpt = make_checkpoint("espnet", len(BIOPSY_CLASSES), {"alpha3": 1}, model.state_dict(),
                           class_names=[n for n, _ in BIOPSY_CLASSES], class_colors=[c for _, c in BIOPSY_CLASSES],
                           mpp=2.0, patch_size=256)
    return save_checkpoint(ckpt, tmp_path_factory.mktemp("ckpt") / "espnet.pt")
