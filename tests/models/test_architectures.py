"""Every registered model: forward/backward, output shapes, exact parameter counts."""

from __future__ import annotations

import pytest
import torch

from wsi_seg.models import create_model, default_hparams, list_models
from wsi_seg.models.complexity import count_macs, count_parameters, esp_receptive_fields
from wsi_seg.models.layers import ESPBlock, branch_widths
from wsi_seg.models.registry import OUTPUT_STRIDE

torch.manual_seed(0)


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_and_output_shape(name):
    model = create_model(name, num_classes=8, **({"scale": 0.5} if name == "espnetv2" else {"alpha3": 2}))
    x = torch.randn(2, 3, 64, 96, requires_grad=True)
    y = model(x)
    stride = OUTPUT_STRIDE[name]
    assert y.shape == (2, 8, 64 // stride, 96 // stride)
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    # The authors' strided EESP units own a PReLU they never apply (kept for their state_dict layout).
    unused = {n for n in dict(model.named_parameters()) if n.endswith("eesp.act.weight")}
    grads = {n: p.grad for n, p in model.named_parameters() if n not in unused}
    assert [n for n, g in grads.items() if g is None] == []
    assert sum(float(g.abs().sum()) for g in grads.values()) > 0


def test_list_models_and_defaults():
    assert list_models() == ["espnet_a", "espnet_b", "espnet_c", "espnet", "espnetv2"]
    assert default_hparams("espnet") == {"K": 5, "alpha2": 2, "alpha3": 8, "hff": True}
    assert default_hparams("espnetv2") == {"scale": 2.0, "K": 4}
    with pytest.raises(ValueError, match="unknown model"):
        create_model("espnet_z", 3)
    with pytest.raises(ValueError, match="no hyper-parameter"):
        create_model("espnetv2", 3, alpha3=2)
    with pytest.raises(ValueError, match="scale"):
        create_model("espnetv2", 3, scale=3.0)


# The authors' counts for 20 classes (ARCHITECTURE.md, params.json; paper Table 2g).
@pytest.mark.parametrize("alpha3,encoder,full", [(3, 187_529, 202_649), (5, 252_297, 267_417), (8, 349_449, 364_569)])
def test_espnet_parameter_counts_equal_the_authors(alpha3, encoder, full):
    assert count_parameters(create_model("espnet_c", 20, alpha2=2, alpha3=alpha3)) == encoder
    assert count_parameters(create_model("espnet", 20, alpha2=2, alpha3=alpha3)) == full


@pytest.mark.parametrize("scale,city", [(0.5, 80_342), (1.0, 234_010), (1.5, 468_362), (2.0, 789_242)])
def test_espnetv2_parameter_counts_equal_the_authors(scale, city):
    assert count_parameters(create_model("espnetv2", 20, scale=scale)) == city
    assert count_parameters(create_model("espnetv2", 21, scale=scale)) == city + 11


def test_espnet_a_and_b_parameter_counts():
    """Appendix B variants at K=5, alpha2=2, alpha3=3, 20 classes (paper: 0.183 M and 0.186 M)."""
    b = count_parameters(create_model("espnet_b", 20, alpha3=3))
    a = count_parameters(create_model("espnet_a", 20, alpha3=3))
    assert b == 186_464
    assert abs(b / 186_000 - 1) < 0.03
    # ESPNet-A widens 64 -> 128 with a point-wise CBR where B concatenates (see docs/models.md).
    assert a == 191_328
    # A: a 64 -> 128 point-wise CBR instead of B's level-2 concat (+ its BN/PReLU over 128),
    # no level-3 concat (B: BN/PReLU over 256) and a 128-wide classifier (B: 256-wide).
    assert a - b == (64 * 128 + 3 * 128) - 3 * 128 - 3 * 256 - (256 - 128) * 20


def test_branch_split_when_n_not_divisible_by_k():
    assert branch_widths(64, 5) == (12, 16)
    assert branch_widths(128, 5) == (25, 28)
    assert branch_widths(20, 5) == (4, 4)
    assert branch_widths(10, 3) == (3, 4)
    block = ESPBlock(40, 10, k=3, residual=False)
    widths = [b.out_channels for b in block.branches]
    assert widths == [4, 3, 3] and sum(widths) == 10
    assert block.reduce.out_channels == 3
    assert [b.dilation[0] for b in block.branches] == [1, 2, 4]
    assert block(torch.randn(1, 40, 16, 16)).shape == (1, 10, 16, 16)


def test_hierarchical_feature_fusion_changes_the_output():
    torch.manual_seed(1)
    with_hff = ESPBlock(32, 32, k=4, hff=True).eval()
    without = ESPBlock(32, 32, k=4, hff=False).eval()
    without.load_state_dict(with_hff.state_dict())
    x = torch.randn(1, 32, 24, 24)
    a, b = with_hff(x), without(x)
    # The first two branches are concatenated unchanged in both; the fused ones differ.
    d1 = with_hff.branches[0].out_channels + with_hff.branches[1].out_channels
    assert not torch.allclose(a, b)
    assert torch.allclose(a[:, :d1], b[:, :d1])


def test_model_hff_flag_reaches_every_esp_block():
    model = create_model("espnet", 8, alpha3=2, hff=False)
    blocks = [m for m in model.modules() if isinstance(m, ESPBlock)]
    assert blocks and all(not b.hff for b in blocks)


def test_multiply_adds_match_the_reference_counts():
    """flops.json of the reference: ESPNet p2q8 4,709,441,536 MACs at 512x1024 (incl. transposed convs)."""
    assert count_macs(create_model("espnet", 20, alpha3=8), (512, 1024)) == 4_709_441_536


def test_receptive_fields():
    fields = esp_receptive_fields(create_model("espnet", 20))
    assert [(f.stride, f.field_px, f.field_input_px) for f in fields] == [(4, 33, 132), (8, 33, 264)]
    fields = esp_receptive_fields(create_model("espnet_a", 20, K=3))
    assert {f.field_px for f in fields} == {9}


def test_input_size_checks():
    with pytest.raises(ValueError, match="divisible by 8"):
        create_model("espnet", 8, alpha3=1)(torch.randn(1, 3, 60, 64))
    with pytest.raises(ValueError, match="divisible by 16"):
        create_model("espnetv2", 3, scale=0.5)(torch.randn(1, 3, 40, 64))
