"""Seamless stitching with a trained model: tiled prediction vs one whole-image forward pass.

A small ESPNet is trained on synthetic biopsies (real synth -> tile -> train
pipeline), then a 3000 x 3000 region of a held-out slide is predicted once whole
and once through the overlapping-tile stitcher used by `wsi-seg predict`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsi_seg.config import parse_train_config
from wsi_seg.engine.train import train
from wsi_seg.inference.predictor import TorchPredictor
from wsi_seg.inference.tiles import predict_image
from wsi_seg.io.slide import Slide
from wsi_seg.synth import BIOPSY_CLASSES, synthesize_slide
from wsi_seg.tiling import tile_slides

pytestmark = pytest.mark.slow

MPP = 2.0


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("seams")
    slides = [synthesize_slide(root / "slides", f"train{i}", width=2048, height=2048, mpp=MPP, seed=10 + i)[0]
              for i in range(3)]
    held_out, _ = synthesize_slide(root / "held_out", "test", width=3072, height=3072, mpp=MPP, seed=42)
    tile_slides(slides, root / "patches.zarr", masks_dir=root / "slides",
                class_names=[n for n, _ in BIOPSY_CLASSES], mpp=MPP, patch=128, min_tissue=0.2, progress=False)
    config = parse_train_config({
        "model": {"name": "espnet", "hparams": {"alpha3": 3}},
        "classes": [{"name": n, "color": list(c)} for n, c in BIOPSY_CLASSES],
        "data": {"store": str(root / "patches.zarr"), "val_fraction": 0.34, "batch_size": 8},
        "optim": {"lr": 2e-3},
        "stages": [{"name": "stage1", "model": "espnet", "epochs": 12}],
        "run": {"seed": 0, "threads": 1, "max_minutes": 3},
        "output": {"dir": str(root / "run"), "tensorboard": False},
    }, "seams-test")
    result = train(config, progress=False)
    return TorchPredictor.from_checkpoint(result.checkpoint, device="cpu"), held_out


def _near_tile_borders(n: int, tile: int, overlap: int, within: int = 8) -> np.ndarray:
    """Pixels within ``within`` px of any tile edge (both edges of every overlap strip)."""
    stride = tile - overlap
    edges = np.concatenate([np.arange(stride, n, stride), np.arange(tile, n, stride)])
    return np.min(np.abs(np.arange(n)[:, None] - edges[None, :]), axis=1) <= within


def test_tiled_prediction_agrees_with_a_whole_image_pass(trained):
    predictor, held_out = trained
    torch.set_num_threads(1)
    image = Slide(held_out).read(0, 0, 3000, 3000, MPP)
    whole = predictor(image[None])[0].argmax(0)
    tiled = predict_image(image, predictor, tile=1024, overlap=128, batch_size=2)
    differ = tiled != whole
    agreement = 1 - differ.mean()
    rows = _near_tile_borders(3000, 1024, 128)
    near = rows[:, None] | rows[None, :]
    near_rate, else_rate = differ[near].mean(), differ[~near].mean()
    print(f"agreement {agreement:.5f}; disagreement near tile borders {near_rate:.5f}, elsewhere {else_rate:.5f}")
    assert agreement >= 0.995
    # no seams: near the borders at most twice the disagreement elsewhere (0.05 % slack for a near-zero base)
    assert near_rate <= 2 * else_rate + 5e-4
    # the model learned the tissue: it is not a constant map
    assert len(np.unique(whole)) >= 4
