"""Folding BatchNorm into convolutions for inference keeps the outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from wsi_seg.inference.predictor import TorchPredictor
from wsi_seg.models import create_model
from wsi_seg.models.checkpoint import make_checkpoint
from wsi_seg.models.fuse import count_batchnorms, fold_batchnorm
from wsi_seg.models.layers import ConvBNAct


def _with_statistics(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, in eval mode."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=gen) - 0.5)
    return model.eval()


@pytest.mark.parametrize("name, hparams", [("espnet", {"alpha3": 2}), ("espnet_c", {"alpha3": 2}),
                                           ("espnetv2", {"scale": 0.5})])
def test_folding_keeps_outputs(name, hparams):
    torch.manual_seed(0)
    model = _with_statistics(create_model(name, 8, **hparams))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    assert not folded.training
    assert count_batchnorms(folded) < count_batchnorms(model)
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        expected, got = model(x), folded(x)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-5
    # the original model is untouched
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert count_batchnorms(model) == sum(isinstance(m, nn.BatchNorm2d) for m in create_model(name, 8, **hparams).modules())


def test_only_conv_then_bn_in_a_sequence_is_folded():
    block = _with_statistics(ConvBNAct(4, 6, 3))
    folded = fold_batchnorm(block)
    assert isinstance(folded.bn, nn.Identity) and folded.conv.bias is not None
    # a BatchNorm after something other than a Conv2d stays
    seq = _with_statistics(nn.Sequential(nn.Conv2d(4, 4, 1), nn.PReLU(4), nn.BatchNorm2d(4)))
    assert count_batchnorms(fold_batchnorm(seq)) == 1
    # ESP blocks normalise a concatenation (+ residual): not folded
    model = create_model("espnet_c", 8, alpha3=2)
    folded = fold_batchnorm(model)
    esp_norms = [m for n, m in folded.named_modules() if n.endswith(".norm")]
    assert esp_norms and all(isinstance(m, nn.BatchNorm2d) for m in esp_norms)


def test_predictor_optimize_is_default_on_and_matches():
    torch.manual_seed(0)
    model = _with_statistics(create_model("espnet", 8, alpha3=1))
    meta = {k: v for k, v in make_checkpoint("espnet", 8, {"alpha3": 1}, model.state_dict(),
                                             class_names=list("abcdefgh")).items() if k != "state_dict"}
    fast = TorchPredictor(model, meta, device="cpu")
    plain = TorchPredictor(model, meta, device="cpu", optimize=False)
    assert fast.optimized and not plain.optimized
    assert count_batchnorms(fast.model) < count_batchnorms(plain.model)
    tiles = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    assert np.abs(fast(tiles) - plain(tiles)).max() <= 1e-5
